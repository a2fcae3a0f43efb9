"""Use cases shared by the CLI, the admin API and the daemon's timers: enqueue in bulk, the
status report, failed items and retry, cleanup, the timers' schedule.

A button on the dashboard and a command in a terminal do exactly the same thing through these.
No SQL here (the store runs it). Bad input raises `InvalidRequest` (`checks.py`), whose message
names the input; callers turn it into exit 64 or HTTP 400.
"""
