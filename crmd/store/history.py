"""What the operator surface reads of one record and of the last day: a record's attempts and
their HTTP exchanges, its open items and CRM ids; the chart's series; the pace behind the
estimate of when the queue is empty. Reads, and the minute's depth sample."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from crmd.store.sql import queries


async def attempts(
    conn: asyncpg.Connection, entidade: str, entidade_id: int, loja_id: int | None, limit: int
) -> list[dict[str, Any]]:
    """The record's log rows, newest first, `trocas` decoded."""
    rows = await conn.fetch(queries["record_attempts"], entidade, entidade_id, loja_id, limit)
    result = []
    for r in rows:
        row = dict(r)
        row["trocas"] = json.loads(row["trocas"]) if row["trocas"] else []
        result.append(row)
    return result


async def open_items(
    conn: asyncpg.Connection, entidade: str, entidade_id: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        queries["record_open_items"], entidade, entidade_id
    )
    return rows


async def links(
    conn: asyncpg.Connection, entidade: str, entidade_id: int, contas: Sequence[str]
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        queries["record_links"], entidade, entidade_id, list(contas)
    )
    return rows


async def requests_per_minute(conn: asyncpg.Connection, seconds: float) -> list[asyncpg.Record]:
    """(conta, minuto, n) over the last `seconds`, oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(queries["requests_per_minute"], seconds)
    return rows


async def depth_samples(conn: asyncpg.Connection, seconds: float) -> list[asyncpg.Record]:
    """(minuto, pendentes, processando, falhas) over the last `seconds`, oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(queries["depth_samples"], seconds)
    return rows


async def record_depth_sample(conn: asyncpg.Connection) -> None:
    await conn.execute(queries["record_depth_sample"])


async def recent_pace(
    conn: asyncpg.Connection, seconds: float
) -> dict[str, tuple[int, int, float]]:
    """Per account: (requests sent, records done, seconds since the first) over the last
    `seconds`."""
    rows = await conn.fetch(queries["recent_pace"], seconds)
    return {
        r["conta"]: (int(r["requests"]), int(r["succeeded"]), float(r["span"] or 0.0)) for r in rows
    }


async def open_by_loja(conn: asyncpg.Connection) -> dict[int, int]:
    rows = await conn.fetch(queries["open_by_loja"])
    return {int(r["loja_id"]): int(r["n"]) for r in rows}


async def succeeded_since(conn: asyncpg.Connection, since: datetime) -> int:
    return int(await conn.fetchval(queries["succeeded_since"], since))
