"""The sync engine against `crmd dev crm` on 127.0.0.1 and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from crmd.config import Settings
from crmd.dev.devcrm.ledger import max_in_window
from crmd.dev.devcrm.server import DevCrm, DevCrmConfig
from crmd.dev.devcrm.store import SITUACOES
from crmd.ops import status
from crmd.service.startup import run_once

TOKENS = {"access_token": "tok-test", "secret_access_token": "sec-test"}
SITUACAO = SITUACOES[1][0]  # the development account's own id: "1" is not one
CANCELADA = SITUACOES[2][0]


@pytest.fixture
async def crm() -> AsyncIterator[DevCrm]:
    async with DevCrm(
        DevCrmConfig(
            access_token=TOKENS["access_token"],
            secret_access_token=TOKENS["secret_access_token"],
            limits=(),
        )
    ) as server:
        yield server


def make_settings(db_dsn: str, server: DevCrm, **overrides: Any) -> Settings:
    crm_section: dict[str, Any] = {
        "base_url": server.url,
        **TOKENS,
        "limits": [{"requests": 1000, "per_seconds": 1}],
        "concurrency": 4,
        "venda_situacao_id": SITUACAO,
        "situacoes": {"concretizada": SITUACAO},
        **overrides.pop("crm", {}),
    }
    queue = {"retry_initial_delay_seconds": 0.1, "retry_jitter": 0, **overrides.pop("queue", {})}
    sync = {"dependency_wait_seconds": 0.2, "auth_pause_seconds": 30, **overrides.pop("sync", {})}
    return Settings(database={"dsn": db_dsn}, crm=crm_section, queue=queue, sync=sync, **overrides)


@pytest.fixture
def settings(db_dsn: str, crm: DevCrm) -> Settings:
    return make_settings(db_dsn, crm)


async def seed_small(conn: asyncpg.Connection) -> None:
    """One loja, two clientes, two produtos and a venda of both produtos to the first cliente."""
    await conn.execute("INSERT INTO lojas (id, nome) VALUES (1, 'Loja Centro')")
    await conn.execute(
        """INSERT INTO clientes (id, loja_id, tipo_pessoa, nome, cpf, cnpj, email, cidade, uf)
           VALUES (1, 1, 'PF', 'Maria Souza', '529.982.247-25', NULL, 'maria@example.com',
                   'Recife', 'PE'),
                  (2, 1, 'PJ', 'Padaria Boa Massa', NULL, '11.222.333/0001-81', NULL,
                   'Natal', 'RN')"""
    )
    await conn.execute(
        """INSERT INTO produtos (id, loja_id, codigo_interno, nome, valor_custo, valor_venda,
                                 estoque)
           VALUES (1, 1, 'P-001', 'Café 500g', 10.5, 18.9, 40),
                  (2, 1, 'P-002', 'Açúcar 1kg', 3.2, 5.99, 100)"""
    )
    await conn.execute(
        """INSERT INTO vendas (id, loja_id, cliente_id, data, valor_total)
           VALUES (1, 1, 1, '2026-11-20', 43.78)"""
    )
    await conn.execute(
        """INSERT INTO venda_itens (venda_id, produto_id, quantidade, valor_venda)
           VALUES (1, 1, 2, 18.9), (1, 2, 1, 5.98)"""
    )


async def drain(settings: Settings, rounds: int = 5) -> None:
    """`crmd run --once`, repeated until nothing is due, as a cron deployment would."""
    for _ in range(rounds):
        stats = await run_once(settings)
        if stats.claimed == 0:
            return


async def queue_states(conn: asyncpg.Connection) -> dict[tuple[str, int], str]:
    rows = await conn.fetch(
        "SELECT DISTINCT ON (entidade, entidade_id) entidade, entidade_id, estado"
        " FROM crm_sync_queue ORDER BY entidade, entidade_id, id DESC"
    )
    return {(r["entidade"], r["entidade_id"]): r["estado"] for r in rows}


async def mapped(conn: asyncpg.Connection, entidade: str, entidade_id: int) -> str | None:
    value = await conn.fetchval(
        "SELECT external_id FROM crm_sync_map WHERE entidade = $1 AND entidade_id = $2",
        entidade,
        entidade_id,
    )
    return None if value is None else str(value)


def requests(crm: DevCrm, method: str | None = None, prefix: str = "") -> list[str]:
    return [
        f"{e.method} {e.path}"
        for e in crm.ledger
        if (method is None or e.method == method) and e.path.startswith(prefix)
    ]


async def make_due(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "UPDATE crm_sync_queue SET proxima_tentativa = now() WHERE estado = 'pendente'"
    )


# --- the whole flow ---------------------------------------------------------------------------


async def test_syncs_every_record_once_and_logs_every_attempt(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await seed_small(conn)
    await drain(settings)

    assert set((await queue_states(conn)).values()) == {"concluido"}
    clientes = {c["nome"]: c for c in crm.records("clientes")}
    produtos = {p["codigo_interno"]: p for p in crm.records("produtos")}
    [venda] = crm.records("vendas")
    assert set(clientes) == {"Maria Souza", "Padaria Boa Massa"}
    assert clientes["Maria Souza"]["cpf"] == "529.982.247-25"
    assert clientes["Padaria Boa Massa"]["tipo_pessoa"] == "PJ"
    assert set(produtos) == {"P-001", "P-002"}
    assert produtos["P-001"]["valor_custo"].startswith("10.50")
    # The venda refers to the CRM's ids of its cliente and produtos, not the ERP's.
    assert venda["cliente_id"] == await mapped(conn, "clientes", 1)
    item_ids = sorted(str(p["produto"]["produto_id"]) for p in venda["produtos"])
    assert item_ids == sorted(
        [await mapped(conn, "produtos", 1), await mapped(conn, "produtos", 2)]
    )
    # Exactly one creation per record: no duplicates.
    assert len(requests(crm, "POST")) == 5
    # Every attempt is in the log; every success holds its CRM id.
    log = await conn.fetch("SELECT * FROM crm_sync_log ORDER BY id")
    assert {r["status"] for r in log} == {"sucesso"}
    assert sum(r["requisicoes"] for r in log) == len(crm.ledger)
    assert all(r["external_id"] for r in log)


async def test_update_goes_out_as_put_and_unchanged_payload_is_skipped(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await seed_small(conn)
    await drain(settings)
    before = len(crm.ledger)
    ext = await mapped(conn, "clientes", 1)

    await conn.execute("UPDATE clientes SET nome = 'Maria S. Lima' WHERE id = 1")
    await drain(settings)
    assert requests(crm)[before:] == [f"PUT /clientes/{ext}"]
    [maria] = [c for c in crm.records("clientes") if c["id"] == ext]
    assert maria["nome"] == "Maria S. Lima"

    # A change the CRM does not see (updated_at only) costs no request.
    await conn.execute("UPDATE clientes SET updated_at = now() + interval '1 minute'")
    await drain(settings)
    assert len(crm.ledger) == before + 1
    last = await conn.fetchrow("SELECT * FROM crm_sync_log ORDER BY id DESC LIMIT 1")
    assert last["status"] == "sucesso" and last["requisicoes"] == 0
    assert "sem alterações" in last["mensagem"]


async def test_skip_unchanged_can_be_switched_off(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    settings = make_settings(db_dsn, crm, sync={"skip_unchanged": False})
    await seed_small(conn)
    await drain(settings)
    before = len(crm.ledger)
    await conn.execute("UPDATE produtos SET updated_at = now() + interval '1 minute'")
    await drain(settings)
    assert sorted(requests(crm)[before:]) == sorted(
        [
            f"PUT /produtos/{await mapped(conn, 'produtos', 1)}",
            f"PUT /produtos/{await mapped(conn, 'produtos', 2)}",
        ]
    )


async def test_soft_and_hard_deletes_inactivate_the_crm_record_by_default(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await seed_small(conn)
    await drain(settings)
    cliente_ext = await mapped(conn, "clientes", 2)
    produto_ext = await mapped(conn, "produtos", 2)
    before = len(crm.ledger)

    await conn.execute("UPDATE clientes SET deleted_at = now() WHERE id = 2")
    await conn.execute("DELETE FROM venda_itens WHERE produto_id = 2")
    await conn.execute("DELETE FROM produtos WHERE id = 2")
    await drain(settings)

    # GET the record, then a complete PUT (the fields a PUT requires, as the CRM holds them);
    # the venda that lost an item is updated too.
    assert sorted(requests(crm)[before:]) == sorted(
        [
            f"GET /clientes/{cliente_ext}",
            f"PUT /clientes/{cliente_ext}",
            f"GET /produtos/{produto_ext}",
            f"PUT /produtos/{produto_ext}",
            f"PUT /vendas/{await mapped(conn, 'vendas', 1)}",
        ]
    )
    assert "DELETE" not in {e.method for e in crm.ledger}
    cliente = crm.store.get("clientes", str(cliente_ext))
    produto = crm.store.get("produtos", str(produto_ext))
    assert (cliente["ativo"], cliente["nome"], cliente["cnpj"]) == (
        "0",
        "Padaria Boa Massa",
        "11.222.333/0001-81",
    )
    assert (produto["ativo"], produto["valor_venda"]) == ("0", "5.9900")
    # Still linked: if the record comes back in the ERP it is updated (and active), not created.
    assert await mapped(conn, "clientes", 2) == cliente_ext
    await conn.execute("UPDATE clientes SET deleted_at = NULL WHERE id = 2")
    await drain(settings)
    assert crm.store.get("clientes", str(cliente_ext))["ativo"] == "1"
    assert len(requests(crm, "POST")) == 5


async def test_an_inactivated_record_is_not_put_again(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await seed_small(conn)
    await drain(settings)
    ext = await mapped(conn, "clientes", 2)
    crm.store.update("clientes", str(ext), {"tipo_pessoa": "PJ", "nome": "X", "ativo": "0"})
    before = len(crm.ledger)
    await conn.execute("SELECT crm_enqueue(1, 'clientes', 2, 3, 'delete')")
    await drain(settings)

    assert requests(crm)[before:] == [f"GET /clientes/{ext}"]


async def test_a_deleted_venda_gets_the_configured_cancel_situacao(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    settings = make_settings(db_dsn, crm, crm={"venda_situacao_cancelada_id": CANCELADA})
    await seed_small(conn)
    await drain(settings)
    ext = await mapped(conn, "vendas", 1)
    await conn.execute("UPDATE vendas SET deleted_at = now() WHERE id = 1")
    await drain(settings)

    venda = crm.store.get("vendas", str(ext))
    assert (venda["situacao_id"], venda["codigo"]) == (CANCELADA, "crmd-1")
    assert len(venda["produtos"]) == 2  # a PUT without items leaves them as they were


async def test_a_deleted_venda_without_a_cancel_situacao_fails_naming_the_key(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await seed_small(conn)
    await drain(settings)
    await conn.execute("UPDATE vendas SET deleted_at = now() WHERE id = 1")
    await drain(settings)

    row = await conn.fetchrow(
        "SELECT estado, ultimo_erro FROM crm_sync_queue"
        " WHERE entidade = 'vendas' AND acao = 'delete'"
    )
    assert row["estado"] == "falhou"
    assert "[crm] venda_situacao_cancelada_id" in row["ultimo_erro"]
    assert len(crm.records("vendas")) == 1


async def test_on_delete_delete_removes_the_crm_record(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    settings = make_settings(db_dsn, crm, sync={"on_delete": "delete"})
    await seed_small(conn)
    await drain(settings)
    cliente_ext = await mapped(conn, "clientes", 2)
    produto_ext = await mapped(conn, "produtos", 2)

    await conn.execute("UPDATE clientes SET deleted_at = now() WHERE id = 2")
    await conn.execute("DELETE FROM venda_itens WHERE produto_id = 2")
    await conn.execute("DELETE FROM produtos WHERE id = 2")
    await drain(settings)

    assert f"DELETE /clientes/{cliente_ext}" in requests(crm, "DELETE")
    assert f"DELETE /produtos/{produto_ext}" in requests(crm, "DELETE")
    assert {c["id"] for c in crm.records("clientes")} == {await mapped(conn, "clientes", 1)}
    assert await mapped(conn, "clientes", 2) is None


async def test_on_delete_ignore_sends_nothing_and_keeps_the_link(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    settings = make_settings(db_dsn, crm, sync={"on_delete": "ignore"})
    await seed_small(conn)
    await drain(settings)
    ext = await mapped(conn, "clientes", 2)
    before = len(crm.ledger)

    await conn.execute("UPDATE clientes SET deleted_at = now() WHERE id = 2")
    await drain(settings)

    assert crm.ledger[before:] == []
    assert crm.store.get("clientes", str(ext))["ativo"] == "1"
    assert await mapped(conn, "clientes", 2) == ext
    last = await conn.fetchrow("SELECT * FROM crm_sync_log ORDER BY id DESC LIMIT 1")
    assert (last["status"], last["requisicoes"]) == ("sucesso", 0)
    assert "on_delete" in last["mensagem"]


async def test_delete_of_a_record_already_gone_counts_as_success(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await seed_small(conn)
    await drain(settings)
    ext = await mapped(conn, "produtos", 1)
    crm.store.delete("produtos", str(ext))  # someone removed it in the CRM by hand
    await conn.execute("SELECT crm_enqueue(1, 'produtos', 1, 3, 'delete')")
    await drain(settings)
    last = await conn.fetchrow("SELECT * FROM crm_sync_log ORDER BY id DESC LIMIT 1")
    assert (last["status"], last["http_status"]) == ("sucesso", 404)
    assert await mapped(conn, "produtos", 1) is None


async def test_links_an_existing_crm_record_by_natural_key_instead_of_duplicating(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    existing = crm.store.create(
        "clientes", {"tipo_pessoa": "PF", "nome": "Maria (cadastro manual)", "cpf": "52998224725"}
    )
    await seed_small(conn)
    await drain(settings)
    assert await mapped(conn, "clientes", 1) == existing["id"]
    assert f"PUT /clientes/{existing['id']}" in requests(crm, "PUT")
    marias = [c for c in crm.records("clientes") if c.get("cpf")]
    assert len(marias) == 1 and marias[0]["nome"] == "Maria Souza"


async def test_recreates_a_record_deleted_in_the_crm(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await seed_small(conn)
    await drain(settings)
    old = await mapped(conn, "produtos", 1)
    crm.store.delete("produtos", str(old))
    await conn.execute("UPDATE produtos SET valor_venda = 19.9 WHERE id = 1")
    await drain(settings)
    new = await mapped(conn, "produtos", 1)
    assert new is not None and new != old
    assert requests(crm)[-2:] == [f"PUT /produtos/{old}", "POST /produtos"]


async def test_venda_waits_for_its_cliente_without_spending_attempts(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await seed_small(conn)
    # Only the venda is queued: its cliente and produtos were never synced.
    await conn.execute("DELETE FROM crm_sync_queue WHERE entidade <> 'vendas'")
    await drain(settings)
    [venda] = crm.records("vendas")
    assert venda["cliente_id"] == await mapped(conn, "clientes", 1)
    row = await conn.fetchrow("SELECT * FROM crm_sync_queue WHERE entidade = 'vendas'")
    assert (row["estado"], row["tentativas"], row["adiamentos"]) == ("concluido", 1, 1)
    # The dependencies were put ahead of the venda.
    deps = await conn.fetch(
        "SELECT prioridade FROM crm_sync_queue WHERE entidade IN ('clientes', 'produtos')"
    )
    assert [r["prioridade"] for r in deps] == [6, 6, 6]


async def test_venda_fails_after_its_dependency_never_arrives(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    settings = make_settings(
        db_dsn, crm, sync={"max_dependency_waits": 2, "dependency_wait_seconds": 0}
    )
    await seed_small(conn)
    await conn.execute("UPDATE clientes SET nome = '' WHERE id = 1")  # the CRM refuses it
    await drain(settings, rounds=8)
    venda = await conn.fetchrow("SELECT * FROM crm_sync_queue WHERE entidade = 'vendas'")
    assert venda["estado"] == "falhou"
    assert "clientes 1" in venda["ultimo_erro"]
    assert crm.records("vendas") == []


# --- errors -------------------------------------------------------------------------------------


async def test_validation_error_fails_at_once_with_the_crm_message(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await conn.execute("INSERT INTO lojas (id, nome) VALUES (1, 'Loja')")
    await conn.execute(
        "INSERT INTO clientes (id, loja_id, tipo_pessoa, nome) VALUES (1, 1, 'PF', '')"
    )
    await drain(settings)
    row = await conn.fetchrow("SELECT * FROM crm_sync_queue")
    assert row["estado"] == "falhou"
    log = await conn.fetchrow("SELECT * FROM crm_sync_log")
    assert (log["status"], log["http_status"], log["tentativa"]) == ("erro", 404, 1)
    assert log["mensagem"] and "nome" in log["mensagem"].lower()


async def until_settled(conn: asyncpg.Connection, settings: Settings, rounds: int = 15) -> None:
    """Run passes, making retries due at once, until the one item has left the queue's care."""
    for _ in range(rounds):
        await run_once(settings)
        if await conn.fetchval("SELECT estado IN ('concluido', 'falhou') FROM crm_sync_queue"):
            return
        await make_due(conn)
        await asyncio.sleep(0.05)


async def test_a_crm_that_keeps_failing_spends_attempts_only_after_its_waits(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    """Every request fails: the CRM, not the record, is in trouble, so after the first failure
    the attempts are given back, a bounded number of times ([sync] max_dependency_waits); then
    they are spent, and the item fails for a person to look at."""
    settings = make_settings(
        db_dsn, crm, sync={"max_dependency_waits": 2, "failure_pause_seconds": 0.1}
    )
    await conn.execute("INSERT INTO lojas (id, nome) VALUES (1, 'Loja')")
    await conn.execute(
        "INSERT INTO produtos (id, loja_id, codigo_interno, nome) VALUES (1, 1, 'X', 'X')"
    )
    crm.set_faults(error_rate=1.0)
    await until_settled(conn, settings)
    row = await conn.fetchrow("SELECT * FROM crm_sync_queue")
    assert (row["estado"], row["tentativas"], row["adiamentos"]) == ("falhou", 3, 2)
    log = await conn.fetch("SELECT * FROM crm_sync_log ORDER BY id")
    assert len(log) == 5  # 3 attempts and 2 waits, every request in the log
    # Which failures are the waits depends on the statuses drawn (a 502 or 503 never spends
    # an attempt, a first 500 does: see test_reliability), but they come in attempt order.
    tries = [r["tentativa"] for r in log]
    assert tries[0] == 1 and tries[-1] == 3, tries
    assert all(b - a in (0, 1) for a, b in itertools.pairwise(tries)), tries
    assert all(r["status"] == "erro" and r["http_status"] >= 500 for r in log)
    # Once the CRM is back, `retry` (here by hand) lets it through.
    crm.set_faults(error_rate=0.0)
    await conn.execute("UPDATE crm_sync_queue SET estado = 'pendente', tentativas = 0")
    await drain(settings)
    assert len(crm.records("produtos")) == 1


async def test_dropped_connections_are_retryable(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    settings = make_settings(
        db_dsn, crm, sync={"max_dependency_waits": 1, "failure_pause_seconds": 0.1}
    )
    await conn.execute("INSERT INTO lojas (id, nome) VALUES (1, 'Loja')")
    await conn.execute(
        "INSERT INTO produtos (id, loja_id, codigo_interno, nome) VALUES (1, 1, 'X', 'X')"
    )
    crm.set_faults(drop_rate=1.0)
    await until_settled(conn, settings)
    row = await conn.fetchrow("SELECT * FROM crm_sync_queue")
    assert (row["estado"], row["tentativas"]) == ("falhou", 3)
    log = await conn.fetch("SELECT * FROM crm_sync_log ORDER BY id")
    assert [(r["status"], r["http_status"]) for r in log] == [("erro", None)] * 4
    assert all("/produtos" in r["mensagem"] for r in log)


async def test_429_pauses_the_account_and_does_not_spend_attempts(
    conn: asyncpg.Connection, db_dsn: str
) -> None:
    config = DevCrmConfig(
        access_token=TOKENS["access_token"],
        secret_access_token=TOKENS["secret_access_token"],
        limits=(),
        retry_after=0.3,
    )
    async with DevCrm(config) as crm:
        settings = make_settings(db_dsn, crm)
        await seed_small(conn)
        crm.set_faults(burst_429=1)
        await drain(settings)
    assert set((await queue_states(conn)).values()) == {"concluido"}
    statuses = [e.status for e in crm.ledger]
    assert statuses.count(429) == 1
    # The 429'd item was retried without spending an attempt; its attempt is in the log (it
    # counts against the daily budget derived from the log).
    assert await conn.fetchval("SELECT max(tentativas) FROM crm_sync_queue") == 1
    errors = await conn.fetch("SELECT * FROM crm_sync_log WHERE status = 'erro'")
    assert [(r["http_status"], r["requisicoes"]) for r in errors] == [(429, 1)]
    assert "429" in errors[0]["mensagem"]
    # Requests already on their way when the 429 came back still arrive; after that, nothing
    # reaches the CRM until the pause (Retry-After: 0.3 s) ends.
    t429 = next(e.monotonic for e in crm.ledger if e.status == 429)
    during_pause = [e for e in crm.ledger if t429 + 0.05 < e.monotonic < t429 + 0.28]
    assert during_pause == []
    assert any(e.monotonic >= t429 + 0.28 for e in crm.ledger)


async def test_auth_failure_pauses_the_account_without_spending_attempts(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await seed_small(conn)
    crm.set_faults(auth_fail=True)
    started = time.monotonic()
    await run_once(settings)
    # A one-off run gives back what waits for the pause rather than sitting it out.
    assert time.monotonic() - started < settings.sync.auth_pause_seconds / 2
    rows = await conn.fetch("SELECT * FROM crm_sync_queue")
    assert {r["estado"] for r in rows} == {"pendente"}
    assert {r["tentativas"] for r in rows} == {0}
    # One probe reached the CRM; the rest waited for the pause instead of burning through.
    refused = [e for e in crm.ledger if e.status == 401]
    assert 1 <= len(refused) <= settings.crm.concurrency
    # Each refused attempt is logged (it was sent) with why, none spent an attempt; a refused
    # item still in the queue says why too (one that gave way to a newer change of its record
    # leaves only its log).
    log = await conn.fetch("SELECT * FROM crm_sync_log")
    assert [(r["status"], r["http_status"]) for r in log] == [("erro", 401)] * len(refused)
    assert all("autenticação" in r["mensagem"] for r in log)
    still = [r for r in rows if r["id"] in {entry["queue_id"] for entry in log}]
    assert all("autenticação" in (r["ultimo_erro"] or "") for r in still)


async def test_wrong_tokens_never_appear_in_the_log_table(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    settings = make_settings(db_dsn, crm, crm={"access_token": "wrong-secret-value"})
    await seed_small(conn)
    await run_once(settings)
    dump = str(await conn.fetch("SELECT * FROM crm_sync_log")) + str(
        await conn.fetch("SELECT * FROM crm_sync_queue")
    )
    assert "wrong-secret-value" not in dump


async def test_atividades_end_ignored_counted_apart_and_send_nothing(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await conn.execute("INSERT INTO lojas (id, nome) VALUES (1, 'Loja')")
    await conn.execute("INSERT INTO atividades (loja_id, descricao) VALUES (1, 'Ligar amanhã')")
    await drain(settings)

    row = await conn.fetchrow("SELECT * FROM crm_sync_queue")
    assert (row["estado"], row["processado"], row["ultimo_erro"]) == ("ignorado", True, None)
    log = await conn.fetchrow("SELECT status, mensagem, requisicoes FROM crm_sync_log")
    assert (log["status"], log["requisicoes"]) == ("ignorado", 0)
    assert "não é suportado" in log["mensagem"]
    assert crm.ledger == []
    report = await status.report(conn)
    assert report.queue.ignored["atividades"] == 1 and report.queue.failed_total == 0
    assert (report.last_24h.ignored, report.last_24h.attempts) == (1, 0)
    assert report.last_24h.success_rate is None


async def test_atividades_fail_when_configured_to(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    await conn.execute("INSERT INTO lojas (id, nome) VALUES (1, 'Loja')")
    await conn.execute("INSERT INTO atividades (loja_id, descricao) VALUES (1, 'Ligar amanhã')")
    await drain(make_settings(db_dsn, crm, sync={"on_unsupported": "fail"}))

    row = await conn.fetchrow("SELECT * FROM crm_sync_queue")
    assert row["estado"] == "falhou"
    assert "não é suportado" in row["ultimo_erro"]
    assert crm.ledger == []


async def test_no_duplicate_after_a_crash_between_create_and_storing_the_id(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await seed_small(conn)
    await conn.execute(
        "DELETE FROM crm_sync_queue WHERE NOT (entidade = 'clientes' AND entidade_id = 2)"
    )
    # A worker claimed the item, created the record in the CRM, and died before recording it.
    async with (
        aiohttp.ClientSession(
            headers={
                "access-token": TOKENS["access_token"],
                "secret-access-token": TOKENS["secret_access_token"],
            }
        ) as http,
        http.post(
            f"{crm.url}/clientes",
            json={"tipo_pessoa": "PJ", "nome": "Padaria Boa Massa", "cnpj": "11.222.333/0001-81"},
        ) as resp,
    ):
        created = (await resp.json())["data"]["id"]
    await conn.execute(
        "UPDATE crm_sync_queue SET estado = 'processando', tentativas = 1,"
        " lease_token = gen_random_uuid(), lease_ate = now() - interval '1 second'"
    )
    await drain(settings)
    assert [c["id"] for c in crm.records("clientes")] == [created]
    assert await mapped(conn, "clientes", 2) == created


# --- rate limits --------------------------------------------------------------------------------


async def test_stacked_limits_hold_in_every_window_and_the_budget_is_used(
    conn: asyncpg.Connection, db_dsn: str
) -> None:
    limits = ((20, 1.0), (40, 3.0))
    async with DevCrm(
        DevCrmConfig(
            access_token=TOKENS["access_token"],
            secret_access_token=TOKENS["secret_access_token"],
            limits=limits,
            latency=0.08,
        )
    ) as crm:
        settings = make_settings(
            db_dsn,
            crm,
            crm={
                "limits": [{"requests": n, "per_seconds": s} for n, s in limits],
                "concurrency": 4,
            },
        )
        await conn.execute("INSERT INTO lojas (id, nome) VALUES (1, 'Loja')")
        await conn.execute(
            "INSERT INTO produtos (loja_id, codigo_interno, nome)"
            " SELECT 1, 'C' || g, 'Produto ' || g FROM generate_series(1, 60) g"
        )
        await run_once(settings)
        entries = crm.ledger
    assert [e.status for e in entries].count(429) == 0
    for n, seconds in limits:
        assert max_in_window(entries, seconds) <= n
    assert len(crm.records("produtos")) == 60
    # 120 requests (lookup + create each) at 40 per 3 s: the first 40 at once, then 40 more
    # every 3 s, so the last request can go no earlier than 6 s after the first.
    # 120 requests (a lookup and a create each) against 40 per 3 s: the budget allows exactly
    # 80 in the first 6 s, and a limiter that uses it sends them all there.
    assert len(entries) == 120
    start = entries[0].monotonic
    in_first_two_windows = sum(1 for e in entries if e.monotonic < start + 6.0)
    assert in_first_two_windows >= 0.99 * 80
    assert entries[-1].monotonic - start >= 6.0


async def test_no_duplicate_venda_after_a_crash_between_create_and_storing_the_id(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await seed_small(conn)
    await drain(settings)
    [venda] = crm.records("vendas")
    # As if the id had never been stored: the next attempt must find the venda by its codigo
    # ([crm] venda_codigo_prefix + the ERP id).
    await conn.execute("DELETE FROM crm_sync_map WHERE entidade = 'vendas'")
    for i in range(30):  # other vendas in the CRM, so the one we want is not on the first page
        crm.store.create(
            "vendas",
            {
                **{k: venda[k] for k in ("cliente_id", "data", "situacao_id")},
                "codigo": f"outra-{i}",
                "produtos": [],
            },
        )
    await conn.execute("UPDATE vendas SET observacoes = 'entregar à tarde' WHERE id = 1")
    await drain(settings)
    assert [v["id"] for v in crm.records("vendas") if v["codigo"] == "crmd-1"] == [venda["id"]]
    assert await mapped(conn, "vendas", 1) == venda["id"]


async def test_without_lookups_a_new_record_costs_one_request_but_an_unsure_create_is_looked_up(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    settings = make_settings(db_dsn, crm, sync={"lookup_unknown": False})
    await seed_small(conn)
    await conn.execute("DELETE FROM crm_sync_queue WHERE entidade <> 'produtos'")
    # Produto 2's earlier create died after the CRM made the record: the map says "creating".
    existing = crm.store.create(
        "produtos", {"nome": "Açúcar 1kg", "codigo_interno": "P-002", "valor_custo": "3.20"}
    )
    await conn.execute(
        "INSERT INTO crm_sync_map (conta, entidade, entidade_id, external_id)"
        " VALUES ('default', 'produtos', 2, NULL)"
    )
    before = len(crm.ledger)
    await drain(settings)
    assert sorted(requests(crm)[before:]) == sorted(
        ["POST /produtos", "GET /produtos", f"PUT /produtos/{existing['id']}"]
    )
    assert await mapped(conn, "produtos", 2) == existing["id"]
    assert len(crm.records("produtos")) == 2
