"""`crm_sync_timer` and the timers' advisory locks: each scheduled run happens once across
every instance and restart."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from crmd.store.db import DB_ERRORS, LOCK_CLASS
from crmd.store.sql import queries

# pg_try_advisory_lock(LOCK_CLASS, LOCK_TIMER_BASE + n): one lock per timer.
LOCK_TIMER_BASE = 100


async def runs(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """(nome, ultima_execucao, executado_em, duracao_ms, resultado) of every timer seen."""
    rows: list[asyncpg.Record] = await conn.fetch(queries["timer_runs"])
    return rows


async def try_lock(conn: asyncpg.Connection, index: int) -> bool:
    return bool(
        await conn.fetchval(queries["try_advisory_lock"], LOCK_CLASS, LOCK_TIMER_BASE + index)
    )


async def unlock(conn: asyncpg.Connection, index: int) -> None:
    """Release the timer's lock; if that fails, end the session (which releases it)."""
    try:
        await conn.execute(queries["advisory_unlock"], LOCK_CLASS, LOCK_TIMER_BASE + index)
    except DB_ERRORS:
        conn.terminate()  # the pool makes a new connection


async def last_run(conn: asyncpg.Connection, name: str, now: datetime) -> datetime:
    """The scheduled time of the timer's last run; a timer seen for the first time counts from
    `now` (nothing before it was missed)."""
    last: datetime | None = await conn.fetchval(queries["timer_last"], name)
    if last is None:
        await conn.execute(queries["timer_start"], name, now)
        return now
    return last


async def record_run(
    conn: asyncpg.Connection, name: str, scheduled: datetime, duration_ms: int, result: str
) -> None:
    await conn.execute(queries["timer_done"], name, scheduled, duration_ms, result)
