"""`crm_sync_map`: which CRM record each ERP record is, per CRM account, and what was sent last.

A row without an external id marks a create whose outcome is unknown (written just before the
POST), so the next attempt looks the record up before creating it again.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from crmd.store.sql import queries

Mapped = tuple[str | None, str | None]  # (external_id, payload_hash); (None, None): unsure create


async def for_batch(
    conn: asyncpg.Connection, conta: str, entidade: str, ids: Sequence[int]
) -> dict[int, Mapped]:
    rows = await conn.fetch(queries["map_for_batch"], conta, entidade, list(ids))
    return {r["entidade_id"]: (r["external_id"], r["payload_hash"]) for r in rows}


async def resolve(
    conn: asyncpg.Connection, conta: str, needs: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], str]:
    """The CRM ids of the records (entidade, id) that have one."""
    rows = await conn.fetch(
        queries["map_resolve"], conta, [n[0] for n in needs], [n[1] for n in needs]
    )
    return {(r["entidade"], r["entidade_id"]): r["external_id"] for r in rows}


async def mark_creating(
    conn: asyncpg.Connection, conta: str, entidade: str, entidade_id: int
) -> None:
    """Commit the intent to create before the POST (see the module's docstring)."""
    await conn.execute(queries["map_creating"], conta, entidade, entidade_id)
