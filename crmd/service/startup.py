"""Getting ready to sync: the pool (waiting for the database if asked to), the schema check, the
accounts with their spent budget.

One path for `crmd run --once` and the daemon, so both start (and refuse to start) the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import asyncpg
import structlog

from crmd import ptbr
from crmd.aio import Backoff, wait_any
from crmd.config import DatabaseSettings, Settings
from crmd.crm.accounts import Account, build_accounts, close_accounts
from crmd.engine.loop import Engine
from crmd.engine.work import Stats
from crmd.store import db, migrate, reports
from crmd.store.budget import PgBudget

log = structlog.get_logger("crmd.startup")


async def open_pool(
    settings: DatabaseSettings,
    *,
    stop: asyncio.Event | None = None,
    waiting: Callable[[str], None] = lambda _: None,
) -> asyncpg.Pool | None:
    """A pool on a database with the current schema (else SchemaOutdated).

    Without `stop`, one try (DatabaseUnavailable if it fails); with it, tries again with growing
    pauses, telling `waiting` why, until the database answers or `stop` is set (then None).
    """
    backoff = Backoff()
    while True:
        try:
            pool = await db.create_pool(settings)
            break
        except db.DatabaseUnavailable as exc:
            if stop is None:
                raise
            pause = backoff.next()
            log.error("database_unreachable", error=str(exc), retry_in=pause)
            waiting(str(exc))
            await wait_any(stop, within=pause)
            if stop.is_set():
                return None
    try:
        async with pool.acquire() as conn:
            await migrate.check_current(conn)
    except BaseException:
        await pool.close()
        raise
    return pool


async def shared_accounts(settings: Settings, budget: PgBudget) -> dict[str, Account]:
    """The accounts, their windows those of the budget every instance shares (configured in the
    database from `settings`); ValueError naming an unusable account."""
    accounts = build_accounts(settings, budget)
    await configure_budget(budget, accounts)
    return accounts


async def configure_budget(budget: PgBudget, accounts: Mapping[str, Account]) -> None:
    """Make the accounts' windows in the database what their settings say."""
    for account in accounts.values():
        acct = account.settings
        await budget.configure(
            account.name, acct.limits, acct.limit_margin_seconds, acct.bulk_share
        )


async def preload_budgets(pool: asyncpg.Pool, accounts: Mapping[str, Account]) -> None:
    """Seed each limiter with the requests the log says were sent within its longest window, so
    a restart cannot spend the daily budget twice."""
    async with pool.acquire() as conn:
        for account in accounts.values():
            sent = await reports.requests_sent_since(conn, account.name, account.longest_window)
            account.limiter.preload(sent)


@asynccontextmanager
async def engine_for(settings: Settings) -> AsyncIterator[Engine]:
    """An engine on a fresh pool and accounts, closed on exit (for `crmd run --once`)."""
    build_accounts(settings)  # an unusable account is refused before anything connects
    pool = await open_pool(settings.database)
    assert pool is not None
    budget = PgBudget(lambda: pool)
    accounts: dict[str, Account] = {}
    try:
        accounts = await shared_accounts(settings, budget)
        await preload_budgets(pool, accounts)
        yield Engine(settings, pool, accounts)
    finally:
        await close_accounts(accounts)
        await budget.close()
        await pool.close()


async def run_once(settings: Settings) -> Stats:
    async with engine_for(settings) as engine:
        return await engine.run_once()


def summary(stats: Stats, elapsed: float) -> str:
    """The old cron's line: processados n/m, erros, tempo."""
    attempted = stats.succeeded + stats.failed + stats.retried
    n = ptbr.number
    ignored = f", ignorados {n(stats.ignored)}" if stats.ignored else ""
    return (
        f"processados {n(stats.succeeded)}/{n(attempted)}, "
        f"erros {n(stats.failed + stats.retried)} ({n(stats.failed)} definitivos){ignored}, "
        f"adiados {n(stats.released)}, requisições {n(stats.requests)}, "
        f"tempo {n(elapsed, 1)} s"
    )
