"""Setting the engine up against real resources: the pool, the schema check, the accounts.

Shared by `crmd run --once` and the daemon, so both start (and refuse to start) the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from crmd.config import Settings
from crmd.crm.accounts import build_accounts, close_accounts, preload_budgets
from crmd.engine.loop import Engine, Stats
from crmd.store import db, migrate


class SchemaOutdated(Exception):
    """The database lacks migrations this version of crmd needs."""


@asynccontextmanager
async def engine_for(settings: Settings) -> AsyncIterator[Engine]:
    pool = await db.create_pool(settings.database)
    accounts = build_accounts(settings)
    try:
        async with pool.acquire() as conn:
            missing = await migrate.pending(conn)
            if missing:
                names = ", ".join(f"{m.conjunto}/{m.version:04d}_{m.name}" for m in missing)
                raise SchemaOutdated(
                    f"database schema is not up to date ({names}): run crmd migrate"
                )
            await preload_budgets(conn, accounts)
        yield Engine(settings, pool, accounts)
    finally:
        await close_accounts(accounts)
        await pool.close()


async def run_once(settings: Settings) -> Stats:
    async with engine_for(settings) as engine:
        return await engine.run_once()


def summary(stats: Stats, elapsed: float) -> str:
    """The old cron's line: processados n/m, erros, tempo."""
    attempted = stats.succeeded + stats.failed + stats.retried
    return (
        f"processados {stats.succeeded}/{attempted}, erros {stats.failed + stats.retried} "
        f"({stats.failed} definitivos), adiados {stats.released}, "
        f"requisições {stats.requests}, tempo {elapsed:.1f}s"
    )
