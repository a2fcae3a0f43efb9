"""The outbox queue, `crm_sync_queue`: enqueue in bulk, claim with a lease, settle outcomes.

Every change of a claimed item's state goes through `settle`, one statement for any number of
items: done, failed, tried again later, given back, or put off to wait for a dependency. Each
outcome carries the lease token its claim returned; a worker whose lease expired (and whose
item another worker may have claimed since) gets "stale" back and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

import asyncpg

from crmd.model import Entry, Exchange, Item, NewItem, Outcome, OutcomeKind, RetryPolicy, Settled
from crmd.store.sql import queries


@asynccontextmanager
async def bulk_mode(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A transaction in which crmd's own inserts coalesce themselves (ON CONFLICT) and the row
    trigger stands aside; its end wakes the workers, at commit."""
    async with conn.transaction():
        await conn.execute(queries["bulk_mode_on"])
        yield
        await conn.execute(queries["bulk_mode_off"])


async def enqueue_many(conn: asyncpg.Connection, items: Iterable[NewItem]) -> int:
    """Enqueue in one statement; returns how many rows were new (the rest were coalesced)."""
    batch = list(items)
    if not batch:
        return 0
    async with bulk_mode(conn):
        rows = await conn.fetch(
            queries["enqueue_many"],
            [i.loja_id for i in batch],
            [i.entidade for i in batch],
            [i.entidade_id for i in batch],
            [i.priority for i in batch],
            [i.acao for i in batch],
        )
    return sum(1 for r in rows if r["novo"])


async def enqueue_listed(
    conn: asyncpg.Connection,
    listing: str,
    entidade: str,
    *,
    after: int,
    limit: int,
    lojas: Sequence[int] | None,
    days: int | None,
    priority: int,
) -> list[asyncpg.Record]:
    """One chunk of a bulk enqueue of the ERP records `listing` names (erp.listing), in a
    transaction of its own: rows of (loja_id, found, created, last_id)."""
    sql = queries["enqueue_listed"].replace("/*listing*/", listing, 1)
    async with bulk_mode(conn):
        rows: list[asyncpg.Record] = await conn.fetch(
            sql, after, limit, None if lojas is None else list(lojas), days, priority, entidade
        )
    return rows


async def claim(conn: asyncpg.Connection, limit: int, lease_seconds: float) -> list[Item]:
    """Lease up to `limit` due items, in the order they should be sent."""
    rows = await conn.fetch(queries["claim"], limit, lease_seconds)
    items = [Item(**dict(r)) for r in rows]
    items.sort(key=lambda i: (-i.prioridade, i.id))
    return items


async def start(conn: asyncpg.Connection, items: Sequence[Item]) -> None:
    """Workers started on these items: each spends the attempt its claim announced."""
    if items:
        await conn.execute(queries["start"], [i.id for i in items], [i.lease_token for i in items])


def _transition(entry: Entry, policy: RetryPolicy) -> tuple[Settled, str, float, str | None]:
    """The item's next state (queue estado, delay, map change) for an outcome."""
    outcome = entry.outcome
    kind = outcome.kind
    if kind is OutcomeKind.SYNCED:
        return "done", "concluido", 0.0, "gravar" if outcome.external_id else None
    if kind is OutcomeKind.REMOVED:
        return "done", "concluido", 0.0, "remover"
    if kind is OutcomeKind.POSTPONED:
        return "postponed", "adiar" if outcome.waited else "devolver", outcome.delay, None
    if kind is OutcomeKind.RELEASED:
        return "released", "devolver" if outcome.started else "soltar", outcome.delay, None
    if kind is OutcomeKind.DEFERRED:
        return "deferred", "adiar", outcome.delay, None
    if kind is OutcomeKind.IGNORED:
        return "ignored", "ignorado", 0.0, None
    delay = policy.retry_in(entry.item.tentativas, retryable=outcome.retryable)
    if delay is not None:
        return "retry", "pendente", delay, None
    return "failed", "falhou", 0.0, None


async def settle(
    conn: asyncpg.Connection, entries: Sequence[Entry], policy: RetryPolicy
) -> list[Settled]:
    """Store outcomes in one statement (atomic, one round trip for any number): the CRM id, the
    log row (every attempt that reached the CRM or failed) and the queue state. A stale lease
    keeps the log row and the CRM id, which are facts about the CRM, but leaves the queue state
    to the new owner: that entry comes back "stale"."""
    if not entries:
        return []
    plans = [_transition(e, policy) for e in entries]
    plans = [(settled, estado, _finite(delay), mapa) for settled, estado, delay, mapa in plans]
    rows = []
    for e, (_, estado, delay, mapa) in zip(entries, plans, strict=True):
        i, o = e.item, e.outcome
        status = _log_status(o) if o.logged else None
        rows.append(
            (
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
                status,
                o.http_status,
                _text(o.message),
                o.requests,
                o.duration_ms,
                estado,
                delay,
                _exchanges(o.exchanges) if status is not None else None,
            )
        )
    results: list[str] = await conn.fetchval(queries["settle"], rows)
    return [_SETTLED.get(r, plan[0]) for plan, r in zip(plans, results, strict=True)]


def _log_status(outcome: Outcome) -> str:
    if outcome.kind is OutcomeKind.IGNORED:
        return "ignorado"
    return "sucesso" if outcome.success else "erro"


# What crm_sync_settle_v2 says, where it overrides the plan: a stale lease changed nothing; a
# CRM id already linked to another ERP record failed the item.
_SETTLED: dict[str, Settled] = {"stale": "stale", "twin": "failed"}
# PostgreSQL text holds no NUL; a CRM's message may. And the log is no place for a megabyte.
MAX_MESSAGE = 2000


MAX_DELAY = 86_400.0  # no item is put off further than a day at a time


def _finite(delay: float) -> float:
    return delay if 0.0 <= delay <= MAX_DELAY else (0.0 if delay < 0 else MAX_DELAY)


def _exchanges(exchanges: Sequence[Exchange]) -> str | None:
    """The attempt's requests as the log's `trocas` (jsonb, which holds no NUL either); at
    most MAX_EXCHANGES, the first ones and the last (a long paged lookup keeps its ends)."""
    if not exchanges:
        return None
    kept = list(exchanges)
    if len(kept) > MAX_EXCHANGES:
        kept = [*kept[: MAX_EXCHANGES - 1], kept[-1]]
    return json.dumps(
        [
            {
                "metodo": e.method,
                "caminho": _no_nul(e.path),
                "http_status": e.status,
                "duracao_ms": e.duration_ms,
                "enviado": _no_nul(e.sent),
                "recebido": _no_nul(e.received),
            }
            for e in kept
        ],
        ensure_ascii=False,
    )


MAX_EXCHANGES = 10


def _no_nul(text: str | None) -> str | None:
    return None if text is None else text.replace("\x00", "")


def _text(message: str) -> str:
    text = message.replace("\x00", "")
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


async def extend_leases(
    conn: asyncpg.Connection, held: Sequence[Item], lease_seconds: float
) -> set[int]:
    """Run the leases of items still held on from now; returns the ids whose lease still holds."""
    if not held:
        return set()
    rows = await conn.fetch(
        queries["extend_leases"],
        [i.id for i in held],
        [i.lease_token for i in held],
        lease_seconds,
    )
    return {r["id"] for r in rows}


async def failed_records(
    conn: asyncpg.Connection, records: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], str]:
    """Which of these records failed for good (no item of theirs waits), with the last error."""
    rows = await conn.fetch(
        queries["failed_records"], [r[0] for r in records], [r[1] for r in records]
    )
    return {(r["entidade"], r["entidade_id"]): r["ultimo_erro"] or "" for r in rows}


async def next_due_in(conn: asyncpg.Connection) -> float | None:
    """Seconds until the next pending item is due; None when nothing is pending."""
    value = await conn.fetchval(queries["next_due_in"])
    return None if value is None else max(float(value), 0.0)


async def retry_failed(
    conn: asyncpg.Connection, ids: Sequence[int] | None, entidade: str | None
) -> tuple[int, int]:
    """Failed items (these ids, or of this entity, or all) pending again with fresh attempts;
    returns (revived, folded into an item of the same record that already waits)."""
    try:
        row = await _retry_once(conn, ids, entidade)
    except asyncpg.UniqueViolationError:
        # A producer made one of the records pending while we looked: look again, and fold.
        row = await _retry_once(conn, ids, entidade)
    return int(row["revived"]), int(row["folded"])


async def _retry_once(
    conn: asyncpg.Connection, ids: Sequence[int] | None, entidade: str | None
) -> asyncpg.Record:
    async with conn.transaction():
        row: asyncpg.Record = await conn.fetchrow(
            queries["retry_failed"], None if ids is None else list(ids), entidade
        )
        await conn.execute(queries["wake_workers"])
    return row


async def open_items(
    conn: asyncpg.Connection,
    *,
    after: int,
    limit: int,
    entidade: str | None,
    lojas: Sequence[int] | None,
) -> list[asyncpg.Record]:
    """Open items (pending or in flight) after queue id `after`, in id order: (id, loja_id,
    entidade, entidade_id, acao)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        queries["plan_pending"], after, limit, entidade, None if lojas is None else list(lojas)
    )
    return rows
