"""`crmd plan`: what a sync would do and cost, judged as the engine judges, with nothing sent
(only lookups, when asked); against a real PostgreSQL and the development CRM."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from crmd.cli.plan import cost
from crmd.config import DEFAULT_LIMITS, RateLimit, Settings
from crmd.dev.devcrm.server import DevCrm, DevCrmConfig
from crmd.ops import plan, status
from crmd.ops.checks import InvalidRequest
from tests.test_doctor import crmd, write_config
from tests.test_engine import TOKENS, drain, make_settings, seed_small


@pytest.fixture
async def crm() -> AsyncIterator[DevCrm]:
    async with DevCrm(DevCrmConfig(**TOKENS, limits=())) as server:
        yield server


@pytest.fixture
def settings(db_dsn: str, crm: DevCrm) -> Settings:
    return make_settings(db_dsn, crm, crm={"venda_situacao_cancelada_id": "3152"})


def counts(result: plan.Plan, entidade: str) -> dict[str, int]:
    return {k: v for k, v in result.entities[entidade].counts.items() if v}


async def test_a_first_sync_creates_everything_and_costs_a_lookup_and_a_post_each(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await seed_small(conn)

    result = await plan.make_plan(conn, settings)

    assert result.items == 5
    assert counts(result, "clientes") == {"criados": 2}
    assert counts(result, "produtos") == {"criados": 2}
    assert counts(result, "vendas") == {"criados": 1}
    assert result.entities["clientes"].requests == 4  # a lookup by CPF/CNPJ, then the POST
    assert result.entities["clientes"].unsure == 2  # not looked up: maybe already in the CRM
    assert result.budgets["default"].requests == 10
    assert crm.ledger == []
    assert await conn.fetchval("SELECT count(*) FROM crm_sync_map") == 0


async def test_every_verdict_of_the_engine_with_its_cost(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await seed_small(conn)
    await drain(settings)
    before = len(crm.ledger)
    await conn.execute("UPDATE clientes SET email = 'novo@example.com' WHERE id = 1")
    await conn.execute("SELECT crm_enqueue(1, 'clientes', 2)")  # nothing changed
    await conn.execute("DELETE FROM venda_itens WHERE produto_id = 2")
    await conn.execute("DELETE FROM produtos WHERE id = 2")
    await conn.execute("INSERT INTO atividades (loja_id, descricao) VALUES (1, 'Ligar')")
    await conn.execute(
        "INSERT INTO vendas (id, loja_id, cliente_id, data, situacao)"
        " VALUES (2, 1, 1, current_date, 'em espera')"
    )
    await conn.execute("SELECT crm_enqueue(1, 'clientes', 77, 3, 'delete')")  # never in the CRM

    result = await plan.make_plan(conn, settings)

    assert counts(result, "clientes") == {"atualizados": 1, "sem alterações": 1, "sem efeito": 1}
    assert counts(result, "produtos") == {"inativados": 1}
    assert counts(result, "atividades") == {"ignorados": 1}
    assert counts(result, "vendas") == {"atualizados": 1, "com erro": 1}
    assert result.entities["produtos"].requests == 2  # GET and PUT
    assert result.entities["vendas"].errors == [
        "vendas 2 (loja 1): a situação 'em espera' do ERP não está em [crm.situacoes]"
    ]
    assert result.budgets["default"].requests == 1 + 2 + 1
    assert len(crm.ledger) == before  # nothing sent


async def test_on_delete_and_entity_filters_change_the_plan(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str, settings: Settings
) -> None:
    await seed_small(conn)
    await drain(settings)
    await conn.execute("UPDATE clientes SET deleted_at = now()")

    deleting = make_settings(db_dsn, crm, sync={"on_delete": "delete"})
    deleted = await plan.make_plan(conn, deleting, entidade="clientes")
    ignoring = make_settings(db_dsn, crm, sync={"on_delete": "ignore"})
    ignored = await plan.make_plan(conn, ignoring, entidade="clientes", lojas=[1])
    elsewhere = await plan.make_plan(conn, settings, entidade="clientes", lojas=[2])

    assert list(deleted.entities) == ["clientes"]
    assert counts(deleted, "clientes") == {"excluídos": 2}
    assert deleted.budgets["default"].requests == 2
    assert counts(ignored, "clientes") == {"sem efeito": 2}
    assert elsewhere.items == 0


async def test_lookups_tell_links_from_creates_and_are_logged_apart(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    crm.store.create("clientes", {"tipo_pessoa": "PF", "nome": "Maria", "cpf": "52998224725"})
    await seed_small(conn)

    result = await plan.make_plan(conn, settings, entidade="clientes", lookups=True)

    assert counts(result, "clientes") == {"criados": 1, "vinculados": 1}
    assert result.entities["clientes"].unsure == 0
    assert (result.lookups_sent, result.lookup_requests) == (2, 2)
    assert {e.method for e in crm.ledger} == {"GET"} and len(crm.ledger) == 2
    logged = await conn.fetch(
        "SELECT acao, status, requisicoes, external_id, mensagem FROM crm_sync_log ORDER BY id"
    )
    assert [(r["acao"], r["status"], r["requisicoes"]) for r in logged] == [
        ("consulta", "sucesso", 1),
        ("consulta", "sucesso", 1),
    ]
    assert "encontrado no CRM" in logged[0]["mensagem"]
    assert await conn.fetchval("SELECT count(*) FROM crm_sync_map") == 0
    report = await status.report(conn)
    assert report.last_24h.attempts == 0  # lookups are not attempts to send


async def test_lookups_stop_at_the_maximum(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await seed_small(conn)

    result = await plan.make_plan(conn, settings, lookups=True, max_lookups=1)

    assert (result.lookups_sent, result.not_looked_up) == (1, 4)
    assert len(crm.ledger) == 1


async def test_full_plans_what_enqueue_would_put_in_the_queue(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await seed_small(conn)
    await conn.execute(
        "INSERT INTO clientes (id, loja_id, nome, ativo) VALUES (3, 1, 'Inativo', false)"
    )
    await conn.execute(
        "INSERT INTO vendas (id, loja_id, cliente_id, data) VALUES (3, 1, 1, '2001-01-01')"
    )
    await conn.execute("DELETE FROM crm_sync_queue")

    result = await plan.make_plan(conn, settings, full=True)
    since = await plan.make_plan(conn, settings, full=True, entidade="vendas", since_days=36_500)

    assert result.items == 5  # active clientes and produtos; vendas of the last 30 days
    assert counts(result, "clientes") == {"criados": 2}
    assert counts(since, "vendas") == {"criados": 2}
    assert await conn.fetchval("SELECT count(*) FROM crm_sync_queue") == 0


async def test_bad_input_is_named(conn: asyncpg.Connection, settings: Settings) -> None:
    with pytest.raises(InvalidRequest, match="entidade desconhecida"):
        await plan.make_plan(conn, settings, entidade="pedidos")
    with pytest.raises(InvalidRequest, match="max_lookups"):
        await plan.make_plan(conn, settings, max_lookups=-1)


def test_the_budget_is_told_in_days_and_hours_at_the_binding_limit() -> None:
    # The daily budget goes at the minute's pace (5 h), the rest when the day has turned
    # (24 h + 110 min).
    assert cost(plan.Budget("default", 41_000, DEFAULT_LIMITS)) == (
        "~41.000 requisições: 25 h 50 min no limite de 30.000/dia"
    )
    assert cost(plan.Budget("default", 90_000, DEFAULT_LIMITS)) == (
        "~90.000 requisições: 2 dias 5 h no limite de 30.000/dia"
    )
    assert cost(plan.Budget("default", 1_200, DEFAULT_LIMITS)) == (
        "~1.200 requisições: 12 min no limite de 100/min"
    )
    assert cost(plan.Budget("x", 50, (RateLimit(requests=3, per_seconds=1),))) == (
        "~50 requisições: 16 s no limite de 3/s"  # the first 3 go at once
    )
    assert cost(plan.Budget("x", 0, DEFAULT_LIMITS)) == "nenhuma requisição"


async def test_the_command_prints_the_plan_per_entity_and_the_time_it_needs(
    db_dsn: str, conn: asyncpg.Connection, crm: DevCrm, tmp_path: Path
) -> None:
    await seed_small(conn)
    config = write_config(tmp_path, db_dsn, crm)

    run = await crmd(config, "plan")
    vendas = await crmd(config, "plan", "--entidade", "vendas", "--loja", "1")
    bad = await crmd(config, "plan", "--since", "30d")

    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == "Plano para 5 itens pendentes na fila (nada foi enviado ao CRM):"
    assert "clientes: 2 registros" in lines
    assert "  2 criados" in lines
    assert "  ~4 requisições" in lines
    assert "atividades: 0 registros" in lines and "  nenhuma requisição" in lines
    assert lines[-1] == "Conta default: ~10 requisições: menos de 1 s no limite de 1.000/s"
    assert (
        vendas.out.splitlines()[0]
        == "Plano para 1 item pendente na fila (nada foi enviado ao CRM):"
    )
    assert (bad.code, bad.err.strip()) == (64, "crmd: --since vale só com --full")
    assert crm.ledger == []
