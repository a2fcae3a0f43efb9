"""The outbox queue: enqueue and coalescing, claiming with leases, settling, retry timing."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from crmd.model import Entry, Item, NewItem, Outcome, RetryPolicy, Settled
from crmd.store import queue
from crmd.store.sql import queries

DONE = Outcome.synced("ext-1", "hash", "ok")


async def enqueue(conn: asyncpg.Connection, item: NewItem) -> None:
    """As a producer does: through crm_enqueue()."""
    await conn.execute(
        "SELECT crm_enqueue($1, $2, $3, $4, $5)",
        item.loja_id,
        item.entidade,
        item.entidade_id,
        item.priority,
        item.acao,
    )


async def settle(
    conn: asyncpg.Connection, item: Item, outcome: Outcome, policy: RetryPolicy | None = None
) -> Settled:
    """One outcome through the engine's one settle path, after the worker started on the item
    (which spends its attempt), as the engine does."""
    await queue.start(conn, [item])
    [result] = await queue.settle(conn, [Entry(item, "default", outcome)], policy or RetryPolicy())
    return result


def retry_after(seconds: float) -> RetryPolicy:
    return RetryPolicy(initial_delay=seconds, jitter=0)


async def pending_rows(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM crm_sync_queue WHERE estado = 'pendente' ORDER BY id")


async def make_due(conn: asyncpg.Connection) -> None:
    """Move every scheduled retry to now, instead of sleeping through its delay."""
    await conn.execute("UPDATE crm_sync_queue SET proxima_tentativa = now()")


async def expire_leases(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "UPDATE crm_sync_queue SET lease_ate = now() - interval '1 second'"
        " WHERE estado = 'processando'"
    )


# --- producers -------------------------------------------------------------------------------


async def test_crm_enqueue_function_inserts_one_pending_item(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT crm_enqueue(1, 'clientes', 42, 3, 'upsert')")
    [row] = await pending_rows(conn)
    assert (row["loja_id"], row["entidade"], row["entidade_id"]) == (1, "clientes", 42)
    assert (row["prioridade"], row["acao"], row["tentativas"]) == (3, "upsert", 0)
    assert row["processado"] is False


async def test_old_style_direct_insert_still_works(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, prioridade)"
        " VALUES (2, 'vendas', 7, 5)"
    )
    [row] = await pending_rows(conn)
    assert (row["entidade"], row["entidade_id"], row["acao"]) == ("vendas", 7, "upsert")


async def test_unknown_entity_is_rejected(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("SELECT crm_enqueue(1, 'fornecedores', 1)")


async def test_enqueue_sends_notify_at_commit(conn: asyncpg.Connection, db_dsn: str) -> None:
    listener = await asyncpg.connect(db_dsn)
    got: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("crm_sync", lambda *args: got.put_nowait(args[2]))
    try:
        async with conn.transaction():
            await enqueue(conn, NewItem(1, "clientes", 1))
            await asyncio.sleep(0.05)
            assert got.empty(), "NOTIFY must wait for the commit"
        assert await asyncio.wait_for(got.get(), 2) == "crm_sync"
    finally:
        await listener.close()


async def test_enqueue_again_while_pending_coalesces_at_higher_priority(
    conn: asyncpg.Connection,
) -> None:
    await enqueue(conn, NewItem(1, "clientes", 10, prioridade=3))
    await enqueue(conn, NewItem(1, "clientes", 10, prioridade=5))
    await enqueue(conn, NewItem(1, "clientes", 10, prioridade=1))
    [row] = await pending_rows(conn)
    assert row["prioridade"] == 5
    # Another loja's record with the same id is another record.
    await enqueue(conn, NewItem(2, "clientes", 10))
    assert len(await pending_rows(conn)) == 2


async def test_coalescing_keeps_the_newest_action(conn: asyncpg.Connection) -> None:
    await enqueue(conn, NewItem(1, "produtos", 3))
    await enqueue(conn, NewItem(1, "produtos", 3, acao="delete"))
    [row] = await pending_rows(conn)
    assert row["acao"] == "delete"


async def test_change_while_in_flight_gets_a_new_pending_item(conn: asyncpg.Connection) -> None:
    await enqueue(conn, NewItem(1, "clientes", 10))
    [claimed] = await queue.claim(conn, 10, 60)
    await enqueue(conn, NewItem(1, "clientes", 10))
    [new] = await pending_rows(conn)
    assert new["id"] != claimed.id
    # The in-flight one finishes; the new one is still there to send the newer data.
    assert await settle(conn, claimed, DONE) == "done"
    assert [r["id"] for r in await pending_rows(conn)] == [new["id"]]


async def test_concurrent_producers_of_one_record_leave_one_item(pool: asyncpg.Pool) -> None:
    async def produce(prio: int) -> None:
        async with pool.acquire() as c, c.transaction():
            await enqueue(c, NewItem(1, "vendas", 99, prioridade=prio))
            await asyncio.sleep(0.01)

    await asyncio.gather(*(produce(p) for p in range(1, 9)))
    async with pool.acquire() as c:
        rows = await pending_rows(c)
    assert len(rows) == 1
    assert rows[0]["prioridade"] == 8


async def test_enqueue_many_coalesces_within_and_across_calls(conn: asyncpg.Connection) -> None:
    items = [NewItem(1, "clientes", i) for i in range(100)]
    assert await queue.enqueue_many(conn, items) == 100
    assert await queue.enqueue_many(conn, [*items, NewItem(1, "clientes", 100)]) == 1
    assert len(await pending_rows(conn)) == 101
    assert await queue.enqueue_many(conn, []) == 0


# --- claiming -------------------------------------------------------------------------------


async def test_claim_takes_highest_priority_then_oldest(conn: asyncpg.Connection) -> None:
    for entidade, ident in [
        ("atividades", 1),
        ("clientes", 2),
        ("vendas", 3),
        ("clientes", 4),
        ("vendas", 5),
        ("produtos", 6),
    ]:
        await enqueue(conn, NewItem(1, entidade, ident))
    first = await queue.claim(conn, 3, 60)
    assert [(i.entidade, i.entidade_id) for i in first] == [
        ("vendas", 3),
        ("vendas", 5),
        ("clientes", 2),
    ]
    rest = await queue.claim(conn, 10, 60)
    assert [(i.entidade, i.entidade_id) for i in rest] == [
        ("clientes", 4),
        ("produtos", 6),
        ("atividades", 1),
    ]
    assert all(i.tentativas == 1 for i in first + rest)


async def test_claim_skips_items_not_yet_due(conn: asyncpg.Connection) -> None:
    await enqueue(conn, NewItem(1, "clientes", 1))
    [item] = await queue.claim(conn, 10, 60)
    assert (
        await settle(conn, item, Outcome.failed("boom", retryable=True), retry_after(30)) == "retry"
    )
    assert await queue.claim(conn, 10, 60) == []
    assert 25 < (await queue.next_due_in(conn) or 0) <= 30
    await make_due(conn)
    [again] = await queue.claim(conn, 10, 60)
    assert again.id == item.id and again.tentativas == 2


async def test_concurrent_claimers_never_share_an_item_and_take_them_all(
    pool: asyncpg.Pool,
) -> None:
    total = 3000
    async with pool.acquire() as c:
        await queue.enqueue_many(c, [NewItem(1 + i % 3, "clientes", i) for i in range(total)])

    async def worker() -> list[int]:
        mine: list[int] = []
        while True:
            async with pool.acquire() as c:
                batch = await queue.claim(c, 50, 60)
            if not batch:
                return mine
            mine.extend(i.id for i in batch)

    results = await asyncio.gather(*(worker() for _ in range(8)))
    claimed = [i for r in results for i in r]
    assert len(claimed) == total
    assert len(set(claimed)) == total
    assert sum(1 for r in results if r) > 1, "work should spread over several claimers"


async def test_expired_lease_makes_item_claimable_and_stale_token_is_rejected(
    conn: asyncpg.Connection,
) -> None:
    await enqueue(conn, NewItem(1, "clientes", 5))
    [old] = await queue.claim(conn, 10, 60)
    await queue.start(conn, [old])  # a worker started on it, then died
    assert await queue.claim(conn, 10, 60) == []  # leased
    await expire_leases(conn)
    [new] = await queue.claim(conn, 10, 60)
    assert new.id == old.id and new.lease_token != old.lease_token
    assert new.tentativas == 2
    # The first worker comes back late: every kind of outcome with its token changes nothing.
    late = [
        DONE,
        Outcome.failed("late", retryable=False),
        Outcome.failed("late", retryable=True),
        Outcome.released(),
        Outcome.deferred("aguardando", 5),
        Outcome.postponed("429", 5, http_status=429),
    ]
    assert await queue.settle(conn, [Entry(old, "default", o) for o in late], RetryPolicy()) == [
        "stale"
    ] * len(late)
    row = await conn.fetchrow("SELECT * FROM crm_sync_queue WHERE id = $1", old.id)
    assert row["estado"] == "processando" and row["lease_token"] == new.lease_token
    assert await settle(conn, new, DONE) == "done"


async def test_stale_lease_keeps_the_crm_facts_but_not_the_queue_state(
    conn: asyncpg.Connection,
) -> None:
    """A late worker's create really happened at the CRM: its id and log row are kept, while the
    item stays with the worker that holds it now."""
    await enqueue(conn, NewItem(1, "clientes", 8))
    [old] = await queue.claim(conn, 10, 60)
    await expire_leases(conn)
    [new] = await queue.claim(conn, 10, 60)
    assert await settle(conn, old, Outcome.synced("crm-77", "h", "criado")) == "stale"
    assert (
        await conn.fetchval(
            "SELECT external_id FROM crm_sync_map WHERE entidade = 'clientes' AND entidade_id = 8"
        )
        == "crm-77"
    )
    [log] = await conn.fetch("SELECT * FROM crm_sync_log")
    assert (log["queue_id"], log["status"], log["external_id"]) == (old.id, "sucesso", "crm-77")
    row = await conn.fetchrow("SELECT * FROM crm_sync_queue WHERE id = $1", new.id)
    assert (row["estado"], row["lease_token"]) == ("processando", new.lease_token)


async def test_record_in_flight_is_not_claimed_twice(conn: asyncpg.Connection) -> None:
    await enqueue(conn, NewItem(1, "clientes", 5))
    [first] = await queue.claim(conn, 10, 60)
    await enqueue(conn, NewItem(1, "clientes", 5))  # a newer change, pending
    await enqueue(conn, NewItem(1, "clientes", 6))
    claimed = await queue.claim(conn, 10, 60)
    assert [i.entidade_id for i in claimed] == [6], "the newer item waits for the first"
    assert await settle(conn, first, DONE) == "done"
    [second] = await queue.claim(conn, 10, 60)
    assert second.entidade_id == 5 and second.id != first.id


# --- settling ---------------------------------------------------------------------------------


async def test_synced_outcome_marks_processed_and_stores_the_crm_id(
    conn: asyncpg.Connection,
) -> None:
    await enqueue(conn, NewItem(1, "vendas", 1))
    [item] = await queue.claim(conn, 1, 60)
    assert await settle(conn, item, DONE) == "done"
    row = await conn.fetchrow("SELECT * FROM crm_sync_queue WHERE id = $1", item.id)
    assert row["estado"] == "concluido" and row["processado"] is True
    assert row["processado_em"] is not None and row["lease_token"] is None


async def test_retry_until_max_attempts_then_failed_with_last_error(
    conn: asyncpg.Connection,
) -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=2, multiplier=2, jitter=0)
    await enqueue(conn, NewItem(1, "clientes", 1))
    outcomes = []
    for _ in range(3):
        await make_due(conn)
        [item] = await queue.claim(conn, 1, 60)
        outcomes.append(
            await settle(
                conn, item, Outcome.failed(f"erro {item.tentativas}", retryable=True), policy
            )
        )
    assert outcomes == ["retry", "retry", "failed"]
    row = await conn.fetchrow("SELECT * FROM crm_sync_queue")
    assert (row["estado"], row["tentativas"], row["ultimo_erro"]) == ("falhou", 3, "erro 3")
    await make_due(conn)
    assert await queue.claim(conn, 1, 60) == []


async def test_permanent_error_fails_at_once(conn: asyncpg.Connection) -> None:
    await enqueue(conn, NewItem(1, "clientes", 1))
    [item] = await queue.claim(conn, 1, 60)
    assert await settle(conn, item, Outcome.failed("CPF inválido", retryable=False)) == "failed"
    # A failed item reads tentativas >= 3, as the old guide's queries expect; the log tells the
    # one attempt it really took.
    assert await conn.fetchval("SELECT tentativas FROM crm_sync_queue") == 3
    assert await conn.fetchval("SELECT tentativa FROM crm_sync_log") == 1


async def test_reschedule_sets_next_attempt_after_delay(conn: asyncpg.Connection) -> None:
    await enqueue(conn, NewItem(1, "clientes", 1))
    [item] = await queue.claim(conn, 1, 60)
    assert (
        await settle(conn, item, Outcome.failed("timeout", retryable=True), retry_after(8))
        == "retry"
    )
    wait = await conn.fetchval(
        "SELECT EXTRACT(EPOCH FROM proxima_tentativa - now())::float8 FROM crm_sync_queue"
    )
    assert 7.0 < wait <= 8.0


async def test_release_gives_item_back_without_spending_the_attempt(
    conn: asyncpg.Connection,
) -> None:
    await enqueue(conn, NewItem(1, "clientes", 1))
    [item] = await queue.claim(conn, 1, 60)
    assert await settle(conn, item, Outcome.released("conta pausada")) == "released"
    row = await conn.fetchrow("SELECT * FROM crm_sync_queue")
    assert (row["estado"], row["tentativas"], row["ultimo_erro"]) == (
        "pendente",
        0,
        "conta pausada",
    )
    [again] = await queue.claim(conn, 1, 60)
    assert again.tentativas == 1


def test_retry_delays_grow_by_the_multiplier_with_bounded_jitter() -> None:
    exact = RetryPolicy(initial_delay=2, multiplier=2, jitter=0)
    assert [exact.delay(n) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    capped = RetryPolicy(initial_delay=2, multiplier=10, max_delay=50, jitter=0)
    assert capped.delay(5) == 50
    jittered = RetryPolicy(initial_delay=2, multiplier=2, jitter=0.1)
    rng = random.Random(1)
    samples = [jittered.delay(3, rng) for _ in range(200)]
    assert all(7.2 <= s <= 8.8 for s in samples)
    assert len({round(s, 6) for s in samples}) > 100, "jitter must spread retries"


async def test_an_attempt_is_spent_when_a_worker_starts_not_when_it_claims(
    conn: asyncpg.Connection,
) -> None:
    """Items a killed process held only in its buffer spend nothing."""
    await enqueue(conn, NewItem(1, "clientes", 1))
    [buffered] = await queue.claim(conn, 1, 60)
    assert buffered.tentativas == 1  # the attempt it is about to be
    await expire_leases(conn)
    [again] = await queue.claim(conn, 1, 60)
    assert again.tentativas == 1
    await queue.start(conn, [again])
    await queue.start(conn, [buffered])  # a stale token: counts nothing
    assert await conn.fetchval("SELECT tentativas FROM crm_sync_queue") == 1


async def test_claim_uses_the_partial_index(conn: asyncpg.Connection) -> None:
    """With many done rows, the claim's scan reads the partial index, not the table."""
    await conn.execute(
        "INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, estado)"
        " SELECT 1, 'clientes', g, 'concluido' FROM generate_series(1, 20000) g"
    )
    await queue.enqueue_many(conn, [NewItem(1, "vendas", i) for i in range(50)])
    await conn.execute("ANALYZE crm_sync_queue")

    # EXPLAIN without ANALYZE plans the claim without running it.
    text = str(await conn.fetchval("EXPLAIN (FORMAT JSON) " + queries["claim"], 10, 60.0))
    assert "crm_sync_queue_claim_idx" in text
    assert "Seq Scan" not in text


async def test_crm_enqueue_accepts_named_arguments(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "SELECT crm_enqueue(loja_id => 1, entidade => 'clientes', entidade_id => 42)"
    )
    await conn.execute("SELECT crm_enqueue(1, 'produtos', 7, 3, 'delete')")
    rows = await pending_rows(conn)
    assert [(r["entidade"], r["entidade_id"], r["prioridade"], r["acao"]) for r in rows] == [
        ("clientes", 42, 3, "upsert"),
        ("produtos", 7, 3, "delete"),
    ]


async def test_next_due_in_is_none_when_nothing_waits_or_is_in_flight(
    conn: asyncpg.Connection,
) -> None:
    assert await queue.next_due_in(conn) is None
    await enqueue(conn, NewItem(1, "clientes", 1))
    assert await queue.next_due_in(conn) == 0.0
    [item] = await queue.claim(conn, 1, 60)
    # In flight: due again when its lease runs out (a dead worker's item is taken again then).
    assert 55 < (await queue.next_due_in(conn) or 0) <= 60
    assert await settle(conn, item, DONE) == "done"
    assert await queue.next_due_in(conn) is None


async def test_requeue_merges_into_a_newer_pending_item_of_the_record(
    conn: asyncpg.Connection,
) -> None:
    await enqueue(conn, NewItem(1, "clientes", 7, prioridade=5))
    [item] = await queue.claim(conn, 1, 60)
    await enqueue(conn, NewItem(1, "clientes", 7, prioridade=2))  # a newer change
    assert (
        await settle(conn, item, Outcome.failed("timeout", retryable=True), retry_after(30))
        == "retry"
    )
    [row] = await conn.fetch("SELECT * FROM crm_sync_queue")
    assert row["id"] != item.id, "the newer item carries the record forward"
    assert (row["estado"], row["prioridade"]) == ("pendente", 5)


async def test_one_transaction_may_enqueue_any_number_of_records(
    conn: asyncpg.Connection,
) -> None:
    """Coalescing takes no lock per record, so a big producer transaction cannot exhaust the
    server's lock table (max_locks_per_transaction)."""
    async with conn.transaction():
        await conn.execute("SELECT crm_enqueue(1, 'clientes', g) FROM generate_series(1, 30000) g")
        await conn.execute(
            "INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id)"
            " SELECT 1, 'clientes', g FROM generate_series(1, 30000) g"
        )
    assert await conn.fetchval("SELECT count(*) FROM crm_sync_queue") == 30000
