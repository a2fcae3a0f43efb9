"""`python -m bench profile`: where crmd spends its time while draining the queue (not timed).

Not one of the five scenarios and not run by default: it runs `crmd run` under pyinstrument
(against the CRM answering in 20 ms, as in the throughput scenario's goal) and writes the text
report to bench/results/profile-crmd.txt. Profiling slows the process; its figures are not
comparable with the throughput scenario's.
"""

from __future__ import annotations

import sys

import asyncpg

from bench import fixtures, proc
from bench.report import RESULTS
from bench.scenario import Context, Outcome
from bench.throughput import CONCURRENCY, _until_drained

REPORT = RESULTS.parent / "profile-crmd.txt"


async def run(ctx: Context) -> Outcome:
    items = 3_000 if ctx.quick else 10_000
    async with ctx.pg.fresh_database("profile") as db, fixtures.dev_crm(latency=0.02) as crm:
        conn = await asyncpg.connect(db.dsn)
        try:
            await fixtures.seed_known(conn, items=items)
            await fixtures.populate(crm, conn)
            config = fixtures.crmd_config(
                ctx.tmp / "profile.toml", db.dsn, crm.url, concurrency=CONCURRENCY
            )
            argv = [
                sys.executable,
                *("-m", "pyinstrument", "-r", "text", "--no-color", "-o", str(REPORT)),
                *fixtures.crmd_argv(config)[1:],
            ]
            async with proc.running(argv, ctx.tmp / "profile-crmd.log") as child:
                await _until_drained(conn, child)
                await proc.terminate(child)
        finally:
            await conn.close()
    out = Outcome("profile", "Profile of crmd draining the queue (pyinstrument, CRM at 20 ms)")
    out.notes.append(f"{len(crm.ledger)} requests; report written to {REPORT}")
    out.figures = {"report": str(REPORT), "items": items}
    return out
