"""Failed items: listing them with their last error, and sending them again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog

from crmd.ops.checks import InvalidRequest, check_entity, check_int
from crmd.store import queue, reports

log = structlog.get_logger("crmd.ops")


async def failed(
    conn: asyncpg.Connection, entidade: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Failed items, most recent first, with the error that made them give up."""
    if entidade is not None:
        check_entity(entidade)
    check_int("limit", limit, 1, 10_000)
    items = []
    for r in await reports.failed_items(conn, entidade, limit):
        item = dict(r)
        item["criado_em"] = item["criado_em"].isoformat()
        item["processado_em"] = item["processado_em"] and item["processado_em"].isoformat()
        items.append(item)
    return items


async def retry(
    conn: asyncpg.Connection,
    *,
    ids: Sequence[int] | None = None,
    entidade: str | None = None,
    all_failed: bool = False,
) -> int:
    """Make failed items pending again, with fresh attempts, due now; returns how many failed
    items left the failed state (revived, or folded into an item of the same record that already
    waits). Exactly one of `ids`, `entidade` and `all_failed` selects them."""
    chosen = sum([ids is not None, entidade is not None, all_failed])
    if chosen != 1:
        raise InvalidRequest("escolha exatamente um de ids, entidade ou all_failed")
    if ids is not None:
        if not ids:
            raise InvalidRequest("ids está vazio: informe ao menos um id de item da fila")
        ids = [check_int("id", i, 1, 2**63 - 1) for i in ids]
    if entidade is not None:
        check_entity(entidade)
    revived, folded = await queue.retry_failed(conn, ids, entidade)
    log.info(
        "retry", ids=ids, entidade=entidade, all_failed=all_failed, revived=revived, folded=folded
    )
    return revived + folded
