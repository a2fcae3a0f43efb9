"""The request budget of each CRM account, shared by every instance through PostgreSQL.

A grant is a call of `crm_budget_grant_each` (migrations/core/0008 to 0011): for each request
of a group in turn, a slot of every window of the account, by the database's clock, or how long
to wait; the groups of every account waiting at that moment go in one call. When no slot is free
and none can be made, one that frees itself within AHEAD seconds is granted with how long its
request must still wait, so the round trip falls inside the slot's held time instead of adding
to its cycle. Answers (releases) and pauses are written in groups by one writer task; an answer
carries how long ago it came, so its slot holds for the window from the answer, not from the
write. A grant ahead also says whose answer frees the slot it waits for: a sender that saw that
answer (its own request's) times the request from it by its own clock, not from when the grant's
reply reached it (migration 0011). A database that cannot be reached refuses grants for a moment
(the requests wait) rather than letting any go unbudgeted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
import structlog

from crmd.config import RateLimit
from crmd.model import BudgetGrant
from crmd.store.db import DB_ERRORS
from crmd.store.sql import queries

log = structlog.get_logger("crmd.budget")

UNAVAILABLE_WAIT = 1.0  # seconds a request waits when the database cannot grant
# A request out holds its slots until `hold` seconds from its grant (plus the window), renewed
# every EXTEND_EVERY seconds while it is out: a process that dies frees its slots within a few
# seconds, not after a whole request timeout.
EXTEND_EVERY = 1.0
# Grant calls out at once: while some are out the next can go, so a grant seldom waits for a
# whole round trip of another (200 accounts at 3/s: 96 % of their budget with 2, 98 % with 4).
# They lock the accounts' windows in the order of their names: no deadlock among them.
GRANTERS = 4
# How far ahead of a slot's free time it may be granted: more than a grant's round trip under
# load (a few milliseconds; tens on a busy machine), so the request is ready to leave the moment
# its slot frees itself. A granted request waits for its slot at the sender, which is free: the
# slot could not serve anyone else before that moment either.
AHEAD = 0.25


@dataclass
class _Ask:
    """One group of requests of an account waiting for its grant."""

    conta: str
    tokens: list[uuid.UUID]
    bulk: bool
    hold: float
    answer: asyncio.Future[BudgetGrant]


class PgBudget:
    def __init__(self, pool: Callable[[], asyncpg.Pool]) -> None:
        self._pool = pool
        self._releases: list[tuple[uuid.UUID, float]] = []  # (token, answered at: monotonic)
        self._pauses: dict[str, tuple[float, str]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._out: dict[uuid.UUID, float] = {}  # granted, not answered: token -> hold
        self._asks: list[_Ask] = []  # grants waiting for the next call
        self._granters: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._closing = False
        self.ahead = AHEAD

    async def configure(
        self, conta: str, limits: Sequence[RateLimit], margin: float, bulk_share: float
    ) -> None:
        async with self._pool().acquire() as conn:
            await conn.execute(
                queries["budget_configure"],
                conta,
                [lim.requests for lim in limits],
                [lim.per_seconds for lim in limits],
                margin,
                bulk_share,
            )

    async def grant(
        self, conta: str, tokens: Sequence[uuid.UUID], bulk: bool, hold: float
    ) -> BudgetGrant:
        """A slot for each request (`tokens`, one per request) in order, until one is refused.

        Asked together with every other account's grants waiting in this process: one call
        carries them all (while GRANTERS calls are out, the next ones gather), so hundreds of
        accounts cost a round trip per moment rather than one per account.
        """
        ask = _Ask(conta, list(tokens), bulk, hold, asyncio.get_running_loop().create_future())
        self._asks.append(ask)
        self._granters = {g for g in self._granters if not g.done()}
        if len(self._granters) < GRANTERS:
            self._granters.add(asyncio.create_task(self._grant_asks(), name="budget-granter"))
        return await ask.answer

    async def _grant_asks(self) -> None:
        while self._asks:
            asks, self._asks = self._asks, []
            try:
                answers = await self._grant_batch(asks)
            except BaseException as exc:  # a bug, or cancelled: the askers must not hang
                for ask in asks:
                    if ask.answer.done():
                        continue
                    if isinstance(exc, asyncio.CancelledError):
                        ask.answer.cancel()
                    else:
                        ask.answer.set_exception(exc)
                raise
            for ask, answer in zip(asks, answers, strict=True):
                granted = ask.tokens[: answer.granted]
                if ask.answer.done():  # the asker went away (cancelled): give its slots back
                    for token in granted:
                        self.release(token)
                    continue
                self._out.update((token, ask.hold) for token in granted)
                ask.answer.set_result(answer)
            if self._out and (self._renewer is None or self._renewer.done()):
                self._renewer = asyncio.create_task(self._renew(), name="budget-renewer")

    async def _grant_batch(self, asks: list[_Ask]) -> list[BudgetGrant]:
        try:
            async with self._pool().acquire() as conn:
                rows = await conn.fetch(
                    queries["budget_grant"],
                    [a.conta for a in asks],
                    [len(a.tokens) for a in asks],
                    [t for a in asks for t in a.tokens],
                    [a.bulk for a in asks],
                    [a.hold for a in asks],
                    self.ahead,
                )
        except DB_ERRORS as exc:
            if not self._failing:
                contas = sorted({a.conta for a in asks})
                log.error("budget_unavailable", contas=contas, error=str(exc) or type(exc).__name__)
            self._failing = True
            return [BudgetGrant(0, UNAVAILABLE_WAIT) for _ in asks]
        self._failing = False
        answers = [BudgetGrant(0, UNAVAILABLE_WAIT)] * len(asks)
        for row in rows:
            until = row["pausada_ate"]
            answers[row["pedido"] - 1] = BudgetGrant(
                int(row["granted"]),
                max(float(row["wait"] or 0.0), 0.0),
                None if until is None else until.timestamp(),
                row["motivo"],
                float(row["db_ms"] or 0.0),
                tuple(row["ready"] or ()),  # never negative (GREATEST in 0010)
                tuple(row["freed_by"] or ()),
                tuple(row["freed_lead"] or ()),
                tuple(row["ready_rest"] or ()),
            )
        return answers

    def release(self, token: uuid.UUID, age: float = 0.0) -> None:
        """The request was answered `age` seconds ago: its slots hold for a window's length
        from then (queued)."""
        self._out.pop(token, None)
        self._releases.append((token, time.monotonic() - max(age, 0.0)))
        self._kick()

    def pause(self, conta: str, seconds: float, reason: str) -> None:
        """Pause the account for every instance (queued; the longest pause wins)."""
        known = self._pauses.get(conta)
        if known is None or known[0] < seconds:
            self._pauses[conta] = (seconds, reason)
        self._kick()

    def _kick(self) -> None:
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write(), name="budget-writer")

    async def _renew(self) -> None:
        """Keep the slots of the requests still out held (see EXTEND_EVERY)."""
        while self._out:
            await asyncio.sleep(EXTEND_EVERY)
            out = dict(self._out)
            if not out:
                continue
            try:
                async with self._pool().acquire() as conn:
                    await conn.execute(queries["budget_renew"], list(out), max(out.values()))
            except DB_ERRORS as exc:
                log.warning("budget_renew_failed", error=str(exc) or type(exc).__name__)

    async def _write(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if not await self._write_once() and not self._closing:
                await asyncio.sleep(UNAVAILABLE_WAIT)  # a database away: try again shortly
                self._wake.set()

    async def _write_once(self) -> bool:
        """Write the pauses and answers queued so far; False (and kept) if the database fails."""
        releases, self._releases = self._releases, []
        pauses, self._pauses = self._pauses, {}
        if not releases and not pauses:
            return True
        try:
            async with self._pool().acquire() as conn:
                for conta, (seconds, reason) in pauses.items():
                    await conn.execute(queries["budget_pause"], conta, seconds, reason)
                if releases:
                    now = time.monotonic()
                    await conn.execute(
                        queries["budget_release"],
                        [token for token, _ in releases],
                        [max(now - answered, 0.0) for _, answered in releases],
                    )
        except DB_ERRORS as exc:
            log.warning("budget_write_failed", error=str(exc) or type(exc).__name__)
            # Unwritten answers keep their slots until the requests' timeout: safe.
            self._releases[:0] = releases
            for conta, pause in pauses.items():
                self._pauses.setdefault(conta, pause)
            return False
        return True

    async def close(self) -> None:
        """Stop the writer, then write what is queued (one try)."""
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        self._closing = True
        if self._task is not None:
            self._wake.set()  # the writer finishes what it is writing, then ends
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5.0)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            self._task = None
        await self._write_once()
        self._closing = False


async def usage(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """(conta, janela, requests, per_seconds, used) of every account's windows."""
    rows: list[asyncpg.Record] = await conn.fetch(queries["budget_usage_all"])
    return rows


async def paused(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """(conta, pausada_ate, motivo) of the accounts paused now."""
    rows: list[asyncpg.Record] = await conn.fetch(queries["budget_paused"])
    return rows
