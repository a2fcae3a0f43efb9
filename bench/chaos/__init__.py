"""The chaos suite (`make chaos`, `python -m bench chaos`): crmd under the faults production
brings, each scenario ending in the invariants of `common.py`, and every output of every crmd
process grepped for secrets at the end. Loopback only; the PostgreSQL restart happens on a server
of its own. About 10 minutes; `--quick` (QUICK=1) about 3. `CHAOS_ONLY=kill,storms` runs some.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable

from bench.chaos import configs, crm, database, kills, load, poison
from bench.chaos.common import Crmd
from bench.chaos.result import Result
from bench.pg import PgServer
from bench.scenario import Context, Outcome

Scenario = Callable[[PgServer, Crmd, bool], Awaitable[Result]]
SCENARIOS: list[tuple[str, Scenario]] = [
    ("kill", kills.kill_9),
    ("kill_create", kills.kill_in_creates),
    ("outage", crm.flaky_then_down),
    ("storms", crm.storms_429),
    ("slow", crm.slow),
    ("configs", configs.broken_configs),
    ("poison", poison.poisoned_rows),
    ("load", load.fifty_thousand),
]


async def run(ctx: Context) -> Outcome:
    outcome = Outcome("chaos", "Chaos: faults, then the invariants")
    outcome.rows.append(("scenario", "held", "seconds", "figures"))
    crmd = Crmd(ctx.tmp)
    results: list[Result] = []

    async def one(name: str, scenario: Callable[[], Awaitable[Result]]) -> None:
        print(f"   {name} ...", file=sys.stderr, flush=True)
        start = time.monotonic()
        try:
            result = await scenario()
        except Exception as exc:
            result = Result(name, f"broke: {type(exc).__name__}: {exc}", False)
        finally:
            crmd.kill()
        result.seconds = time.monotonic() - start
        results.append(result)
        print(f"   {result.name}: {result.line}", file=sys.stderr, flush=True)

    only = set(filter(None, os.environ.get("CHAOS_ONLY", "").split(",")))
    for name, scenario in SCENARIOS:
        if not only or name in only:
            await one(name, lambda s=scenario: s(ctx.pg, crmd, ctx.quick))  # type: ignore[misc]
    if not only or "postgres" in only:
        await one("postgres", lambda: database.postgres_restart(crmd, ctx.quick))
    leaked = crmd.leaked()
    results.append(
        Result(
            "secrets",
            f"{len(crmd.outputs)} outputs grepped, {len(leaked)} secrets found {leaked[:3]}",
            not leaked,
        )
    )
    for r in results:
        outcome.rows.append((r.name, "yes" if r.holds else "NO", f"{r.seconds:.0f}", r.line))
        outcome.goal(f"{r.name}: every invariant holds", r.holds, r.line[:160])
    outcome.figures = {r.name: {"holds": r.holds, "line": r.line} for r in results}
    return outcome
