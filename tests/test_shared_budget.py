"""One budget, many instances: the account's windows and pauses live in PostgreSQL, so two
`crmd run` processes on one database send no more than one would, and a pause seen by one holds
the other. Plus the budget's own rules (bulk share, the log as a starting point, resizing)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from crmd.config import RateLimit
from crmd.dev.devcrm.ledger import max_in_window
from crmd.dev.devcrm.server import DevCrm, DevCrmConfig
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
        answer = await budget.grant(conta, uuid.uuid4(), bulk, 30.0)
        granted += answer.granted
    return granted


# --- the budget's rules ------------------------------------------------------------------------


async def test_every_window_of_an_account_holds_for_all_grants(pool: asyncpg.Pool) -> None:
    budget = PgBudget(lambda: pool)
    await budget.configure("a", limits((3, 1.0), (5, 10.0)), 0.0, 1.0)
    assert await grants(budget, "a", 5) == 3  # the 1 s window
    refused = await budget.grant("a", uuid.uuid4(), False, 30.0)
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
    assert (await budget.grant("a", token, False, 30.0)).granted
    held = await budget.grant("a", uuid.uuid4(), False, 30.0)
    assert not held.granted and held.wait > 29  # out: held for its hold (30 s here)
    budget.release(token)
    await budget.close()
    freed = await budget.grant("a", uuid.uuid4(), False, 30.0)
    assert not freed.granted and freed.wait <= 0.3  # a window from the answer
    await asyncio.sleep(freed.wait + 0.05)
    assert (await budget.grant("a", uuid.uuid4(), False, 30.0)).granted


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
    answer = await other.grant("a", uuid.uuid4(), False, 30.0)
    assert not answer.granted and 1.5 < answer.wait <= 2.0
    assert answer.reason == "429: O limite de requisicoes foi atingido"
    assert answer.paused_until is not None and answer.paused_until > time.time() + 1.5


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
