"""One budget, many instances: the account's windows and pauses live in PostgreSQL, so two
`crmd run` processes on one database send no more than one would, and a pause seen by one holds
the other. Plus the budget's own rules (bulk share, the log as a starting point, resizing)."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest

from crmd.config import RateLimit
from crmd.crm.limiter import RateLimiter
from crmd.crm.limiter import max_in_window as max_in_any_window
from crmd.dev.devcrm.ledger import max_in_window
from crmd.dev.devcrm.server import DevCrm, DevCrmConfig
from crmd.model import BudgetGrant
from crmd.store.budget import PgBudget
from tests.test_daemon import (
    TOKENS,
    add_loja,
    add_produtos,
    all_done,
    daemon_config,
    daemons,
    until,
    workdir,
)

__all__ = ["daemons", "workdir"]  # fixtures, shared with test_daemon


def limits(*pairs: tuple[int, float]) -> list[RateLimit]:
    return [RateLimit(requests=n, per_seconds=s) for n, s in pairs]


async def grants(budget: PgBudget, conta: str, count: int, *, bulk: bool = False) -> int:
    granted = 0
    for _ in range(count):
        answer = await budget.grant(conta, [uuid.uuid4()], bulk, 30.0)
        granted += answer.granted
    return granted


# --- the budget's rules ------------------------------------------------------------------------


async def test_every_window_of_an_account_holds_for_all_grants(pool: asyncpg.Pool) -> None:
    budget = PgBudget(lambda: pool)
    await budget.configure("a", limits((3, 1.0), (5, 10.0)), 0.0, 1.0)
    assert await grants(budget, "a", 5) == 3  # the 1 s window
    refused = await budget.grant("a", [uuid.uuid4()], False, 30.0)
    assert not refused.granted and refused.wait > 0.5
    assert refused.db_ms < 50
    await budget.configure("b", limits((3, 1.0)), 0.0, 1.0)
    assert await grants(budget, "b", 3) == 3  # another account, another budget


async def test_an_answered_request_frees_its_slot_a_window_after_its_answer(
    pool: asyncpg.Pool,
) -> None:
    budget = PgBudget(lambda: pool)
    await budget.configure("a", limits((1, 0.3)), 0.0, 1.0)
    token = uuid.uuid4()
    assert (await budget.grant("a", [token], False, 30.0)).granted
    held = await budget.grant("a", [uuid.uuid4()], False, 30.0)
    assert not held.granted and held.wait > 29  # out: held for its hold (30 s here)
    budget.release(token)
    await budget.close()
    freed = await budget.grant("a", [uuid.uuid4()], False, 30.0)
    assert not freed.granted and freed.wait <= 0.3  # a window from the answer
    await asyncio.sleep(freed.wait + 0.05)
    assert (await budget.grant("a", [uuid.uuid4()], False, 30.0)).granted


async def test_bulk_work_uses_only_its_share_and_live_work_the_rest(pool: asyncpg.Pool) -> None:
    budget = PgBudget(lambda: pool)
    await budget.configure("a", limits((10, 60.0)), 0.0, 0.3)
    assert await grants(budget, "a", 10, bulk=True) == 3
    assert await grants(budget, "a", 10) == 7  # live traffic still has the rest
    await budget.configure("b", limits((10, 60.0)), 0.0, 0.3)
    assert await grants(budget, "b", 10) == 10  # live may use the whole window
    assert await grants(budget, "b", 1, bulk=True) == 0


async def test_a_new_window_starts_from_what_the_log_says_was_sent(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        """INSERT INTO crm_sync_log (conta, loja_id, entidade, entidade_id, acao, tentativa,
                                     status, requisicoes, criado_em)
           VALUES ('a', 1, 'clientes', 1, 'upsert', 1, 'sucesso', 2, now() - interval '1 hour'),
                  ('a', 1, 'clientes', 2, 'upsert', 1, 'sucesso', 1, now() - interval '2 days')"""
    )
    budget = PgBudget(lambda: pool)
    await budget.configure("a", limits((5, 86_400.0)), 0.0, 1.0)
    assert await grants(budget, "a", 5) == 3  # the two requests of the last day count


async def test_fewer_requests_keep_the_slots_freed_last(pool: asyncpg.Pool) -> None:
    budget = PgBudget(lambda: pool)
    await budget.configure("a", limits((4, 60.0)), 0.0, 1.0)
    assert await grants(budget, "a", 2) == 2
    await budget.configure("a", limits((2, 60.0)), 0.0, 1.0)
    assert await grants(budget, "a", 1) == 0  # both held slots survived the shrink
    await budget.configure("a", limits((3, 60.0)), 0.0, 1.0)
    assert await grants(budget, "a", 2) == 1


async def test_a_pause_holds_every_instance(pool: asyncpg.Pool) -> None:
    one, other = PgBudget(lambda: pool), PgBudget(lambda: pool)
    await one.configure("a", limits((100, 1.0)), 0.0, 1.0)
    one.pause("a", 2.0, "429: O limite de requisicoes foi atingido")
    await one.close()
    answer = await other.grant("a", [uuid.uuid4()], False, 30.0)
    assert not answer.granted and 1.5 < answer.wait <= 2.0
    assert answer.reason == "429: O limite de requisicoes foi atingido"
    assert answer.paused_until is not None and answer.paused_until > time.time() + 1.5


async def test_a_group_is_granted_in_order_until_a_window_is_full(pool: asyncpg.Pool) -> None:
    budget = PgBudget(lambda: pool)
    await budget.configure("a", limits((3, 1.0), (5, 10.0)), 0.0, 1.0)
    tokens = [uuid.uuid4() for _ in range(5)]
    answer = await budget.grant("a", tokens, False, 30.0)
    assert answer.granted == 3 and answer.wait > 0.5  # the 1 s window took three of them
    async with pool.acquire() as conn:
        holders = await conn.fetch("SELECT DISTINCT token FROM crm_budget_slot WHERE conta = 'a'")
    assert {r["token"] for r in holders} == set(tokens[:3])  # the first ones, in every window
    assert await grants(budget, "a", 1) == 0


async def test_an_answer_written_late_holds_its_slot_a_window_from_the_answer(
    pool: asyncpg.Pool,
) -> None:
    budget = PgBudget(lambda: pool)
    budget.ahead = 0.0  # grants only once the slot is free: the refusal shows when that is
    await budget.configure("a", limits((1, 1.0)), 0.0, 1.0)
    token = uuid.uuid4()
    assert (await budget.grant("a", [token], False, 30.0)).granted
    async with pool.acquire() as conn:  # the answer came 0.8 s before the writer wrote it
        await conn.execute(
            "SELECT crm_budget_release_answered($1::uuid[], $2::float8[])", [token], [0.8]
        )
    refused = await budget.grant("a", [uuid.uuid4()], False, 30.0)
    assert not refused.granted and 0 < refused.wait <= 0.25  # not a whole window from the write
    await asyncio.sleep(refused.wait + 0.02)
    assert (await budget.grant("a", [uuid.uuid4()], False, 30.0)).granted


async def test_accounts_asking_at_once_are_granted_in_one_call(pool: asyncpg.Pool) -> None:
    calls: list[int] = []

    class Counting(PgBudget):
        async def _grant_batch(self, asks: list[Any]) -> list[BudgetGrant]:
            calls.append(len(asks))
            return await super()._grant_batch(asks)

    budget = Counting(lambda: pool)
    contas = [f"conta-{n}" for n in range(6)]
    for conta in contas:
        await budget.configure(conta, limits((1, 60.0)), 0.0, 1.0)
    answers = await asyncio.gather(
        *(budget.grant(c, [uuid.uuid4(), uuid.uuid4()], False, 30.0) for c in contas)
    )
    assert [a.granted for a in answers] == [1] * 6  # each account's own window: one of two
    assert all(a.wait > 50 for a in answers)
    assert sum(calls) == 6 and len(calls) <= 2, calls  # not one round trip per account


async def test_a_slot_freeing_soon_is_granted_ahead_with_how_long_to_wait(
    pool: asyncpg.Pool,
) -> None:
    budget = PgBudget(lambda: pool)
    budget.ahead = 0.4
    await budget.configure("a", limits((2, 0.3)), 0.0, 1.0)
    token = uuid.uuid4()
    assert (await budget.grant("a", [token], False, 30.0)).granted
    budget.release(token)
    await budget.close()  # written: the slot is free 0.3 s from the answer
    now = await budget.grant("a", [uuid.uuid4()], False, 30.0)
    assert now.granted == 1 and now.ready == (0.0,)  # a slot that is free (new) comes first
    early = await budget.grant("a", [uuid.uuid4()], False, 30.0)
    assert early.granted == 1 and len(early.ready) == 1
    assert 0.15 < early.ready[0] <= 0.3  # granted now, to be sent once the slot is free
    later = await budget.grant("a", [uuid.uuid4()], False, 30.0)
    assert not later.granted and later.wait > 29  # that slot is the early one's now
    budget.ahead = 0.0
    await budget.configure("b", limits((1, 0.3)), 0.0, 1.0)
    token = uuid.uuid4()
    assert (await budget.grant("b", [token], False, 30.0)).granted
    budget.release(token)
    await budget.close()
    refused = await budget.grant("b", [uuid.uuid4()], False, 30.0)
    assert not refused.granted and 0.15 < refused.wait <= 0.3  # without ahead: not yet


async def test_requests_granted_ahead_never_leave_before_their_slot_is_free(
    pool: asyncpg.Pool,
) -> None:
    budget = CountingBudget(pool)
    await budget.configure("a", limits((2, 0.5)), 0.0, 1.0)
    limiter = RateLimiter(limits((2, 0.5)), budget=budget, account="a")
    spans: list[tuple[float, float]] = []  # (let out, answered) of each request

    async def request() -> None:
        async with limiter.slot() as held:
            left = time.monotonic()
            await asyncio.sleep(0.02)
            held.answered()
            spans.append((left, time.monotonic()))
            await asyncio.sleep(0.05)  # reading and logging the answer: not held for

    await asyncio.gather(*(request() for _ in range(8)))
    await budget.close()
    assert len(spans) == 8
    spans.sort()
    # Each request left no sooner than a window after the answer of the one two before it
    # (the window holds 2): ahead of time only the grant, never the request.
    gaps = [left - answered for (_, answered), (left, _) in zip(spans, spans[2:], strict=False)]
    assert min(gaps) >= 0.5 - 0.002
    # ... and it left close to that moment, not a grant's round trip or a read later.
    assert max(gaps) < 0.5 + 0.1
    assert await held_slots(pool) == 0


async def test_a_grant_ahead_names_the_answer_that_frees_its_slot(pool: asyncpg.Pool) -> None:
    budget = PgBudget(lambda: pool)
    budget.ahead = 0.6
    await budget.configure("a", limits((1, 0.3), (1, 0.5)), 0.0, 1.0)
    first = uuid.uuid4()
    assert (await budget.grant("a", [first], False, 30.0)).granted
    budget.release(first)
    await budget.close()
    ahead = await budget.grant("a", [uuid.uuid4()], False, 30.0)
    assert ahead.granted == 1
    # The 0.5 s window binds: its slot frees 0.5 s after the first request's answer; the other
    # window's wait is what is left besides it.
    assert ahead.freed_by == (first,) and ahead.freed_lead == (0.5,)
    assert 0.3 < ahead.ready[0] <= 0.5 and 0.1 < ahead.ready_rest[0] <= 0.3
    await budget.configure("b", limits((1, 0.3)), 0.0, 1.0)
    free = await budget.grant("b", [uuid.uuid4()], False, 30.0)
    assert free.granted and free.ready == (0.0,) and free.freed_by == (None,)  # waits for none


async def test_answers_and_renewals_find_their_slots_by_token_not_by_reading_every_slot(
    pool: asyncpg.Pool,
) -> None:
    """A daily window holds a row per request sent that day (30,000 per account): answering a
    few requests must not read them all, and neither a plan made while the table was empty."""
    budget = PgBudget(lambda: pool)
    await budget.configure("a", limits((30_000, 86_400.0)), 0.0, 1.0)
    tokens = [uuid.uuid4() for _ in range(5)]
    async with pool.acquire() as conn:
        for _ in range(6):  # answers while the table is small: a plan cached now would stay
            out = [uuid.uuid4() for _ in range(3)]
            assert (await budget.grant("a", out, False, 30.0)).granted == 3
            await conn.execute("SELECT crm_budget_release_answered($1, $2)", out, [0.0] * 3)
        await conn.execute(
            """INSERT INTO crm_budget_slot (conta, janela, slot, bulk, livre_em)
               SELECT 'a', 0, 100 + g, false, now() + interval '1 day'
                 FROM generate_series(1, 20000) g"""
        )
        assert (await budget.grant("a", tokens, False, 30.0)).granted == 5
        async with conn.transaction():

            async def scans() -> int:
                value: int = await conn.fetchval(
                    "SELECT seq_scan FROM pg_stat_xact_user_tables"
                    " WHERE relname = 'crm_budget_slot'"
                )
                return value

            before = await scans()
            await conn.execute("SELECT crm_budget_renew($1, 30.0)", tokens)
            await conn.execute("SELECT crm_budget_release_answered($1, $2)", tokens[:3], [0.1] * 3)
            await conn.execute("SELECT crm_budget_release($1)", tokens[3:])
            assert await scans() == before
    assert await held_slots(pool) == 0


async def test_a_slot_whose_request_never_answered_is_not_timed_from_an_older_answer(
    pool: asyncpg.Pool,
) -> None:
    budget = PgBudget(lambda: pool)
    budget.ahead = 0.5
    await budget.configure("a", limits((1, 0.2)), 0.0, 1.0)
    answered = uuid.uuid4()
    assert (await budget.grant("a", [answered], False, 30.0)).granted
    budget.release(answered)
    await budget.close()
    lost = await budget.grant("a", [uuid.uuid4()], False, 0.0)  # its process dies: no answer
    assert lost.granted and lost.freed_by == (answered,)
    await asyncio.sleep(lost.ready[0] + 0.1)
    # The slot frees itself by the lost request's hold; the answer before it says nothing.
    after = await budget.grant("a", [uuid.uuid4()], False, 30.0)
    assert after.granted and after.freed_by == (None,) and after.ready[0] > 0.1


class SlowReplies(PgBudget):
    """The real budget, whose grants reach the limiter `delay` seconds after the database gave
    them (a loaded machine: the reply waits in the network and in both event loops)."""

    def __init__(self, pool: asyncpg.Pool, delay: float) -> None:
        super().__init__(lambda: pool)
        self.delay = delay

    async def grant(
        self, conta: str, tokens: Sequence[uuid.UUID], bulk: bool, hold: float
    ) -> BudgetGrant:
        answer = await super().grant(conta, tokens, bulk, hold)
        await asyncio.sleep(self.delay)
        return answer


async def test_a_slot_freed_by_its_own_answer_is_timed_by_the_senders_clock(
    pool: asyncpg.Pool,
) -> None:
    """Two instances on one account, each reply to a grant 0.15 s late: a request granted ahead
    of a slot its own instance freed leaves a window after that answer, not 0.15 s later; one
    whose slot the other instance freed waits from its reply (this one cannot know when that
    answer came). Never, either way, less than a window after the answer before it."""
    window = 0.4
    budgets = [SlowReplies(pool, 0.15), SlowReplies(pool, 0.15)]
    await budgets[0].configure("a", limits((1, window)), 0.0, 1.0)
    limiters = [RateLimiter(limits((1, window)), budget=b, account="a") for b in budgets]
    spans: list[tuple[float, float, int]] = []  # (let out, answered, which instance)

    async def requests(which: int, count: int) -> None:
        for _ in range(count):
            async with limiters[which].slot() as held:
                left = time.monotonic()
                await asyncio.sleep(0.01)
                held.answered()
                spans.append((left, time.monotonic(), which))

    def gaps() -> list[tuple[float, bool]]:
        """From each answer to the next request's leaving; whether one instance sent both."""
        ordered = sorted(spans)
        return [
            (left - answered, a == b)
            for (_, answered, a), (left, _, b) in itertools.pairwise(ordered)
        ]

    await requests(0, 4)  # one instance alone: each slot its own
    own = [gap for gap, _ in gaps()]
    assert min(own) >= window - 0.002
    assert max(own) < window + 0.1, own  # not the reply's 0.15 s later
    spans.clear()
    await asyncio.gather(requests(0, 4), requests(1, 4))
    await asyncio.gather(*(b.close() for b in budgets))
    assert len(spans) == 8
    assert min(gap for gap, _ in gaps()) >= window - 0.002  # the other's answer waited for too
    foreign = [gap for gap, same in gaps() if not same]
    assert foreign and min(foreign) >= window + 0.1  # from the reply: the answer is not known
    assert await held_slots(pool) == 0


async def test_a_pause_while_a_grant_waits_for_its_slot_gives_the_grant_back(
    pool: asyncpg.Pool,
) -> None:
    budget = CountingBudget(pool)
    budget.ahead = 0.5
    await budget.configure("a", limits((1, 0.4)), 0.0, 1.0)
    limiter = RateLimiter(limits((1, 0.4)), budget=budget, account="a")
    await limiter.acquire()
    second = asyncio.create_task(limiter.acquire())
    await until(lambda: len(budget.calls) == 2, "the grant ahead")
    await asyncio.sleep(0.05)  # granted, waiting for the slot to free itself
    assert not second.done()
    paused_at = time.monotonic()
    limiter.pause(1.0, "429")
    await asyncio.sleep(0.05)
    assert await held_slots(pool) == 0  # the grant went back at once
    await second
    assert time.monotonic() - paused_at >= 1.0  # and the request waited out the pause
    await budget.close()


class CountingBudget(PgBudget):
    """The real budget, counting its calls; with `gated`, each call waits for `gate.release()`."""

    def __init__(self, pool: asyncpg.Pool, *, gated: bool = False) -> None:
        super().__init__(lambda: pool)
        self.calls: list[int] = []  # the number of slots each call asked for
        self.gate = asyncio.Semaphore(0) if gated else None

    async def grant(
        self, conta: str, tokens: Sequence[uuid.UUID], bulk: bool, hold: float
    ) -> BudgetGrant:
        self.calls.append(len(tokens))
        if self.gate is not None:
            await self.gate.acquire()
        return await super().grant(conta, tokens, bulk, hold)


async def held_slots(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        held: int = await conn.fetchval(
            "SELECT count(*) FROM crm_budget_slot WHERE token IS NOT NULL"
        )
    return held


async def test_waiters_queued_together_ask_the_budget_together(pool: asyncpg.Pool) -> None:
    budget = CountingBudget(pool)
    await budget.configure("a", limits((10, 1.0)), 0.0, 1.0)
    limiter = RateLimiter(limits((10, 1.0)), budget=budget, account="a")
    sent: list[float] = []

    async def request() -> None:
        async with limiter.slot():
            sent.append(time.monotonic())
            await asyncio.sleep(0.05)

    await asyncio.gather(*(request() for _ in range(25)))
    await budget.close()
    assert len(sent) == 25
    assert max_in_any_window(sorted(sent), 1.0) <= 10  # the window holds for the groups too
    assert len(budget.calls) < 25 / 2, f"{budget.calls}: slots asked for, per call"
    assert await held_slots(pool) == 0  # every slot granted was answered


async def test_slots_granted_for_waiters_that_went_away_are_given_back(
    pool: asyncpg.Pool,
) -> None:
    budget = CountingBudget(pool, gated=True)
    await budget.configure("a", limits((20, 60.0)), 0.0, 1.0)
    limiter = RateLimiter(limits((20, 60.0)), budget=budget, account="a")
    answered = asyncio.Event()

    async def request() -> None:
        async with limiter.slot():
            await answered.wait()

    tasks = [asyncio.create_task(request()) for _ in range(8)]
    await until(lambda: len(budget.calls) == 1, "the first grant")  # asked alone; the rest queue
    budget.gate.release()
    await until(lambda: len(budget.calls) == 2, "the second grant")  # for the seven waiting
    assert budget.calls == [1, 7]
    for task in tasks[2:]:  # six of them go away while the database answers
        task.cancel()
    await asyncio.gather(*tasks[2:], return_exceptions=True)
    budget.gate.release()
    answered.set()
    await asyncio.gather(*tasks[:2])
    await budget.close()
    assert await held_slots(pool) == 0  # the six spare slots were given back, not kept


# --- two daemons on one database ---------------------------------------------------------------


@pytest.fixture
async def strict_crm() -> AsyncIterator[DevCrm]:
    async with DevCrm(DevCrmConfig(**TOKENS, limits=((5, 1.0),), retry_after=1.5)) as server:
        yield server


async def test_two_daemons_share_one_budget_and_one_pause(
    db_dsn: str, conn: asyncpg.Connection, strict_crm: DevCrm, daemons: Any
) -> None:
    crm = strict_crm
    config = daemon_config(
        db_dsn,
        crm.url,
        crm={"limits": [{"requests": 5, "per_seconds": 1.0}], "concurrency": 4},
        queue={"batch_size": 5},
        sync={"lookup_unknown": False},
    )
    first, second = daemons(config), daemons(config)
    for name, daemon in (("one", first), ("two", second)):  # each its own output files
        daemon.workdir = daemon.workdir / name
        daemon.workdir.mkdir()
        daemon.start()
    await first.wait_event("started")
    await second.wait_event("started")
    await add_loja(conn)
    await add_produtos(conn, 1, 30)
    await until(lambda: all_done(conn, 30), "30 produtos through both daemons", 30)

    pushed = [e for e in crm.ledger if e.fault is None]
    assert max_in_window(pushed, 1.0, all_requests=True) <= 5, "two daemons, one budget"
    assert not [e for e in pushed if e.status == 429]
    assert first.events("synced") and second.events("synced"), "both took part"

    # A 429 seen by one pauses both for its Retry-After.
    crm.set_faults(burst_429=1)
    await add_produtos(conn, 100, 20)
    [rejected] = await until(
        lambda: [e for e in crm.ledger if e.fault == "burst"], "the injected 429", 15
    )
    await until(lambda: all_done(conn, 50), "the rest after the pause", 40)
    quiet = [
        e for e in crm.ledger if rejected.monotonic + 0.3 < e.monotonic < rejected.monotonic + 1.3
    ]
    assert quiet == [], "a daemon sent during the other's pause"
    for daemon in (first, second):
        daemon.send(signal.SIGTERM)
        assert await daemon.exit_code() == 0
