"""Connections to PostgreSQL: the daemon's pool, single connections for commands, and the
errors that mean "the database failed us" (as opposed to a bug)."""

from __future__ import annotations

from typing import Any

import asyncpg

from crmd import dsn
from crmd.config import DatabaseSettings


class DatabaseUnavailable(Exception):
    """The database could not be reached; the message names the (redacted) DSN and the cause."""


# What a statement can raise when the database (or the connection to it) fails. Callers that
# ride out an outage catch exactly this; anything else is a bug and is logged as one.
DB_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseUnavailable,
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
# SQLSTATE classes of a statement refused for what it says or reads (bad SQL, bad data), as
# opposed to a database or connection that failed: retrying the same statement cannot help.
_QUERY_CLASSES = frozenset({"21", "22", "23", "42", "0A", "P0"})


def refused(exc: BaseException) -> bool:
    """Whether `exc` means the statement itself was refused (not the database being away)."""
    state = getattr(exc, "sqlstate", None)
    return isinstance(exc, asyncpg.PostgresError) and str(state)[:2] in _QUERY_CLASSES


# pg_advisory_lock(LOCK_CLASS, n): 'crmd' in ASCII, then the lock's purpose (migrate.py, timers.py).
LOCK_CLASS = 0x63726D64


def _connect_kwargs(settings: DatabaseSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dsn": settings.dsn, "timeout": settings.connect_timeout_seconds}
    if settings.password is not None:
        kwargs["password"] = settings.password.get_secret_value()
    return kwargs


def _unavailable(settings: DatabaseSettings, exc: BaseException) -> DatabaseUnavailable:
    reason = str(exc) or type(exc).__name__
    return DatabaseUnavailable(f"não foi possível conectar a {dsn.redact(settings.dsn)}: {reason}")


async def connect(settings: DatabaseSettings) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(**_connect_kwargs(settings))
    except DB_ERRORS as exc:
        raise _unavailable(settings, exc) from None


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to undo when a connection goes back to the pool: crmd leaves no session state on
    pooled connections (settings are transaction-local, advisory locks are released explicitly,
    LISTEN has its own connection), and asyncpg still rolls back an open transaction itself.
    Skipping the default reset (UNLISTEN, RESET ALL...) saves a round trip per use."""


async def create_pool(settings: DatabaseSettings, *, min_size: int | None = None) -> asyncpg.Pool:
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            reset=_keep_session,
            min_size=settings.pool_min_size if min_size is None else min_size,
            max_size=settings.pool_max_size,
            **_connect_kwargs(settings),
        )
    except DB_ERRORS as exc:
        raise _unavailable(settings, exc) from None
    return pool
