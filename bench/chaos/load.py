"""50,000 items under load, the RSS of crmd sampled throughout."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from bench.chaos.common import Crmd, add_lojas, config_text, dev_crm, open_items, verdict
from bench.chaos.result import Result
from bench.pg import PgServer

MB = 1024 * 1024


async def fifty_thousand(pg: PgServer, crmd: Crmd, quick: bool) -> Result:
    count = 10_000 if quick else 50_000
    limits = ((2000, 1.0),)
    async with pg.fresh_database("load") as db, dev_crm(limits=limits) as crm:
        conn = await asyncpg.connect(db.dsn)
        try:
            await add_lojas(conn)
            await conn.execute(
                """INSERT INTO produtos (id, loja_id, codigo_interno, nome, valor_custo)
                   SELECT g, 1, 'L-' || g, 'Produto ' || g, 1
                     FROM generate_series(1, $1::integer) g""",
                count,
            )
            config = crmd.workdir / "load.toml"
            config.write_text(
                config_text(
                    db.dsn,
                    crm.url,
                    crm={"concurrency": 16, "limits": [{"requests": 2000, "per_seconds": 1.0}]},
                    queue={"batch_size": 200, "lease_seconds": 30.0},
                    sync={"lookup_unknown": False},
                    log={"level": "warning"},
                )
            )
            started = time.monotonic()
            crmd.start(config)
            while await open_items(conn):
                crmd.sample_rss()
                assert time.monotonic() - started < 600, "50k items did not drain in 10 min"
                await asyncio.sleep(0.5)
            took = time.monotonic() - started
            crmd.sample_rss()
            await crmd.stop()
            v = await verdict(conn, crm, limits=limits, entities=("produtos",))
        finally:
            await conn.close()
    rss = crmd.peak_rss / MB
    line = (
        f"{count:,} items in {took:.0f} s ({count / took:.0f}/s), peak RSS {rss:.0f} MB; {v.line()}"
    )
    return Result("load", line, v.holds and crmd.peak_rss < 200 * MB, {"rss": crmd.peak_rss})
