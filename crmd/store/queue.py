"""Queue operations on `crm_sync_queue`: enqueue, claim with a lease, and settle each item.

Every settling call carries the lease token its claim returned; a worker whose lease expired (and
whose item another worker may have claimed since) gets `False` back and changes nothing.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import asyncpg

from crmd.config import QueueSettings
from crmd.store.sql import queries

Action = Literal["upsert", "delete"]

# The old system's priorities: vendas first, atividades last.
DEFAULT_PRIORITY: dict[str, int] = {"vendas": 5, "clientes": 3, "produtos": 3, "atividades": 2}


@dataclass(frozen=True, slots=True)
class Item:
    """A claimed queue item."""

    id: int
    loja_id: int
    entidade: str
    entidade_id: int
    acao: Action
    prioridade: int
    tentativas: int
    adiamentos: int
    lease_token: uuid.UUID

    @property
    def record_key(self) -> tuple[int, str, int]:
        return (self.loja_id, self.entidade, self.entidade_id)


@dataclass(frozen=True, slots=True)
class NewItem:
    loja_id: int
    entidade: str
    entidade_id: int
    prioridade: int | None = None
    acao: Action = "upsert"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed attempt is tried again: initial x multiplier^(n-1), with jitter, capped."""

    max_attempts: int = 3
    initial_delay: float = 2.0
    multiplier: float = 2.0
    max_delay: float = 3600.0
    jitter: float = 0.1

    @classmethod
    def from_settings(cls, s: QueueSettings) -> RetryPolicy:
        return cls(
            s.max_attempts,
            s.retry_initial_delay_seconds,
            s.retry_multiplier,
            s.retry_max_delay_seconds,
            s.retry_jitter,
        )

    def retry_in(self, attempt: int, *, retryable: bool) -> float | None:
        """Seconds until a failed attempt number `attempt` is tried again; None: give up."""
        return self.delay(attempt) if retryable and attempt < self.max_attempts else None

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        base = min(self.initial_delay * self.multiplier ** max(attempt - 1, 0), self.max_delay)
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(base * (1 + spread), 0.0)


def _priority(item: NewItem) -> int:
    return item.prioridade if item.prioridade is not None else DEFAULT_PRIORITY[item.entidade]


async def enqueue(conn: asyncpg.Connection, item: NewItem) -> None:
    await conn.execute(
        queries["enqueue"],
        item.loja_id,
        item.entidade,
        item.entidade_id,
        _priority(item),
        item.acao,
    )


async def enqueue_many(conn: asyncpg.Connection, items: Iterable[NewItem]) -> int:
    """Enqueue in one statement; returns how many rows were new (the rest were coalesced)."""
    batch = list(items)
    if not batch:
        return 0
    async with conn.transaction():
        await conn.execute(queries["bulk_mode_on"])
        rows = await conn.fetch(
            queries["enqueue_many"],
            [i.loja_id for i in batch],
            [i.entidade for i in batch],
            [i.entidade_id for i in batch],
            [_priority(i) for i in batch],
            [i.acao for i in batch],
        )
        await conn.execute(queries["bulk_mode_off"])
    return sum(1 for r in rows if r["novo"])


async def claim(conn: asyncpg.Connection, limit: int, lease_seconds: float) -> list[Item]:
    """Lease up to `limit` due items, in the order they should be sent."""
    rows = await conn.fetch(queries["claim"], limit, lease_seconds)
    items = [Item(**dict(r)) for r in rows]
    items.sort(key=lambda i: (-i.prioridade, i.id))
    return items


async def _settle(conn: asyncpg.Connection, query: str, *args: object) -> bool:
    return bool(await conn.execute(queries[query], *args) == "UPDATE 1")


async def _requeue(conn: asyncpg.Connection, query: str, *args: object) -> bool:
    return bool(await conn.fetchval(queries[query], *args))


async def complete(conn: asyncpg.Connection, item: Item) -> bool:
    return await _settle(conn, "complete", item.id, item.lease_token)


async def reschedule(conn: asyncpg.Connection, item: Item, delay: float, error: str) -> bool:
    return await _requeue(conn, "reschedule", item.id, item.lease_token, delay, error)


async def fail(conn: asyncpg.Connection, item: Item, error: str) -> bool:
    return await _settle(conn, "fail", item.id, item.lease_token, error)


async def fail_or_retry(
    conn: asyncpg.Connection, item: Item, error: str, policy: RetryPolicy, *, retryable: bool
) -> Literal["retry", "failed", "stale"]:
    """Settle a failed attempt: try again later while attempts remain and the error allows."""
    delay = policy.retry_in(item.tentativas, retryable=retryable)
    if delay is not None:
        return "retry" if await reschedule(conn, item, delay, error) else "stale"
    return "failed" if await fail(conn, item, error) else "stale"


async def release(
    conn: asyncpg.Connection, item: Item, delay: float = 0.0, reason: str | None = None
) -> bool:
    """Give the item back without spending its attempt."""
    return await _requeue(conn, "release", item.id, item.lease_token, delay, reason)


async def defer(conn: asyncpg.Connection, item: Item, delay: float, reason: str) -> bool:
    """Give the item back to wait for a dependency; counts the wait, not an attempt."""
    return await _requeue(conn, "defer", item.id, item.lease_token, delay, reason)


async def release_all(conn: asyncpg.Connection, items: Sequence[Item]) -> int:
    released = 0
    for item in items:
        released += await release(conn, item)
    return released


async def next_due_in(conn: asyncpg.Connection) -> float | None:
    """Seconds until the next pending item is due; None when nothing is pending."""
    value = await conn.fetchval(queries["next_due_in"])
    return None if value is None else max(float(value), 0.0)
