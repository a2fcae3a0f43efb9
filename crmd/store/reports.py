"""What the operator surface reads: queue depth, attempt rates, errors, failed items, the
budget already spent. Reads only; each query uses a small partial index."""

from __future__ import annotations

import asyncpg

from crmd.store.sql import queries


async def queue_depth(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """(estado, entidade, n, oldest, oldest_age) for pending, in-flight and failed items."""
    rows: list[asyncpg.Record] = await conn.fetch(queries["queue_depth"])
    return rows


async def log_rates(conn: asyncpg.Connection) -> asyncpg.Record:
    """Attempts and successes over 24 h and 1 h, and the server's clock (`now`)."""
    row: asyncpg.Record = await conn.fetchrow(queries["log_rates"])
    return row


async def last_errors(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(queries["last_errors"], limit)
    return rows


async def failed_items(
    conn: asyncpg.Connection, entidade: str | None, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(queries["failed_items"], entidade, limit)
    return rows


async def pending_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(queries["pending_count"]))


async def requests_sent_since(conn: asyncpg.Connection, conta: str, seconds: float) -> list[float]:
    """When each request of the account in the last `seconds` was sent (epoch seconds)."""
    rows = await conn.fetch(queries["requests_sent_since"], conta, seconds)
    return [r["at"] for r in rows for _ in range(r["requisicoes"])]


async def ping(conn: asyncpg.Connection) -> None:
    await conn.fetchval(queries["ping"])
