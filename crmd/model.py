"""The vocabulary every layer shares: entities, queue items, attempt outcomes, the retry rule.

Plain data, no I/O: the store writes these, the engine produces them, the surfaces show them.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

ENTITIES = ("clientes", "produtos", "vendas", "atividades")
Entity = Literal["clientes", "produtos", "vendas", "atividades"]
Action = Literal["upsert", "delete"]

# The old system's priorities: vendas first, atividades last.
DEFAULT_PRIORITY: dict[str, int] = {"vendas": 5, "clientes": 3, "produtos": 3, "atividades": 2}


@dataclass(frozen=True, slots=True)
class Item:
    """A claimed queue item; `lease_token` proves the claim when its outcome is settled."""

    id: int
    loja_id: int
    entidade: str
    entidade_id: int
    acao: Action
    prioridade: int
    tentativas: int
    adiamentos: int
    lease_token: uuid.UUID


@dataclass(frozen=True, slots=True)
class NewItem:
    """A record to enqueue; `prioridade` None takes the entity's default."""

    loja_id: int
    entidade: str
    entidade_id: int
    prioridade: int | None = None
    acao: Action = "upsert"

    @property
    def priority(self) -> int:
        return DEFAULT_PRIORITY[self.entidade] if self.prioridade is None else self.prioridade


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed attempt is tried again: initial x multiplier^(n-1), with jitter, capped."""

    max_attempts: int = 3
    initial_delay: float = 2.0
    multiplier: float = 2.0
    max_delay: float = 3600.0
    jitter: float = 0.1

    def retry_in(self, attempt: int, *, retryable: bool) -> float | None:
        """Seconds until a failed attempt number `attempt` is tried again; None: give up."""
        return self.delay(attempt) if retryable and attempt < self.max_attempts else None

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        base = min(self.initial_delay * self.multiplier ** max(attempt - 1, 0), self.max_delay)
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(base * (1 + spread), 0.0)


class OutcomeKind(Enum):
    """What became of one claimed item. Every kind is settled by the same store call."""

    SYNCED = "synced"  # the CRM holds the record: keep its id and what was sent
    REMOVED = "removed"  # the record is gone from the CRM: forget its id
    FAILED = "failed"  # the attempt failed: tried again while attempts remain and it may
    POSTPONED = "postponed"  # the account failed (429, authentication): logged, attempt back
    RELEASED = "released"  # given back unsent (paused account, shutdown): attempt back
    DEFERRED = "deferred"  # given back to wait for a record it needs: counted as a wait
    IGNORED = "ignored"  # nothing to send it to (the CRM has no such resource): done, apart


SENT_KINDS = frozenset({OutcomeKind.SYNCED, OutcomeKind.REMOVED, OutcomeKind.FAILED})
Settled = Literal[
    "done", "retry", "postponed", "released", "deferred", "failed", "ignored", "stale"
]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One HTTP request of an attempt and its answer, as the log keeps it (the old system's
    dados_enviados and dados_recebidos): bodies as JSON text, already capped in size and with
    secrets masked by the transport; `received` holds the error when no answer came."""

    method: str
    path: str
    status: int | None
    duration_ms: int
    sent: str | None
    received: str | None


@dataclass
class Outcome:
    kind: OutcomeKind
    message: str
    external_id: str | None = None
    payload_hash: str | None = None
    retryable: bool = False  # FAILED only: whether another attempt may succeed
    delay: float = 0.0  # POSTPONED, RELEASED, DEFERRED: seconds before the item is due again
    waited: bool = False  # POSTPONED only: count it as one of the item's waits (bounded)
    started: bool = True  # RELEASED only: whether a worker had started on it (spent an attempt)
    http_status: int | None = None
    requests: int = 0
    duration_ms: int | None = None
    exchanges: list[Exchange] = field(default_factory=list)  # the attempt's requests, in order

    @property
    def success(self) -> bool:
        return self.kind in (OutcomeKind.SYNCED, OutcomeKind.REMOVED)

    @property
    def logged(self) -> bool:
        """Whether the attempt leaves a log row: everything but a give-back that sent nothing."""
        return self.kind not in (OutcomeKind.RELEASED, OutcomeKind.DEFERRED) or self.requests > 0

    @classmethod
    def synced(cls, external_id: str, payload_hash: str, message: str) -> Outcome:
        return cls(OutcomeKind.SYNCED, message, external_id=external_id, payload_hash=payload_hash)

    @classmethod
    def removed(cls, message: str) -> Outcome:
        return cls(OutcomeKind.REMOVED, message)

    @classmethod
    def kept(cls, external_id: str | None, message: str) -> Outcome:
        """Done, the CRM record kept and linked (an inactivation, an ignored delete), with no
        payload hash: if the ERP record comes back, its next upsert is sent, never skipped.
        Without an external id the map is left as it is."""
        return cls(OutcomeKind.SYNCED, message, external_id=external_id)

    @classmethod
    def ignored(cls, message: str) -> Outcome:
        return cls(OutcomeKind.IGNORED, message)

    @classmethod
    def failed(cls, message: str, *, retryable: bool, http_status: int | None = None) -> Outcome:
        return cls(OutcomeKind.FAILED, message, retryable=retryable, http_status=http_status)

    @classmethod
    def postponed(
        cls, message: str, seconds: float, *, http_status: int | None, waited: bool = False
    ) -> Outcome:
        """The account, not the item, failed (429, authentication, an outage): logged, the
        attempt given back; `waited` counts it among the item's bounded waits."""
        return cls(
            OutcomeKind.POSTPONED, message, delay=seconds, http_status=http_status, waited=waited
        )

    @classmethod
    def released(
        cls, reason: str | None = None, seconds: float = 0.0, *, started: bool = True
    ) -> Outcome:
        """Given back unsent; the attempt a started worker spent is given back too."""
        return cls(OutcomeKind.RELEASED, reason or "", delay=seconds, started=started)

    @classmethod
    def deferred(cls, reason: str, seconds: float) -> Outcome:
        return cls(OutcomeKind.DEFERRED, reason, delay=seconds)


@dataclass(frozen=True, slots=True)
class Entry:
    """An outcome to settle: the item it belongs to and the CRM account it was sent to."""

    item: Item
    conta: str
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class BudgetGrant:
    """The shared budget's answer to a group of requests for a slot each (store/budget.py)."""

    granted: int  # how many of the requests asked for were granted: the first ones
    wait: float  # seconds until a grant may succeed (0 when granted)
    paused_until: float | None = None  # epoch seconds: the account is paused for every instance
    reason: str | None = None
    db_ms: float = 0.0  # the grant's own time in the database
    # For each granted request (as many as `granted`), the seconds it must still wait before it
    # is sent: 0, or more when its slots were granted ahead of their free time
    # (crmd.store.budget.AHEAD).
    ready: tuple[float, ...] = ()
    # And for each: the request whose answer frees the slot it waits for (None: it waits for no
    # slot, or for one no known answer frees), how long after that answer it may leave, and how
    # long its other windows make it wait. A sender that saw that answer times the request from
    # it, by its own clock, rather than from when this reply reached it (migration 0011).
    freed_by: tuple[uuid.UUID | None, ...] = ()
    freed_lead: tuple[float | None, ...] = ()
    ready_rest: tuple[float, ...] = ()
