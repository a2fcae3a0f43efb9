"""Nothing wedges, nothing is lost or doubled: poisoned rows, slow and failing CRMs, crashes in a
create, twins, vanished dependencies. Against a real PostgreSQL and the development CRM."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from crmd.config import Settings
from crmd.crm.accounts import build_accounts, close_accounts
from crmd.crm.limiter import RateLimiter, max_in_window
from crmd.dev.devcrm.server import DevCrm, DevCrmConfig
from crmd.model import Entry, Outcome, RetryPolicy
from crmd.ops.status import report
from crmd.service.startup import run_once
from crmd.store import queue

TOKENS = {"access_token": "tok-rel", "secret_access_token": "sec-rel"}


@pytest.fixture
async def crm() -> AsyncIterator[DevCrm]:
    async with DevCrm(DevCrmConfig(**TOKENS, limits=())) as server:
        yield server


def settings_for(db_dsn: str, server: DevCrm, **sections: dict[str, Any]) -> Settings:
    base: dict[str, dict[str, Any]] = {
        "database": {"dsn": db_dsn},
        "crm": {"base_url": server.url, **TOKENS, "limits": [{"requests": 1000, "per_seconds": 1}]},
        "queue": {"retry_initial_delay_seconds": 0.1, "retry_jitter": 0},
        "sync": {"dependency_wait_seconds": 0.2},
    }
    for name, keys in sections.items():
        base.setdefault(name, {}).update(keys)
    return Settings(**base)


async def add_loja(conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO lojas (id, nome) VALUES (1, 'Centro') ON CONFLICT DO NOTHING")


async def add_cliente(
    conn: asyncpg.Connection, ident: int, nome: str, cpf: str | None = None, **more: Any
) -> None:
    columns = ["id", "loja_id", "tipo_pessoa", "nome", "cpf", *more]
    values = [ident, 1, "PF", nome, cpf, *more.values()]
    marks = ", ".join(f"${n}" for n in range(1, len(values) + 1))
    await conn.execute(f"INSERT INTO clientes ({', '.join(columns)}) VALUES ({marks})", *values)


async def item_of(conn: asyncpg.Connection, entidade: str, ident: int) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        "SELECT * FROM crm_sync_queue WHERE entidade = $1 AND entidade_id = $2"
        " ORDER BY id DESC LIMIT 1",
        entidade,
        ident,
    )
    return row


async def drain(settings: Settings, timeout: float = 20.0) -> None:
    """`crmd run --once` again and again until no item waits or is in flight."""
    conn = await asyncpg.connect(settings.database.dsn)
    deadline = time.monotonic() + timeout
    try:
        while True:
            await run_once(settings)
            open_items = await conn.fetchval(
                "SELECT count(*) FROM crm_sync_queue WHERE estado IN ('pendente', 'processando')"
            )
            if not open_items:
                return
            assert time.monotonic() < deadline, f"{open_items} items still open"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


# --- 1. a poisoned row fails alone, naming the column ---------------------------------------


async def test_an_undecodable_row_fails_its_item_alone_naming_the_column(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    await add_loja(conn)
    await add_cliente(conn, 1, "Cliente da venda", "529.982.247-25")
    await conn.execute(
        "INSERT INTO vendas (id, loja_id, cliente_id, data) VALUES (7, 1, 1, '12000-01-01')"
    )
    for n in range(2, 8):
        await add_cliente(conn, n, f"Cliente {n}")

    await drain(settings_for(db_dsn, crm))

    venda = await item_of(conn, "vendas", 7)
    assert venda["estado"] == "falhou"
    assert "coluna data" in venda["ultimo_erro"] and "12000" in venda["ultimo_erro"]
    states = await conn.fetch(
        "SELECT DISTINCT estado FROM crm_sync_queue WHERE entidade = 'clientes'"
    )
    assert [r["estado"] for r in states] == ["concluido"]
    assert len(crm.records("clientes")) == 7


async def test_unusable_values_fail_before_reaching_the_crm_and_odd_text_goes_through(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    await add_loja(conn)
    await conn.execute(
        """INSERT INTO produtos (id, loja_id, codigo_interno, nome, valor_custo, valor_venda)
           VALUES (1, 1, 'P-1', 'Preço NaN', 1, 'NaN')"""
    )
    await add_cliente(conn, 1, "x" * 100_000)
    await add_cliente(conn, 2, "Zé \u0007 da Esquina 🍕 \u200b", "529.982.247-25")

    await drain(settings_for(db_dsn, crm))

    produto = await item_of(conn, "produtos", 1)
    assert produto["estado"] == "falhou" and "coluna valor_venda" in produto["ultimo_erro"]
    huge = await item_of(conn, "clientes", 1)
    assert huge["estado"] == "falhou" and "coluna nome: texto de 100.000" in huge["ultimo_erro"]
    assert (await item_of(conn, "clientes", 2))["estado"] == "concluido"
    [sent] = crm.records("clientes")
    assert sent["nome"] == "Zé \u0007 da Esquina 🍕 \u200b"
    assert not [e for e in crm.ledger if "produtos" in e.path]  # never sent


async def test_a_source_query_the_database_refuses_fails_its_items_and_not_the_rest(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    await add_loja(conn)
    await add_cliente(conn, 1, "Ana")
    await conn.execute(
        """INSERT INTO produtos (id, loja_id, codigo_interno, nome, valor_custo)
           VALUES (1, 1, 'P-1', 'Café', 1)"""
    )
    broken = "SELECT id, nonexistent FROM produtos WHERE id = ANY($1::bigint[])"

    await drain(settings_for(db_dsn, crm, sources={"produtos": broken}))

    produto = await item_of(conn, "produtos", 1)
    assert produto["estado"] == "falhou"
    assert "consulta de produtos foi recusada" in produto["ultimo_erro"]
    assert (await item_of(conn, "clientes", 1))["estado"] == "concluido"


# --- 2. a slow CRM: leases are kept while items wait and are in flight -------------------------


async def test_a_slow_crm_never_loses_a_lease(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    crm.set_faults(latency=0.7)  # each item: a lookup and a create, 1.4 s, against a 1.5 s lease
    await add_loja(conn)
    for n in range(1, 9):
        await add_cliente(conn, n, f"Cliente {n}", None)
    settings = settings_for(
        db_dsn,
        crm,
        queue={"lease_seconds": 1.5},
        crm={"concurrency": 2},
        sync={"lookup_unknown": False},
    )

    stats = await run_once(settings)

    assert stats.succeeded == 8
    rows = await conn.fetch("SELECT estado, tentativas FROM crm_sync_queue")
    assert [(r["estado"], r["tentativas"]) for r in rows] == [("concluido", 1)] * 8
    assert len(crm.records("clientes")) == 8  # each created once: no second worker took one
    log = await conn.fetch("SELECT queue_id FROM crm_sync_log")
    assert len(log) == 8


# --- 3. an outage of the CRM spends no record's attempts ---------------------------------------


async def test_an_outage_of_the_crm_spends_no_attempts_and_everything_gets_through(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    await add_loja(conn)
    for n in range(1, 13):
        await add_cliente(conn, n, f"Cliente {n}", None)
    crm.set_faults(outage_seconds=2.0)
    settings = settings_for(
        db_dsn,
        crm,
        queue={"max_attempts": 2},
        sync={"failure_pause_seconds": 0.3, "breaker_threshold": 3, "lookup_unknown": False},
    )

    await drain(settings)

    rows = await conn.fetch("SELECT estado, tentativas FROM crm_sync_queue")
    assert {r["estado"] for r in rows} == {"concluido"}, rows
    assert len(crm.records("clientes")) == 12
    refused = [e for e in crm.ledger if e.status == 503]
    assert refused, "the outage was seen"
    # Every 503 is in the log (the budget is counted from it); none spent more than one attempt.
    errors = await conn.fetchval("SELECT count(*) FROM crm_sync_log WHERE http_status = 503")
    assert errors == len(refused)
    assert max(r["tentativas"] for r in rows) <= 2


async def test_a_lone_503_spends_no_attempt_even_right_after_an_answer(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    # One attempt only: under the old rule the first 503 after an answer spent it, and a flaky
    # CRM (one 503 in ten) failed records for good after three unlucky tries.
    await add_loja(conn)
    await add_cliente(conn, 1, "Cliente 1", None)
    crm.set_faults(outage_seconds=0.3)
    settings = settings_for(
        db_dsn,
        crm,
        queue={"max_attempts": 1},
        sync={"dependency_wait_seconds": 0.2, "lookup_unknown": False},
    )

    await drain(settings)

    row = await conn.fetchrow("SELECT estado, tentativas FROM crm_sync_queue")
    assert (row["estado"], row["tentativas"]) == ("concluido", 1), dict(row)
    assert any(e.status == 503 for e in crm.ledger), "the 503 was seen"
    assert len(crm.records("clientes")) == 1


def test_answers_of_one_episode_step_the_pause_once(db_dsn: str) -> None:
    settings = Settings(
        database={"dsn": db_dsn},
        crm={**TOKENS, "limits": [{"requests": 10, "per_seconds": 1}]},
    )
    account = build_accounts(settings)["default"]
    first = [account.pause(1.0, 60, "429") for _ in range(6)]  # six 429s of one burst
    assert max(first) == pytest.approx(1.0, abs=0.01)
    assert account.consecutive_pauses == 1
    account.limiter.resume()
    second = account.pause(1.0, 60, "429 again")  # the next episode: one step further
    assert second == pytest.approx(2.0, abs=0.01)
    asyncio.run(close_accounts({"default": account}))


async def test_after_a_pause_one_request_goes_first_and_the_rest_wait_for_its_answer() -> None:
    limiter = RateLimiter([(10, 1.0)])
    limiter.pause(0.1, "429")
    out: list[float] = []
    came_back: list[float] = []

    async def request(hold: float) -> None:
        async with limiter.slot():
            out.append(time.monotonic())
            await asyncio.sleep(hold)
        came_back.append(time.monotonic())

    await asyncio.gather(request(0.2), *(request(0.0) for _ in range(3)))

    assert len(out) == 4
    assert all(t >= came_back[0] - 0.001 for t in out[1:]), "the others waited for the probe"


# --- 7, 8, 9: twins, vanished dependencies, creates in doubt ------------------------------------


async def test_a_twin_is_never_linked_onto_another_records_crm_entry(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    await add_loja(conn)
    await add_cliente(conn, 1, "Ana Original", "529.982.247-25")
    settings = settings_for(db_dsn, crm)
    await drain(settings)
    await add_cliente(conn, 2, "Gêmea de CPF", "529.982.247-25")

    await drain(settings)

    twin = await item_of(conn, "clientes", 2)
    assert twin["estado"] == "falhou"
    assert "já está vinculado a clientes 1" in twin["ultimo_erro"]
    assert "clientes 2 não foi vinculado" in twin["ultimo_erro"]
    [only] = crm.records("clientes")
    assert only["nome"] == "Ana Original"  # not overwritten


async def test_the_database_refuses_a_second_link_to_one_crm_record(
    conn: asyncpg.Connection,
) -> None:
    """Two twins that raced past the engine's check: the second settles as failed, naming the
    first, and the batch's other outcomes are written."""
    for n in (1, 2, 3):
        await conn.execute("SELECT crm_enqueue(1, 'clientes', $1)", n)
    items = await queue.claim(conn, 10, 60)
    entries = [
        Entry(items[0], "default", Outcome.synced("crm-9", "h", "criado")),
        Entry(items[1], "default", Outcome.synced("crm-9", "h", "vinculado")),
        Entry(items[2], "default", Outcome.synced("crm-10", "h", "criado")),
    ]
    assert await queue.settle(conn, entries, RetryPolicy()) == ["done", "failed", "done"]
    second = await conn.fetchrow("SELECT * FROM crm_sync_queue WHERE id = $1", items[1].id)
    assert second["estado"] == "falhou"
    assert "já está vinculado a clientes 1" in second["ultimo_erro"]


async def test_a_venda_whose_cliente_is_gone_fails_at_once_naming_it(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    await add_loja(conn)
    await add_cliente(conn, 1, "Ana", "529.982.247-25")
    await conn.execute("INSERT INTO vendas (id, loja_id, cliente_id, data) VALUES (5, 1, 1, now())")
    await conn.execute("UPDATE clientes SET deleted_at = now() WHERE id = 1")
    await conn.execute("DELETE FROM crm_sync_queue WHERE entidade = 'clientes'")

    started = time.monotonic()
    await drain(settings_for(db_dsn, crm))

    venda = await item_of(conn, "vendas", 5)
    assert venda["estado"] == "falhou"
    assert "clientes 1, que não existe mais no ERP" in venda["ultimo_erro"]
    assert venda["adiamentos"] == 0
    assert time.monotonic() - started < 5


async def test_a_create_in_doubt_without_a_key_is_not_sent_again_and_is_listed(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    await add_loja(conn)
    await add_cliente(conn, 1, "Sem Documento")
    # As a crash between the marker and the answer leaves it: the POST may have gone through.
    await conn.execute(
        "INSERT INTO crm_sync_map (conta, entidade, entidade_id) VALUES ('default', 'clientes', 1)"
    )

    await drain(settings_for(db_dsn, crm))

    item = await item_of(conn, "clientes", 1)
    assert item["estado"] == "falhou" and "criação incerta" in item["ultimo_erro"]
    assert crm.ledger == []  # nothing sent: a second create could duplicate it
    status = await report(conn)
    assert [(u.entidade, u.entidade_id) for u in status.uncertain_creates] == [("clientes", 1)]


async def test_a_delete_after_a_create_in_doubt_finds_the_record_by_its_key(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    await add_loja(conn)
    await add_cliente(conn, 1, "Ana", "529.982.247-25")
    created = crm.store.create(
        "clientes", {"tipo_pessoa": "PF", "nome": "Ana", "cpf": "529.982.247-25"}
    )
    await conn.execute(
        "INSERT INTO crm_sync_map (conta, entidade, entidade_id, chave)"
        " VALUES ('default', 'clientes', 1, '52998224725')"
    )
    await conn.execute("DELETE FROM crm_sync_queue")
    await conn.execute("DELETE FROM clientes WHERE id = 1")
    await conn.execute("SELECT crm_enqueue(1, 'clientes', 1, 3, 'delete')")

    await drain(settings_for(db_dsn, crm))

    assert (await item_of(conn, "clientes", 1))["estado"] == "concluido"
    assert crm.store.get("clientes", created["id"])["ativo"] == "0"  # on_delete = "inactivate"
    linked = await conn.fetchval("SELECT external_id FROM crm_sync_map WHERE entidade_id = 1")
    assert linked == created["id"]


# --- 13, 16: one item per record in flight; no endless claims ----------------------------------


async def test_an_expired_lease_and_a_newer_item_of_the_record_are_never_claimed_together(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("SELECT crm_enqueue(1, 'vendas', 165)")
    [first] = await queue.claim(conn, 10, 60)
    await conn.execute("UPDATE crm_sync_queue SET lease_ate = now() - interval '1 s'")
    await conn.execute("SELECT crm_enqueue(1, 'vendas', 165)")  # a newer change, pending

    claimed = await queue.claim(conn, 10, 60)

    assert [i.id for i in claimed] == [first.id]
    assert await queue.claim(conn, 10, 60) == []


async def test_an_item_that_kills_every_process_ends_failed_after_its_attempts(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    await add_loja(conn)
    await add_cliente(conn, 1, "Ana", "529.982.247-25")
    for _ in range(3):  # three processes started on it and died before any outcome
        await queue.start(conn, await queue.claim(conn, 10, 60))
        await conn.execute("UPDATE crm_sync_queue SET lease_ate = now() - interval '1 s'")

    await drain(settings_for(db_dsn, crm))

    item = await item_of(conn, "clientes", 1)
    assert item["estado"] == "falhou"
    assert "processo interrompido durante o envio (3 tentativas)" in item["ultimo_erro"]
    assert crm.ledger == []


# --- 12: the recorder writes what the database would refuse -----------------------------------


async def test_an_outcome_with_a_nul_byte_and_a_huge_message_is_written(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("SELECT crm_enqueue(1, 'clientes', 1)")
    [item] = await queue.claim(conn, 1, 60)
    message = "CRM disse: \x00 " + "x" * 10_000
    outcome = Outcome.failed(message, retryable=False, http_status=422)
    assert await queue.settle(conn, [Entry(item, "default", outcome)], RetryPolicy()) == ["failed"]
    stored = await conn.fetchval("SELECT mensagem FROM crm_sync_log")
    assert "\x00" not in stored and len(stored) <= 2000


# --- 10: a request holds its place in the windows until its answer ------------------------------


async def test_a_slow_answer_keeps_its_slot_until_it_comes_back() -> None:
    limiter = RateLimiter([(2, 0.3)])
    granted: list[float] = []
    answered: list[float] = []

    async def request(hold: float) -> None:
        async with limiter.slot():
            granted.append(time.monotonic())
            await asyncio.sleep(hold)
        answered.append(time.monotonic())

    await asyncio.gather(request(0.4), request(0.4), request(0.0))

    first_answer = min(answered[:2])
    assert granted[2] >= first_answer + 0.3 - 0.01  # a window after an answer, not a grant
    assert max_in_window(sorted(granted), 0.3) <= 2


async def test_a_give_back_with_no_known_delay_is_written_not_refused(
    conn: asyncpg.Connection,
) -> None:
    """A limiter waiting for a request in flight has no finite delay to give; the store puts the
    item off by a bounded amount instead of failing the whole group's statement."""
    await conn.execute("SELECT crm_enqueue(1, 'clientes', 1), crm_enqueue(1, 'clientes', 2)")
    items = await queue.claim(conn, 10, 60)
    outcomes = [Outcome.released("probe out", float("inf")), Outcome.released("nan", float("nan"))]
    entries = [Entry(i, "default", o) for i, o in zip(items, outcomes, strict=True)]
    assert await queue.settle(conn, entries, RetryPolicy()) == ["released", "released"]
    assert await conn.fetchval("SELECT count(*) FROM crm_sync_queue WHERE estado = 'pendente'") == 2
