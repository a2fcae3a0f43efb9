"""The ERP side: reading records by id for the engine, and listing them for a bulk enqueue.

Every query has a default for the reference schema (`sql/erp.sql`) that a real installation
replaces in `[sources]`, so crmd reads the installation's own tables without a code change.
A row that cannot be read (a value asyncpg cannot decode, such as a date in the year 12000) is
reported for its record alone, naming the column, so one bad row never stops a batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from crmd.config import SourcesSettings
from crmd.store.db import DB_ERRORS
from crmd.store.sql import queries

Row = Mapping[str, Any]


class RowError(Exception):
    """A record whose row cannot be read; the message names the column and the reason."""


async def load(
    conn: asyncpg.Connection, entidade: str, ids: Sequence[int], sources: SourcesSettings
) -> dict[int, Row | RowError]:
    """The current rows of these records, by id; a record missing here is gone from the ERP."""
    sql = sources.load_query(entidade) or queries[f"load_{entidade}"]
    try:
        return _by_id(await conn.fetch(sql, list(ids)))
    except DB_ERRORS:
        raise
    except Exception:  # a value that cannot be decoded: find its rows, one by one
        found: dict[int, Row | RowError] = {}
        for ident in ids:
            try:
                found.update(_by_id(await conn.fetch(sql, [ident])))
            except DB_ERRORS:
                raise
            except RowError as err:
                found[ident] = err
            except Exception as exc:
                found[ident] = RowError(await _which_column(conn, sql, ident, exc))
        return found


def _by_id(rows: list[asyncpg.Record]) -> dict[int, Row | RowError]:
    return {int(r["id"]): _decode(dict(r)) for r in rows}


async def _which_column(conn: asyncpg.Connection, sql: str, ident: int, exc: Exception) -> str:
    """The message for a row that cannot be decoded: which column, and why."""
    reason = str(exc) or type(exc).__name__
    inner = sql.strip().rstrip(";")
    for attribute in (await conn.prepare(sql)).get_attributes():
        column = attribute.name.replace('"', '""')
        try:
            await conn.fetch(f'SELECT s."{column}" FROM ({inner}) AS s', [ident])
        except DB_ERRORS:
            raise
        except Exception:
            return f"coluna {attribute.name} ({attribute.type.name}) ilegível: {reason}"
    return f"linha ilegível: {reason}"


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
        try:
            row["itens"] = json.loads(row["itens"])
        except ValueError as exc:
            raise RowError(f"coluna itens: JSON inválido: {exc}") from None
    return row


async def columns(conn: asyncpg.Connection, query: str) -> list[str]:
    """The columns a query returns, read from the server's description of it (it is prepared,
    not run): what a source query offers before any row is read."""
    return [a.name for a in (await conn.prepare(query)).get_attributes()]


async def probe_load(
    conn: asyncpg.Connection, entidade: str, sources: SourcesSettings
) -> list[str]:
    """Run the query that loads `entidade` (for no id at all) and return its columns: whether
    it works against this database, before the engine needs it."""
    statement = await conn.prepare(sources.load_query(entidade) or queries[f"load_{entidade}"])
    await statement.fetch([])
    return [a.name for a in statement.get_attributes()]


async def probe_listing(conn: asyncpg.Connection, listing: str) -> list[str]:
    """Run a listing query (reading no row) and return its columns."""
    statement = await conn.prepare(queries["listing_probe"].replace("/*listing*/", listing, 1))
    await statement.fetch()
    return [a.name for a in statement.get_attributes()]


def lojas_listing(sources: SourcesSettings) -> str:
    """The query listing every loja's id."""
    return sources.lojas_query() or queries["list_lojas"]


async def listed(
    conn: asyncpg.Connection,
    listing: str,
    *,
    after: int,
    limit: int,
    lojas: Sequence[int] | None,
    days: int | None,
) -> list[asyncpg.Record]:
    """A chunk of the records a listing query names (loja_id, id), in id order after `after`."""
    sql = queries["plan_listed"].replace("/*listing*/", listing, 1)
    rows: list[asyncpg.Record] = await conn.fetch(
        sql, after, limit, None if lojas is None else list(lojas), days
    )
    return rows
