"""Enqueue every active record of an entity, in bulk: the old manual sync scripts, the
dashboard's buttons and the weekly full sync."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from crmd.config import Settings, SourcesSettings
from crmd.model import DEFAULT_PRIORITY
from crmd.ops.checks import InvalidRequest, check_entity, check_int
from crmd.store import erp, queue

log = structlog.get_logger("crmd.ops")

# Records per bulk statement (and transaction): short enough that no producer waits long on a
# pending row we touch, long enough that a million records go in well under a minute.
ENQUEUE_CHUNK = 10_000
DEFAULT_SINCE_DAYS: dict[str, int | None] = {
    "clientes": None,
    "produtos": None,
    "vendas": 30,
    "atividades": None,
}
MAX_SINCE_DAYS = 36_500
MAX_PRIORITY = 32_767  # the queue's prioridade is a smallint


@dataclass
class EnqueueResult:
    entidade: str
    per_loja: dict[int, int] = field(default_factory=dict)  # records found, per loja
    created: int = 0  # new queue items (the rest were already pending and coalesced)
    priority: int = 0
    since_days: int | None = None

    @property
    def total(self) -> int:
        return sum(self.per_loja.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "entidade": self.entidade,
            "per_loja": {str(k): v for k, v in sorted(self.per_loja.items())},
            "total": self.total,
            "created": self.created,
            "priority": self.priority,
            "since_days": self.since_days,
        }


async def enqueue_entities(
    conn: asyncpg.Connection,
    entidade: str,
    sources: SourcesSettings,
    *,
    lojas: Sequence[int] | None,
    since_days: int | None,
    priority: int | None,
    progress: Callable[[int], None] | None = None,
) -> EnqueueResult:
    """Enqueue every record of `entidade` that its listing query names (by default: active and
    not deleted clientes and produtos, not deleted vendas and atividades), in bulk.

    `since_days` keeps the records dated within those days (vendas: 30 when None); `lojas` None
    means every loja. Records are read in id order, ENQUEUE_CHUNK per statement; `progress` gets
    the running count after each.
    """
    check_entity(entidade)
    prio = DEFAULT_PRIORITY[entidade] if priority is None else priority
    check_int("priority", prio, 0, MAX_PRIORITY)
    days = DEFAULT_SINCE_DAYS[entidade] if since_days is None else since_days
    if days is not None:
        check_int("since_days", days, 1, MAX_SINCE_DAYS)
    result = EnqueueResult(entidade, priority=prio, since_days=days)
    wanted = await _lojas(conn, sources, lojas)
    result.per_loja = dict.fromkeys(wanted, 0)
    listing = erp.listing(entidade, sources)
    lojas_arg = None if lojas is None else wanted
    after = 0
    while True:
        rows = await queue.enqueue_listed(
            conn,
            listing,
            entidade,
            after=after,
            limit=ENQUEUE_CHUNK,
            lojas=lojas_arg,
            days=days,
            priority=prio,
        )
        if not rows:
            break
        for r in rows:
            result.per_loja[r["loja_id"]] = result.per_loja.get(r["loja_id"], 0) + r["found"]
            result.created += r["created"]
        after = max(r["last_id"] for r in rows)
        if progress is not None:
            progress(result.total)
        if sum(r["found"] for r in rows) < ENQUEUE_CHUNK:
            break
    log.info(
        "enqueued",
        entidade=entidade,
        total=result.total,
        created=result.created,
        priority=prio,
        since_days=days,
        lojas=lojas_arg,
    )
    return result


async def _lojas(
    conn: asyncpg.Connection, sources: SourcesSettings, lojas: Sequence[int] | None
) -> list[int]:
    """The lojas to report on: those asked for (each must exist), else every loja."""
    if lojas is None:
        return await erp.lojas(conn, sources)
    asked = sorted({check_int("loja", n, 1, 2**31 - 1) for n in lojas})
    if not asked:
        raise InvalidRequest("lojas está vazio: deixe de fora para enfileirar todas as lojas")
    found = await erp.lojas(conn, sources, asked)
    missing = sorted(set(asked) - set(found))
    if missing:
        raise InvalidRequest(f"nenhuma loja com id {', '.join(map(str, missing))}")
    return found


async def full_sync(conn: asyncpg.Connection, settings: Settings) -> str:
    """The weekly full sync: every configured entity, at the full sync's (low) priority."""
    totals = []
    for entidade in settings.schedule.full_sync_entities:
        res = await enqueue_entities(
            conn,
            entidade,
            settings.sources,
            lojas=None,
            since_days=None,
            priority=settings.schedule.full_sync_priority,
        )
        totals.append(f"{entidade} {res.total}")
    return "enfileirado: " + ", ".join(totals)
