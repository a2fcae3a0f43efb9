"""The ERP side: reading records by id for the engine, and listing them for a bulk enqueue.

Every query has a default for the reference schema (`sql/erp.sql`) that a real installation
replaces in `[sources]`, so crmd reads the installation's own tables without a code change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from crmd.config import SourcesSettings
from crmd.store.sql import queries

Row = Mapping[str, Any]


async def load(
    conn: asyncpg.Connection, entidade: str, ids: Sequence[int], sources: SourcesSettings
) -> dict[int, Row]:
    """The current rows of these records, by id; a record missing here is gone from the ERP."""
    sql = sources.load_query(entidade) or queries[f"load_{entidade}"]
    return {int(r["id"]): _decode(dict(r)) for r in await conn.fetch(sql, list(ids))}


def listing(entidade: str, sources: SourcesSettings) -> str:
    """The query naming every record of `entidade` to enqueue, as (loja_id, id, data)."""
    return sources.enqueue_query(entidade) or queries[f"list_{entidade}"]


async def lojas(
    conn: asyncpg.Connection, sources: SourcesSettings, only: Sequence[int] | None = None
) -> list[int]:
    """Every loja's id, or those of `only` that exist, in id order."""
    listed = sources.lojas_query() or queries["list_lojas"]
    if only is None:
        rows = await conn.fetch(queries["lojas_all"].replace("/*listing*/", listed, 1))
    else:
        sql = queries["lojas_existing"].replace("/*listing*/", listed, 1)
        rows = await conn.fetch(sql, list(only))
    return [r["id"] for r in rows]


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    """JSON columns come back as text from asyncpg; a source query's `itens` is one."""
    if isinstance(row.get("itens"), str):
        row["itens"] = json.loads(row["itens"])
    return row
