"""kill -9 at random moments, and inside creates: every record reaches the CRM exactly once."""

from __future__ import annotations

import asyncio
import random

import asyncpg

from bench.chaos.common import Crmd, add_lojas, config_text, dev_crm, drained, until, verdict
from bench.chaos.result import Result
from bench.pg import PgServer
from crmd.dev import seed


async def kill_9(pg: PgServer, crmd: Crmd, quick: bool) -> Result:
    kills = 10 if quick else 30
    rng = random.Random(9)
    async with pg.fresh_database("kill9") as db, dev_crm(latency=0.05) as crm:
        conn = await asyncpg.connect(db.dsn)
        try:
            await seed.seed(
                conn,
                lojas=2,
                clientes=40 if quick else 120,
                produtos=20 if quick else 60,
                vendas=20 if quick else 60,
                seed=3,
            )
            config = crmd.workdir / "kill9.toml"
            config.write_text(config_text(db.dsn, crm.url, queue={"lease_seconds": 2.0}))
            crmd.start(config)
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(0.2, 1.2))
                crmd.kill()
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                crmd.start(config)
            took = await until(await drained(conn), 180, "the queue to drain after the kills")
            await crmd.stop()
            v = await verdict(conn, crm)
        finally:
            await conn.close()
    line = f"{kills} kills; drained {took:.1f} s after the last; {v.line()}"
    return Result("kill -9", line, v.holds, v)


async def kill_in_creates(pg: PgServer, crmd: Crmd, quick: bool) -> Result:
    """Kills timed to land while POSTs are on the wire (the CRM takes 0.3 s to answer), with
    clientes that have no CPF/CNPJ to be looked up by: none may be created twice; a create in
    doubt is listed for a person instead."""
    kills = 6 if quick else 15
    async with pg.fresh_database("killcreate") as db, dev_crm(latency=0.3) as crm:
        conn = await asyncpg.connect(db.dsn)
        try:
            await add_lojas(conn)
            count = 30 if quick else 80
            await conn.executemany(
                "INSERT INTO clientes (id, loja_id, tipo_pessoa, nome) VALUES ($1, 1, 'PF', $2)",
                [(n, f"Sem documento {n}") for n in range(1, count + 1)],
            )
            config = crmd.workdir / "killcreate.toml"
            config.write_text(
                config_text(
                    db.dsn, crm.url, queue={"lease_seconds": 2.0}, sync={"lookup_unknown": False}
                )
            )
            crmd.start(config)
            for _ in range(kills):
                posts = sum(1 for e in crm.ledger if e.method == "POST")
                while sum(1 for e in crm.ledger if e.method == "POST") == posts:
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.1)  # the next POSTs are out, their answers not yet back
                crmd.kill()
                crmd.start(config)
            await until(await drained(conn), 180, "the queue to drain")
            await crmd.stop()
            uncertain = {
                ("clientes", r["entidade_id"])
                for r in await conn.fetch(
                    "SELECT entidade_id FROM crm_sync_map WHERE external_id IS NULL"
                )
            }
            v = await verdict(
                conn,
                crm,
                expected_failures=sorted(uncertain),
                entities=("clientes",),
                allowed_orphans=len(uncertain),
            )
        finally:
            await conn.close()
    line = f"{kills} kills inside creates; {len(uncertain)} listed as criação incerta; {v.line()}"
    return Result("kill inside creates", line, v.holds, v)
