"""`python -m bench [rate|throughput|latency|depth|memory ...] [--quick]`.

Starts (or connects to) PostgreSQL once, runs the scenarios asked for (all by default) in order,
prints a table per scenario and the goals met or missed, and writes bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import uvloop

from bench import pg, report
from bench.scenario import Context, Outcome

# In the order they run; each is the module bench.<name> with `async def run(ctx) -> Outcome`.
SCENARIOS = ("rate", "throughput", "latency", "depth", "memory", "scale")
EXTRAS = ("profile", "chaos")  # run only when asked for by name


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"{', '.join(SCENARIOS)} (default: all six), profile, or chaos (the chaos suite)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs")
    parser.add_argument("--out", type=Path, default=report.RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS + EXTRAS]
    if unknown:
        choices = ", ".join(SCENARIOS + EXTRAS)
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {choices}")
    return args


async def run_all(ctx: Context, names: list[str]) -> list[Outcome]:
    outcomes = []
    for name in names:
        print(f"-- {name} ...", file=sys.stderr, flush=True)
        # Each scenario starts where the first did: no dirty pages or garbage of the others.
        await ctx.pg.settle()
        gc.collect()
        start, ticks = time.monotonic(), report.cpu_ticks()
        outcome = await importlib.import_module(f"bench.{name}").run(ctx)
        outcome.seconds = time.monotonic() - start
        steal = report.steal_share(ticks, report.cpu_ticks())
        outcome.figures["cpu_steal"] = round(steal, 4)
        outcome.notes.append(f"CPU stolen by the hypervisor during the scenario: {steal:.1%}")
        print(report.render(outcome), flush=True)
        outcomes.append(outcome)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    names = [s for s in SCENARIOS + EXTRAS if s in args.scenarios] or list(SCENARIOS)
    started = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="crmd-bench-"))
    try:
        with pg.server() as server:
            info = {"machine": report.machine(server)}
            ctx = Context(server, tmp, args.quick)
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                outcomes = runner.run(run_all(ctx, names))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info["run"] = {
        "started_at": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "scenarios": names,
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
    }
    report.write(args.out, info, outcomes)
    print(report.summary(outcomes))
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
