"""`crm_instance`: the crmd processes running on this database, with their last heartbeat."""

from __future__ import annotations

import uuid

import asyncpg

from crmd.store.sql import queries


async def register(
    conn: asyncpg.Connection, ident: uuid.UUID, host: str, pid: int, version: str
) -> None:
    await conn.execute(queries["instance_register"], ident, host, pid, version)


async def heartbeat(conn: asyncpg.Connection, ident: uuid.UUID) -> bool:
    """Whether the instance is still registered (a row forgotten meanwhile: register again)."""
    return str(await conn.execute(queries["instance_heartbeat"], ident)).endswith(" 1")


async def unregister(conn: asyncpg.Connection, ident: uuid.UUID) -> None:
    await conn.execute(queries["instance_unregister"], ident)


async def listed(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """(id, host, pid, versao, iniciado_em, visto_em, silent_seconds), oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(queries["instances"])
    return rows
