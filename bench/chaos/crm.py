"""A CRM that misbehaves: flaky then down, 429 storms (with and without Retry-After), slow."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from bench.chaos.common import (
    Crmd,
    add_lojas,
    add_produtos,
    config_text,
    dev_crm,
    drained,
    until,
    verdict,
)
from bench.chaos.result import Result
from bench.pg import PgServer


async def flaky_then_down(pg: PgServer, crmd: Crmd, quick: bool) -> Result:
    """10 % of answers 503 for a while, then an outage: no item may end failed."""
    flaky, down = (6.0, 15.0) if quick else (30.0, 90.0)
    async with pg.fresh_database("outage") as db, dev_crm(limits=((20, 1.0),), seed=5) as crm:
        conn = await asyncpg.connect(db.dsn)
        try:
            await add_lojas(conn)
            config = crmd.workdir / "outage.toml"
            config.write_text(config_text(db.dsn, crm.url))
            crmd.start(config)
            crm.set_faults(error_rate=0.1)
            count, started = 0, time.monotonic()
            while time.monotonic() - started < flaky:  # changes keep coming meanwhile
                await add_produtos(conn, count + 1, 10)
                count += 10
                await asyncio.sleep(1.0)
            crm.set_faults(error_rate=0.0, outage_seconds=down)
            await add_produtos(conn, count + 1, 40)
            count += 40
            await asyncio.sleep(down)
            took = await until(await drained(conn), 120, "the queue to drain after the outage")
            await crmd.stop()
            v = await verdict(conn, crm, entities=("produtos",))
            spent = await conn.fetchval("SELECT max(tentativas) FROM crm_sync_queue")
        finally:
            await conn.close()
    refused = sum(1 for e in crm.ledger if e.status is not None and e.status >= 500)
    line = (
        f"{flaky:g} s of 10 % 503 then {down:g} s down: {refused} refused answers, drained"
        f" {took:.1f} s after, at most {spent} attempts spent; {v.line()}"
    )
    return Result("flaky CRM, then outage", line, v.holds and v.failed == 0, v)


async def storms_429(pg: PgServer, crmd: Crmd, quick: bool) -> Result:
    rounds = 3 if quick else 8
    lines, holds, verdicts = [], True, []
    for retry_after in (None, 1.0):
        async with pg.fresh_database("storm") as db, dev_crm(retry_after=retry_after) as crm:
            conn = await asyncpg.connect(db.dsn)
            try:
                await add_lojas(conn)
                config = crmd.workdir / "storm.toml"
                config.write_text(config_text(db.dsn, crm.url))
                crmd.start(config)
                for n in range(rounds):
                    await add_produtos(conn, n * 30 + 1, 30)
                    await asyncio.sleep(0.5)
                    crm.set_faults(burst_429=6)
                    await asyncio.sleep(1.0)
                await until(await drained(conn), 120, "the queue to drain after the storms")
                await crmd.stop()
                v = await verdict(conn, crm, entities=("produtos",))
            finally:
                await conn.close()
        pauses = len([e for e in crmd.logs() if e.get("event") == "account_paused"])
        storm = sum(1 for e in crm.ledger if e.fault == "burst")
        label = "no Retry-After" if retry_after is None else f"Retry-After {retry_after:g} s"
        lines.append(f"{label}: {storm} x 429 injected, {pauses} pauses")
        holds = holds and v.holds and v.failed == 0
        verdicts.append(v)
    line = f"{rounds} storms each; " + "; ".join(lines) + f"; {verdicts[-1].line()}"
    return Result("429 storms", line, holds, verdicts)


async def slow(pg: PgServer, crmd: Crmd, quick: bool) -> Result:
    """Answers take 0.5 s against a 3 s lease: leases are kept, nothing is claimed twice."""
    async with pg.fresh_database("slow") as db, dev_crm(latency=0.5) as crm:
        conn = await asyncpg.connect(db.dsn)
        try:
            await add_lojas(conn)
            count = 40 if quick else 150
            await add_produtos(conn, 1, count)
            config = crmd.workdir / "slow.toml"
            config.write_text(config_text(db.dsn, crm.url, queue={"lease_seconds": 3.0}))
            crmd.start(config)
            took = await until(await drained(conn), 300, "the queue to drain")
            await crmd.stop()
            v = await verdict(conn, crm, entities=("produtos",))
            twice = await conn.fetchval("SELECT count(*) FROM crm_sync_queue WHERE tentativas > 1")
        finally:
            await conn.close()
    lost = len([e for e in crmd.logs() if e.get("event") == "lease_lost"])
    line = (
        f"{count} items at 0.5 s an answer in {took:.1f} s; {lost} leases lost,"
        f" {twice} taken twice; {v.line()}"
    )
    return Result("slow CRM", line, v.holds and lost == 0 and twice == 0, v)
