"""Operator operations and commands (`crmd enqueue`, `status`, `failed`, `retry`, `cleanup`)
against a real PostgreSQL; the commands run as `python -m crmd` subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from crmd import cli
from crmd.config import CleanupSettings, SourcesSettings
from crmd.ops import cleanup, enqueue, failures, status
from crmd.ops.checks import InvalidRequest

SOURCES = SourcesSettings()

# --- data -------------------------------------------------------------------------------------


async def make_lojas(conn: asyncpg.Connection, *ids: int) -> None:
    await conn.executemany(
        "INSERT INTO lojas (id, nome) VALUES ($1, $2)", [(i, f"Loja {i}") for i in ids]
    )


async def make_clientes(
    conn: asyncpg.Connection, loja: int, count: int, *, inactive: int = 0, deleted: int = 0
) -> None:
    """`count` active clientes of `loja`, plus some inactive and some soft-deleted ones."""
    await conn.execute(
        """INSERT INTO clientes (loja_id, nome, ativo, deleted_at)
           SELECT $1::int, 'Cliente ' || g, g > $3::int + $4::int,
                  CASE WHEN g <= $4::int THEN now() END
             FROM generate_series(1, $2::int + $3::int + $4::int) g""",
        loja,
        count,
        inactive,
        deleted,
    )


async def make_vendas(conn: asyncpg.Connection, loja: int, days_ago: list[int]) -> None:
    cliente = await conn.fetchval(
        "INSERT INTO clientes (loja_id, nome) VALUES ($1, 'Comprador') RETURNING id", loja
    )
    await conn.executemany(
        "INSERT INTO vendas (loja_id, cliente_id, data) VALUES ($1, $2, current_date - $3::int)",
        [(loja, cliente, d) for d in days_ago],
    )


async def empty_queue(conn: asyncpg.Connection) -> None:
    """The ERP's triggers enqueue every insert; start the operation under test from nothing."""
    await conn.execute("DELETE FROM crm_sync_queue")


async def pending(conn: asyncpg.Connection, entidade: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT loja_id, entidade_id, prioridade FROM crm_sync_queue"
        " WHERE estado = 'pendente' AND entidade = $1 ORDER BY entidade_id",
        entidade,
    )


async def make_failed(
    conn: asyncpg.Connection, entidade: str, entidade_id: int, error: str = "HTTP 404: inválido"
) -> int:
    return int(
        await conn.fetchval(
            """INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, estado, tentativas,
                                           ultimo_erro, processado_em)
               VALUES (1, $1, $2, 'falhou', 3, $3, now()) RETURNING id""",
            entidade,
            entidade_id,
            error,
        )
    )


async def add_log(
    conn: asyncpg.Connection,
    status: str,
    *,
    ago: str = "1 minute",
    message: str = "ok",
    n: int = 1,
    acao: str = "upsert",
) -> None:
    await conn.execute(
        """INSERT INTO crm_sync_log (conta, loja_id, entidade, entidade_id, acao, tentativa,
                                     status, http_status, mensagem, criado_em)
           SELECT 'default', 1, 'clientes', g, $5, 1, $1,
                  CASE WHEN $1 = 'erro' THEN 422 ELSE 200 END, $2,
                  now() - $3::text::interval
             FROM generate_series(1, $4) g""",
        status,
        message,
        ago,
        n,
        acao,
    )


# --- enqueue ----------------------------------------------------------------------------------


async def test_enqueue_clientes_takes_active_not_deleted_and_counts_per_loja(
    conn: asyncpg.Connection,
) -> None:
    await make_lojas(conn, 1, 2, 3)
    await make_clientes(conn, 1, 5, inactive=2, deleted=1)
    await make_clientes(conn, 2, 3)
    await empty_queue(conn)

    result = await enqueue.enqueue_entities(
        conn, "clientes", SOURCES, lojas=None, since_days=None, priority=None
    )

    assert result.per_loja == {1: 5, 2: 3, 3: 0}
    assert result.total == 8 and result.created == 8
    rows = await pending(conn, "clientes")
    assert len(rows) == 8
    assert {r["prioridade"] for r in rows} == {3}


async def test_enqueue_coalesces_with_pending_items_and_keeps_the_higher_priority(
    conn: asyncpg.Connection,
) -> None:
    await make_lojas(conn, 1)
    await make_clientes(conn, 1, 4)  # the ERP trigger already enqueued them at priority 3

    low = await enqueue.enqueue_entities(
        conn, "clientes", SOURCES, lojas=[1], since_days=None, priority=1
    )
    assert (low.total, low.created) == (4, 0)
    assert {r["prioridade"] for r in await pending(conn, "clientes")} == {3}

    high = await enqueue.enqueue_entities(
        conn, "clientes", SOURCES, lojas=[1], since_days=None, priority=9
    )
    assert (high.total, high.created) == (4, 0)
    rows = await pending(conn, "clientes")
    assert len(rows) == 4
    assert {r["prioridade"] for r in rows} == {9}


async def test_enqueue_vendas_defaults_to_the_last_30_days_at_priority_5(
    conn: asyncpg.Connection,
) -> None:
    await make_lojas(conn, 1, 2)
    await make_vendas(conn, 1, [0, 10, 29, 31, 90])
    await make_vendas(conn, 2, [1, 45])
    await empty_queue(conn)

    result = await enqueue.enqueue_entities(
        conn, "vendas", SOURCES, lojas=None, since_days=None, priority=None
    )
    assert result.per_loja == {1: 3, 2: 1}
    assert {r["prioridade"] for r in await pending(conn, "vendas")} == {5}

    await empty_queue(conn)
    wider = await enqueue.enqueue_entities(
        conn, "vendas", SOURCES, lojas=[2], since_days=60, priority=None
    )
    assert wider.per_loja == {2: 2}
    assert [r["loja_id"] for r in await pending(conn, "vendas")] == [2, 2]


async def test_enqueue_produtos_and_atividades(conn: asyncpg.Connection) -> None:
    await make_lojas(conn, 1)
    await conn.execute(
        """INSERT INTO produtos (loja_id, codigo_interno, nome, ativo, deleted_at)
           VALUES (1, 'A', 'Ativo', true, NULL), (1, 'B', 'Inativo', false, NULL),
                  (1, 'C', 'Apagado', true, now())"""
    )
    await conn.execute(
        "INSERT INTO atividades (loja_id, descricao) VALUES (1, 'Ligação'), (1, 'Visita')"
    )
    await empty_queue(conn)

    produtos = await enqueue.enqueue_entities(
        conn, "produtos", SOURCES, lojas=None, since_days=None, priority=None
    )
    atividades = await enqueue.enqueue_entities(
        conn, "atividades", SOURCES, lojas=None, since_days=None, priority=None
    )

    assert produtos.per_loja == {1: 1}
    assert atividades.per_loja == {1: 2}
    assert {r["prioridade"] for r in await pending(conn, "atividades")} == {2}


async def test_enqueue_works_in_chunks_and_reports_progress(
    conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(enqueue, "ENQUEUE_CHUNK", 7)
    await make_lojas(conn, 1, 2)
    await make_clientes(conn, 1, 20)
    await make_clientes(conn, 2, 10)
    await empty_queue(conn)
    seen: list[int] = []

    result = await enqueue.enqueue_entities(
        conn, "clientes", SOURCES, lojas=None, since_days=None, priority=None, progress=seen.append
    )

    assert result.total == 30
    assert seen == [7, 14, 21, 28, 30]
    assert len(await pending(conn, "clientes")) == 30


async def test_enqueue_is_fast_in_bulk(conn: asyncpg.Connection) -> None:
    await make_lojas(conn, 1)
    await conn.execute(
        "ALTER TABLE clientes DISABLE TRIGGER clientes_crm"  # the setup, not the test, is bulk
    )
    await make_clientes(conn, 1, 30_000)
    await conn.execute("ALTER TABLE clientes ENABLE TRIGGER clientes_crm")

    start = time.perf_counter()
    result = await enqueue.enqueue_entities(
        conn, "clientes", SOURCES, lojas=None, since_days=None, priority=None
    )
    elapsed = time.perf_counter() - start

    assert result.total == result.created == 30_000
    # About 1/30 of a million rows: a sanity check of the bulk path, not a benchmark.
    assert elapsed < 4, f"30k rows took {elapsed:.1f}s"


async def test_enqueue_names_bad_input(conn: asyncpg.Connection) -> None:
    await make_lojas(conn, 1)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"entidade": "pedidos"}, "entidade desconhecida 'pedidos'"),
        ({"lojas": [99]}, "nenhuma loja com id 99"),
        ({"lojas": []}, "lojas está vazio"),
        ({"priority": 40_000}, "priority deve ser um inteiro de 0 a 32767"),
        ({"since_days": 0}, "since_days deve ser um inteiro de 1"),
    ]
    for kwargs, message in cases:
        args: dict[str, Any] = {
            "entidade": "clientes",
            "lojas": None,
            "since_days": None,
            "priority": None,
            **kwargs,
        }
        entidade = args.pop("entidade")
        with pytest.raises(InvalidRequest, match=message):
            await enqueue.enqueue_entities(conn, entidade, SOURCES, **args)


# --- status -----------------------------------------------------------------------------------


async def test_status_reports_queue_rates_and_recent_errors(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, estado, criado_em)
           VALUES (1, 'clientes', 1, 'pendente', now() - interval '10 minutes'),
                  (1, 'clientes', 2, 'pendente', now()),
                  (1, 'vendas', 1, 'pendente', now()),
                  (1, 'produtos', 1, 'processando', now()),
                  (1, 'produtos', 2, 'concluido', now())"""
    )
    await make_failed(conn, "vendas", 9)
    await add_log(conn, "sucesso", n=6)
    await add_log(conn, "sucesso", ago="3 hours", n=1)
    await add_log(conn, "erro", ago="2 hours", n=1, message="antigo")
    await add_log(conn, "erro", ago="25 hours", n=1, message="fora da janela")
    for i in range(12):
        await add_log(conn, "erro", ago=f"{i + 1} seconds", message=f"erro {i}")
    # Counted apart: an ignored atividade, and a lookup of `crmd plan --lookups`.
    await conn.execute(
        """INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, estado, processado_em)
           VALUES (1, 'atividades', 1, 'ignorado', now())"""
    )
    await add_log(conn, "ignorado", ago="1 hour 10 minutes")
    await add_log(conn, "sucesso", ago="2 hours", acao="consulta")
    report = (await status.report(conn)).model_dump(mode="json")

    q = report["queue"]
    assert q["pending"] == {"clientes": 2, "produtos": 0, "vendas": 1, "atividades": 0}
    assert (q["pending_total"], q["in_flight_total"], q["failed_total"]) == (3, 1, 1)
    assert q["in_flight"]["produtos"] == 1 and q["failed"]["vendas"] == 1
    assert 590 < q["oldest_pending_age_seconds"] < 700
    assert report["last_24h"] == {
        "attempts": 20,
        "succeeded": 7,
        "errors": 13,
        "success_rate": pytest.approx(7 / 20),
        "ignored": 1,
    }
    assert (q["ignored"]["atividades"], q["ignored_total"]) == (1, 1)
    assert report["last_hour"] == {"attempts": 18, "succeeded": 6}
    assert [e["mensagem"] for e in report["recent_errors"]] == [f"erro {i}" for i in range(10)]
    assert report["recent_errors"][0]["http_status"] == 422
    assert report["accounts"] is None  # known only inside the daemon
    json.dumps(report)  # all of it is JSON as it is


async def test_status_of_an_empty_queue(conn: asyncpg.Connection) -> None:
    report = (await status.report(conn)).model_dump(mode="json")
    assert report["queue"]["pending_total"] == 0
    assert report["queue"]["oldest_pending_age_seconds"] is None
    assert report["last_24h"]["success_rate"] is None
    assert report["recent_errors"] == [] and report["accounts"] is None


async def test_status_is_fast_on_a_big_queue(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, estado, processado_em)
           SELECT 1, 'clientes', g, 'concluido', now() FROM generate_series(1, 200000) g"""
    )
    await conn.execute(
        """INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id)
           SELECT 1, 'produtos', g FROM generate_series(1, 20000) g"""
    )
    await add_log(conn, "sucesso", ago="2 hours", n=50_000)
    await conn.execute("ANALYZE crm_sync_queue")
    await conn.execute("ANALYZE crm_sync_log")

    start = time.perf_counter()
    report = (await status.report(conn)).model_dump(mode="json")
    elapsed = time.perf_counter() - start

    assert report["queue"]["pending_total"] == 20_000
    assert report["last_24h"]["attempts"] == 50_000
    assert elapsed < 1.0, f"status took {elapsed:.2f}s"


# --- failed and retry -------------------------------------------------------------------------


async def test_failed_lists_failed_items_newest_first_with_their_error(
    conn: asyncpg.Connection,
) -> None:
    first = await make_failed(conn, "clientes", 1, "HTTP 404: CPF inválido")
    second = await make_failed(conn, "vendas", 2, "dependências não sincronizadas")
    await conn.execute("UPDATE crm_sync_queue SET processado_em = now() + interval '1 s'")
    await conn.execute(
        "UPDATE crm_sync_queue SET processado_em = processado_em + interval '1 s' WHERE id = $1",
        second,
    )

    items = await failures.failed(conn)
    assert [i["id"] for i in items] == [second, first]
    assert items[1]["ultimo_erro"] == "HTTP 404: CPF inválido"
    assert [i["id"] for i in await failures.failed(conn, "clientes")] == [first]
    assert len(await failures.failed(conn, limit=1)) == 1
    with pytest.raises(InvalidRequest, match="limit deve ser"):
        await failures.failed(conn, limit=0)


async def test_retry_by_id_makes_items_pending_now_with_fresh_attempts_and_wakes_workers(
    conn: asyncpg.Connection, db_dsn: str
) -> None:
    a = await make_failed(conn, "clientes", 1)
    b = await make_failed(conn, "clientes", 2)
    listener = await asyncpg.connect(db_dsn)
    woken = asyncio.Event()
    await listener.add_listener("crm_sync", lambda *_: woken.set())
    try:
        assert await failures.retry(conn, ids=[a]) == 1
        await asyncio.wait_for(woken.wait(), 5)
    finally:
        await listener.close()

    row = await conn.fetchrow(
        "SELECT *, proxima_tentativa <= now() AS due FROM crm_sync_queue WHERE id = $1", a
    )
    assert (row["estado"], row["tentativas"], row["processado_em"], row["due"]) == (
        "pendente",
        0,
        None,
        True,
    )
    assert await conn.fetchval("SELECT estado FROM crm_sync_queue WHERE id = $1", b) == "falhou"


async def test_retry_by_entity_and_all(conn: asyncpg.Connection) -> None:
    await make_failed(conn, "clientes", 1)
    await make_failed(conn, "vendas", 1)
    await make_failed(conn, "vendas", 2)

    assert await failures.retry(conn, entidade="vendas") == 2
    assert [i["entidade"] for i in await failures.failed(conn)] == ["clientes"]
    assert await failures.retry(conn, all_failed=True) == 1
    assert await failures.failed(conn) == []
    assert await failures.retry(conn, all_failed=True) == 0


async def test_retry_folds_into_a_pending_item_of_the_same_record(
    conn: asyncpg.Connection,
) -> None:
    failed_low = await make_failed(conn, "clientes", 7)
    await conn.execute("UPDATE crm_sync_queue SET prioridade = 8 WHERE id = $1", failed_low)
    failed_twice = [await make_failed(conn, "produtos", 3), await make_failed(conn, "produtos", 3)]
    await conn.execute("SELECT crm_enqueue(1, 'clientes', 7, 3)")
    waiting = await conn.fetchval("SELECT id FROM crm_sync_queue WHERE estado = 'pendente'")

    assert await failures.retry(conn, all_failed=True) == 3

    rows = await conn.fetch("SELECT id, entidade, estado, prioridade FROM crm_sync_queue")
    # One pending item per record, no failed ones left: the waiting cliente took the priority of
    # the failed one; of the two failed produtos one went on, the other was folded into it.
    assert {(r["entidade"], r["estado"]) for r in rows} == {
        ("clientes", "pendente"),
        ("produtos", "pendente"),
    }
    assert len(rows) == 2
    by_entity = {r["entidade"]: r for r in rows}
    assert by_entity["clientes"]["id"] == waiting and by_entity["clientes"]["prioridade"] == 8
    assert by_entity["produtos"]["id"] == max(failed_twice)


async def test_retry_names_bad_input(conn: asyncpg.Connection) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "exatamente um de ids, entidade ou all_failed"),
        ({"ids": [1], "all_failed": True}, "exatamente um"),
        ({"ids": []}, "ids está vazio"),
        ({"ids": [0]}, "id deve ser um inteiro"),
        ({"entidade": "pedidos"}, "entidade desconhecida 'pedidos'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidRequest, match=message):
            await failures.retry(conn, **kwargs)


# --- cleanup ----------------------------------------------------------------------------------


async def test_cleanup_removes_old_log_rows_and_old_done_items_in_batches(
    conn: asyncpg.Connection,
) -> None:
    await add_log(conn, "sucesso", ago="31 days", n=10)
    await add_log(conn, "erro", ago="29 days", n=2)
    await conn.execute(
        """INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, estado, processado_em)
           SELECT 1, 'clientes', g, e, now() - d::interval
             FROM generate_series(1, 4) g,
                  (VALUES ('concluido', '8 days'), ('concluido', '6 days'),
                          ('falhou', '30 days')) AS v (e, d)"""
    )
    settings = CleanupSettings(batch_size=3)

    dry = await cleanup.cleanup(conn, settings, dry_run=True)
    assert (dry.log_rows, dry.queue_rows, dry.dry_run) == (10, 4, True)
    assert await conn.fetchval("SELECT count(*) FROM crm_sync_log") == 12

    done = await cleanup.cleanup(conn, settings)
    assert (done.log_rows, done.queue_rows) == (10, 4)
    assert await conn.fetchval("SELECT count(*) FROM crm_sync_log") == 2
    left = await conn.fetch("SELECT estado, count(*) FROM crm_sync_queue GROUP BY estado")
    assert {r["estado"]: r["count"] for r in left} == {"concluido": 4, "falhou": 4}
    again = await cleanup.cleanup(conn, settings)
    assert (again.log_rows, again.queue_rows) == (0, 0)


# --- the commands -----------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    out: str
    err: str


async def crmd(dsn: str, *args: str) -> Run:
    env = {
        **os.environ,
        "CRMD_CONFIG": "/dev/null",
        "CRMD_DATABASE__DSN": dsn,
        "CRMD_ADMIN__LISTEN": "",  # never ask a daemon that happens to run on this machine
        "CRMD_LOG__FORMAT": "json",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crmd",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


UNREACHABLE = "postgresql://crmd@127.0.0.1:1/ecletech"


async def test_enqueue_command_prints_per_loja_and_total(
    conn: asyncpg.Connection, db_dsn: str
) -> None:
    await make_lojas(conn, 1, 2)
    await make_clientes(conn, 1, 237, inactive=3)
    await make_clientes(conn, 2, 12)
    await empty_queue(conn)

    run = await crmd(db_dsn, "enqueue", "clientes")

    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[:3] == [
        "Loja 1: 237 clientes encontrados",
        "Loja 2: 12 clientes encontrados",
        "Total enfileirado: 249",
    ]
    assert await conn.fetchval("SELECT count(*) FROM crm_sync_queue") == 249
    assert "\r" not in run.err  # progress only on a terminal

    only = await crmd(db_dsn, "enqueue", "clientes", "--loja", "2", "--priority", "7")
    assert only.code == 0, only.err
    assert only.out.splitlines()[:2] == ["Loja 2: 12 clientes encontrados", "Total enfileirado: 12"]
    assert await conn.fetchval("SELECT count(*) FROM crm_sync_queue WHERE prioridade = 7") == 12


async def test_commands_reject_bad_input(conn: asyncpg.Connection, db_dsn: str) -> None:
    await make_lojas(conn, 1)
    no_loja, bad_since, bad_entity, no_choice = await asyncio.gather(
        crmd(db_dsn, "enqueue", "clientes", "--loja", "99"),
        crmd(db_dsn, "enqueue", "vendas", "--since", "ontem"),
        crmd(db_dsn, "enqueue", "pedidos"),
        crmd(db_dsn, "retry"),
    )
    assert no_loja.code == 64 and "nenhuma loja com id 99" in no_loja.err
    assert bad_since.code == 2 and "'ontem' não é um número de dias" in bad_since.err
    assert bad_entity.code == 2 and "opção inválida: 'pedidos'" in bad_entity.err
    assert no_choice.code == 2
    assert "um dos argumentos --id --entidade --all-failed é obrigatório" in no_choice.err


async def test_status_command_text_and_json(conn: asyncpg.Connection, db_dsn: str) -> None:
    await conn.execute(
        "INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id) VALUES (1, 'vendas', 5)"
    )
    await make_failed(conn, "clientes", 3)
    await add_log(conn, "erro", message="HTTP 404: CPF inválido")
    await add_log(conn, "sucesso", n=3)

    text, as_json = await asyncio.gather(crmd(db_dsn, "status"), crmd(db_dsn, "status", "--json"))

    assert text.code == 0, text.err
    assert "  vendas              1            0        0" in text.out
    assert "taxa de sucesso 75,0 %" in text.out
    assert "HTTP 422: HTTP 404: CPF inválido" in text.out
    assert "Contas: o daemon não respondeu" in text.out
    assert as_json.code == 0, as_json.err
    report = json.loads(as_json.out)
    assert report["queue"]["pending"]["vendas"] == 1
    assert report["queue"]["failed_total"] == 1
    assert report["last_24h"]["success_rate"] == 0.75


async def test_failed_retry_and_cleanup_commands(conn: asyncpg.Connection, db_dsn: str) -> None:
    first = await make_failed(conn, "clientes", 1, "HTTP 404: CPF inválido")
    await make_failed(conn, "vendas", 2)
    await make_failed(conn, "produtos", 3)
    await add_log(conn, "sucesso", ago="40 days", n=5)

    listed, dry = await asyncio.gather(
        crmd(db_dsn, "failed", "--entidade", "clientes"), crmd(db_dsn, "cleanup", "--dry-run")
    )
    assert listed.code == 0, listed.err
    assert f"#{first} clientes 1 (loja 1, upsert, 3 tentativas" in listed.out
    assert listed.out.rstrip().endswith("HTTP 404: CPF inválido")
    assert dry.code == 0 and dry.out.startswith("Log: 5 registros seriam removidos")

    by_id, by_entity = await asyncio.gather(
        crmd(db_dsn, "retry", "--id", str(first)), crmd(db_dsn, "retry", "--entidade", "vendas")
    )
    assert (by_id.code, by_id.out) == (0, "1 item com falha voltou para a fila\n")
    assert by_entity.code == 0 and by_entity.out.startswith("1 item com falha voltou")
    rest = await crmd(db_dsn, "retry", "--all-failed")
    assert rest.out.startswith("1 item com falha voltou")

    none, empty, real = await asyncio.gather(
        crmd(db_dsn, "retry", "--all-failed"), crmd(db_dsn, "failed"), crmd(db_dsn, "cleanup")
    )
    assert none.out == "Nenhum item com falha corresponde ao pedido\n"
    assert empty.out == "Nenhum item com falha.\n"
    assert real.code == 0 and real.out.startswith("Log: 5 registros removidos")
    assert await conn.fetchval("SELECT count(*) FROM crm_sync_log") == 0


COMMANDS = [
    ["enqueue", "clientes"],
    ["status"],
    ["failed"],
    ["retry", "--all-failed"],
    ["cleanup"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: argv[0])
def test_every_command_exits_69_when_the_database_is_unreachable(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process through crmd.cli.main (as `python -m crmd` runs it), for speed; the subprocess
    # path is checked once below.
    monkeypatch.setenv("CRMD_CONFIG", "/dev/null")
    monkeypatch.setenv("CRMD_DATABASE__DSN", UNREACHABLE)
    monkeypatch.setenv("CRMD_ADMIN__LISTEN", "")
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 69
    err = capsys.readouterr().err
    assert err.startswith(
        "crmd: não foi possível conectar a postgresql://crmd@127.0.0.1:1/ecletech"
    )


async def test_unreachable_database_through_the_real_entry_point() -> None:
    run = await crmd(UNREACHABLE, "status")
    assert run.code == 69
    assert run.err.startswith(
        "crmd: não foi possível conectar a postgresql://crmd@127.0.0.1:1/ecletech"
    )
    assert "Traceback" not in run.err


@pytest.mark.parametrize("command", [argv[0] for argv in COMMANDS])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--config ARQUIVO" in text
    if command == "enqueue":
        assert "vendas dos últimos 30 dias" in text and "--since DIAS" in text
