"""`crm_sync_map`: which CRM record each ERP record is, per CRM account, and what was sent last.

A row without an external id marks a create whose outcome is unknown (written just before the
POST), so the next attempt looks the record up before creating it again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from crmd.store.sql import queries


@dataclass(frozen=True, slots=True)
class Mapped:
    """What crm_sync_map knows of a record: no external id means a create in doubt."""

    external_id: str | None
    payload_hash: str | None
    natural_key: str | None  # of a create in doubt, to look it up


MapKey = tuple[str, str, int]  # (conta, entidade, entidade_id)


async def for_keys(conn: asyncpg.Connection, keys: Sequence[MapKey]) -> dict[MapKey, Mapped]:
    """What the map knows of each record, in one statement whatever the accounts."""
    rows = await conn.fetch(
        queries["map_for_keys"], [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]
    )
    return {
        (r["conta"], r["entidade"], r["entidade_id"]): Mapped(
            r["external_id"], r["payload_hash"], r["chave"]
        )
        for r in rows
    }


async def for_batch(
    conn: asyncpg.Connection, conta: str, entidade: str, ids: Sequence[int]
) -> dict[int, Mapped]:
    found = await for_keys(conn, [(conta, entidade, ident) for ident in ids])
    return {key[2]: mapped for key, mapped in found.items()}


async def resolve(
    conn: asyncpg.Connection, conta: str, needs: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], str]:
    """The CRM ids of the records (entidade, id) that have one."""
    rows = await conn.fetch(
        queries["map_resolve"], conta, [n[0] for n in needs], [n[1] for n in needs]
    )
    return {(r["entidade"], r["entidade_id"]): r["external_id"] for r in rows}


Creating = tuple[str, str, int, str | None]
"""A record about to be created: (conta, entidade, entidade_id, natural key)."""


async def mark_creating(conn: asyncpg.Connection, records: Sequence[Creating]) -> None:
    """Commit the intent to create before the POSTs (see the module's docstring), for several
    records in one statement; each record at most once."""
    await conn.execute(
        queries["map_creating"],
        [r[0] for r in records],
        [r[1] for r in records],
        [r[2] for r in records],
        [r[3] for r in records],
    )


async def not_created(
    conn: asyncpg.Connection, conta: str, entidade: str, entidade_id: int
) -> None:
    """The create marked before the POST certainly did not happen: forget the marker."""
    await conn.execute(queries["map_not_created"], conta, entidade, entidade_id)


async def owner(
    conn: asyncpg.Connection, conta: str, entidade: str, external_id: str
) -> int | None:
    """The ERP record this CRM record is linked to already, if any."""
    found = await conn.fetchval(queries["map_owner"], conta, entidade, external_id)
    return None if found is None else int(found)


async def uncertain(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Creates in doubt that no queue item will resolve: (conta, entidade, entidade_id, chave,
    sincronizado_em), newest first."""
    rows: list[asyncpg.Record] = await conn.fetch(queries["map_uncertain"], limit)
    return rows


@dataclass(frozen=True, slots=True)
class ImportVerdict:
    """How many rows of a map import got one verdict ('novo', 'igual', 'divergente'...), some
    of them as examples, and how many links the import wrote."""

    verdict: str
    count: int
    examples: list[dict[str, str | None]]
    written: int


async def import_links(
    conn: asyncpg.Connection,
    listing: str,
    entidade: str,
    own_accounts: Mapping[int, str],
    *,
    loja_required: bool,
    dry_run: bool,
    examples: int,
) -> list[ImportVerdict]:
    """Link ERP records to the CRM ids the query `listing` returns (columns id, external_id and
    optionally loja_id; see map_import_apply), in one transaction; rolled back on a dry run.
    `own_accounts`: the lojas with CRM accounts of their own, and those accounts' names."""
    stage = queries["map_import_stage"].replace("/*listing*/", listing, 1)
    tr = conn.transaction()
    await tr.start()
    try:
        await conn.execute(stage)
        rows = await conn.fetch(
            queries["map_import_apply"],
            entidade,
            list(own_accounts),
            list(own_accounts.values()),
            loja_required,
            dry_run,
            examples,
        )
    except BaseException:
        await tr.rollback()
        raise
    if dry_run:
        await tr.rollback()
    else:
        await tr.commit()
    return [
        ImportVerdict(
            r["verdict"],
            int(r["n"]),
            [json.loads(e) for e in r["examples"] or []],
            int(r["written"]),
        )
        for r in rows
    ]
