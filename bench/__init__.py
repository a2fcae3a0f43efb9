"""crmd's benchmarks (`make bench`, `python -m bench [scenario ...] [--quick]`).

Not tests: each scenario measures one claim of issue 6 against a real PostgreSQL and the
development CRM, compares it with a baseline run on the same machine in the same run, and returns
its figures and whether its goal was met. See docs/BENCHMARKS.md.
"""
