"""The outcome of one attempt, and recording it: CRM id, log row and queue state, atomically.

One statement (the SQL function crm_sync_settle), so a crash can never leave an item marked done
without its CRM id stored, or an id stored without the attempt in the log; and one round trip
per item, which is most of what an item costs crmd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import asyncpg

from crmd.store.queue import Item, RetryPolicy
from crmd.store.sql import queries

Settled = Literal["done", "retry", "postponed", "failed", "stale"]


@dataclass
class Outcome:
    success: bool
    message: str
    external_id: str | None = None
    payload_hash: str | None = None
    retryable: bool = False
    removed: bool = False  # the record is gone from the CRM: forget its id
    deferred: bool = False  # the item was given back already; nothing to record
    postpone: float | None = None  # try again after this many seconds, attempt not spent
    http_status: int | None = None
    requests: int = 0
    duration_ms: int | None = None

    @classmethod
    def ok(cls, external_id: str, payload_hash: str, message: str) -> Outcome:
        return cls(True, message, external_id=external_id, payload_hash=payload_hash)

    @classmethod
    def removed_ok(cls, message: str) -> Outcome:
        return cls(True, message, removed=True)

    @classmethod
    def error(cls, message: str, *, retryable: bool, http_status: int | None = None) -> Outcome:
        return cls(False, message, retryable=retryable, http_status=http_status)

    @classmethod
    def postponed(cls, message: str, seconds: float, *, http_status: int | None) -> Outcome:
        """The account, not the item, failed (429, authentication): logged, not counted."""
        return cls(False, message, postpone=seconds, http_status=http_status)

    @classmethod
    def given_back(cls) -> Outcome:
        return cls(False, "", deferred=True)


@dataclass(frozen=True)
class Entry:
    item: Item
    conta: str
    outcome: Outcome


def _plan(entry: Entry, policy: RetryPolicy) -> tuple[Settled, str, float, str | None]:
    """The item's next state: done, tried again after a delay, or failed for good."""
    item, outcome = entry.item, entry.outcome
    if outcome.postpone is not None:
        return "postponed", "devolver", outcome.postpone, None
    if outcome.success:
        mapa = "remover" if outcome.removed else "gravar" if outcome.external_id else None
        return "done", "concluido", 0.0, mapa
    delay = policy.retry_in(item.tentativas, retryable=outcome.retryable)
    if delay is not None:
        return "retry", "pendente", delay, None
    return "failed", "falhou", 0.0, None


async def record_many(
    conn: asyncpg.Connection, entries: list[Entry], policy: RetryPolicy
) -> list[Settled]:
    """Store outcomes in one statement (atomic, one round trip for any number). A stale lease
    (another worker owns the item now) keeps the log row and the CRM id, which are facts about
    the CRM, but leaves the queue state to the new owner: that entry comes back "stale"."""
    plans = [_plan(e, policy) for e in entries]
    columns: list[list[object]] = [[] for _ in range(18)]
    for e, (_, estado, delay, mapa) in zip(entries, plans, strict=True):
        i, o = e.item, e.outcome
        values = (
            i.id,
            i.lease_token,
            e.conta,
            i.loja_id,
            i.entidade,
            i.entidade_id,
            i.acao,
            i.tentativas,
            mapa,
            o.external_id,
            o.payload_hash,
            "sucesso" if o.success else "erro",
            o.http_status,
            o.message,
            o.requests,
            o.duration_ms,
            estado,
            delay,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    rows = await conn.fetch(queries["settle_many"], *columns)
    return [plan[0] if row["ok"] else "stale" for plan, row in zip(plans, rows, strict=True)]
