"""Connections to PostgreSQL: the pool of the daemon and single connections for commands."""

from __future__ import annotations

from typing import Any

import asyncpg

from crmd.config import DatabaseSettings, redact_dsn


class DatabaseUnavailable(Exception):
    """The database could not be reached; the message names the (redacted) DSN and the cause."""


def _connect_kwargs(settings: DatabaseSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dsn": settings.dsn, "timeout": settings.connect_timeout_seconds}
    if settings.password is not None:
        kwargs["password"] = settings.password.get_secret_value()
    return kwargs


def _unavailable(settings: DatabaseSettings, exc: BaseException) -> DatabaseUnavailable:
    reason = str(exc) or type(exc).__name__
    return DatabaseUnavailable(f"cannot connect to {redact_dsn(settings.dsn)}: {reason}")


async def connect(settings: DatabaseSettings) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(**_connect_kwargs(settings))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _unavailable(settings, exc) from None


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to undo when a connection goes back to the pool: crmd leaves no session state on
    pooled connections (settings are transaction-local, advisory locks are released explicitly,
    LISTEN has its own connection), and asyncpg still rolls back an open transaction itself.
    Skipping the default reset (UNLISTEN, RESET ALL...) saves a round trip per use."""


async def create_pool(settings: DatabaseSettings) -> asyncpg.Pool:
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            reset=_keep_session,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            **_connect_kwargs(settings),
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _unavailable(settings, exc) from None
    return pool
