"""The outcome of one attempt, and recording it: CRM id, log row and queue state, atomically.

One statement (the SQL function crm_sync_settle), so a crash can never leave an item marked done
without its CRM id stored, or an id stored without the attempt in the log; and one round trip
per item, which is most of what an item costs crmd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import asyncpg

from crmd.queue import Item, RetryPolicy
from crmd.sql import queries

Settled = Literal["done", "retry", "failed", "stale"]


@dataclass
class Outcome:
    success: bool
    message: str
    external_id: str | None = None
    payload_hash: str | None = None
    retryable: bool = False
    removed: bool = False  # the record is gone from the CRM: forget its id
    deferred: bool | None = None  # the item was given back; nothing to record
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
    def given_back(cls) -> Outcome:
        return cls(False, "", deferred=True)


async def record(
    conn: asyncpg.Connection, item: Item, conta: str, outcome: Outcome, policy: RetryPolicy
) -> Settled:
    """Store the outcome in one statement. A stale lease (another worker owns the item now)
    keeps the log row and the CRM id, which are facts about the CRM, but leaves the queue state
    to the new owner."""
    settled: Settled
    delay = 0.0
    if outcome.success:
        estado, settled = "concluido", "done"
    elif outcome.retryable and item.tentativas < policy.max_attempts:
        estado, settled, delay = "pendente", "retry", policy.delay(item.tentativas)
    else:
        estado, settled = "falhou", "failed"
    mapa = None
    if outcome.success:
        mapa = "remover" if outcome.removed else "gravar" if outcome.external_id else None
    ok = await conn.fetchval(
        queries["settle"],
        item.id,
        item.lease_token,
        conta,
        item.loja_id,
        item.entidade,
        item.entidade_id,
        item.acao,
        item.tentativas,
        mapa,
        outcome.external_id,
        outcome.payload_hash,
        "sucesso" if outcome.success else "erro",
        outcome.http_status,
        outcome.message,
        outcome.requests,
        outcome.duration_ms,
        estado,
        delay,
    )
    return settled if ok else "stale"
