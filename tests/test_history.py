"""A record's history: every attempt with its HTTP exchanges (bodies sent and received, capped,
secrets masked) goes from the transport through the engine's Outcome to crm_sync_log, and comes
back through `crmd history`, the API and a resend; it leaves with its log row."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from crmd.config import CleanupSettings, Settings
from crmd.crm.transport import BODY_MAX_CHARS, exchange
from crmd.dev.devcrm.server import DevCrm, DevCrmConfig
from crmd.ops import cleanup
from crmd.ops.history import record_history, resend
from crmd.service.startup import run_once
from tests.conftest import run_crmd

TOKENS = {"access_token": "tok-hist-X1", "secret_access_token": "sec-hist-Y2"}


@pytest.fixture
async def crm() -> AsyncIterator[DevCrm]:
    async with DevCrm(DevCrmConfig(**TOKENS, limits=())) as server:
        yield server


def settings_for(db_dsn: str, crm: DevCrm) -> Settings:
    return Settings(
        database={"dsn": db_dsn},
        crm={"base_url": crm.url, **TOKENS, "limits": [{"requests": 1000, "per_seconds": 1}]},
        queue={"retry_initial_delay_seconds": 0.05, "retry_jitter": 0},
    )


async def add_cliente(conn: asyncpg.Connection, nome: str = "Maria Souza") -> None:
    await conn.execute("INSERT INTO lojas (id, nome) VALUES (1, 'Centro') ON CONFLICT DO NOTHING")
    await conn.execute(
        "INSERT INTO clientes (id, loja_id, tipo_pessoa, nome, cpf)"
        " VALUES (42, 1, 'PF', $1, '529.982.247-25')",
        nome,
    )


async def test_every_attempt_keeps_what_it_sent_and_what_came_back(
    conn: asyncpg.Connection, db_dsn: str, crm: DevCrm
) -> None:
    await add_cliente(conn)
    await run_once(settings_for(db_dsn, crm))
    await conn.execute("UPDATE clientes SET nome = 'Maria S. Lima' WHERE id = 42")
    await run_once(settings_for(db_dsn, crm))

    h = await record_history(conn, "clientes", 42, contas=["default"], timezone="UTC")
    assert [a.status for a in h.attempts] == ["sucesso", "sucesso"]
    update, create = h.attempts  # newest first
    # The create looked the CPF up first, then posted: both requests, in order.
    assert [(t.metodo, t.caminho.split("?")[0]) for t in create.trocas] == [
        ("GET", "/clientes"),
        ("POST", "/clientes"),
    ]
    assert "cpf_cnpj=52998224725" in create.trocas[0].caminho
    post = create.trocas[1]
    assert post.http_status == 200 and post.enviado and post.recebido
    assert json.loads(post.enviado)["nome"] == "Maria Souza"
    assert json.loads(post.recebido)["data"]["id"] == create.external_id
    put = update.trocas[-1]
    assert put.metodo == "PUT" and put.caminho == f"/clientes/{create.external_id}"
    assert json.loads(put.enviado or "")["nome"] == "Maria S. Lima"
    assert h.links[0].external_id == create.external_id and not h.open_items
    # Tokens travel in headers, which are never kept.
    stored = await conn.fetchval("SELECT string_agg(trocas::text, ' ') FROM crm_sync_log")
    assert all(secret not in stored for secret in TOKENS.values())


async def test_a_failed_attempt_keeps_the_crms_answer_and_its_status(
    conn: asyncpg.Connection, db_dsn: str, crm: DevCrm
) -> None:
    await add_cliente(conn, nome="")  # GestãoClick refuses a cliente without a nome
    await run_once(settings_for(db_dsn, crm))
    h = await record_history(conn, "clientes", 42, contas=["default"])
    failed = h.attempts[0]
    assert failed.status == "erro" and failed.http_status == failed.trocas[-1].http_status
    assert failed.trocas[-1].recebido and failed.mensagem
    assert failed.mensagem in failed.trocas[-1].recebido


def test_bodies_are_capped_and_secrets_masked() -> None:
    sent = {"nome": "x" * (BODY_MAX_CHARS * 2), "senha": "hunter2", "nested": [{"token": "t0k"}]}
    received = '{"access-token": "abc123", "data": {"id": "9"}}'
    e = exchange("POST", "/clientes", {"secret": "s3"}, 200, 0.01, sent, received)
    assert e.sent is not None and e.received is not None
    assert len(e.sent) < BODY_MAX_CHARS + 50 and e.sent.endswith("caracteres)")
    assert "hunter2" not in e.sent and "t0k" not in e.sent
    assert "abc123" not in e.received and '"id": "9"' in e.received
    assert e.path == "/clientes?secret=***"


async def test_bodies_go_with_their_log_row(
    conn: asyncpg.Connection, db_dsn: str, crm: DevCrm
) -> None:
    await add_cliente(conn)
    await run_once(settings_for(db_dsn, crm))
    await conn.execute("UPDATE crm_sync_log SET criado_em = now() - interval '40 days'")
    await cleanup.cleanup(conn, CleanupSettings())
    assert await conn.fetchval("SELECT count(*) FROM crm_sync_log") == 0
    assert (await record_history(conn, "clientes", 42, contas=["default"])).attempts == []


async def test_resend_retries_the_failed_item_or_enqueues_the_record(
    conn: asyncpg.Connection, db_dsn: str, crm: DevCrm
) -> None:
    await add_cliente(conn, nome="")
    await run_once(settings_for(db_dsn, crm))
    assert await conn.fetchval("SELECT estado FROM crm_sync_queue WHERE entidade_id = 42") == (
        "falhou"
    )
    assert await resend(conn, "clientes", 42) == "o item com falha voltou para a fila"
    assert await conn.fetchval("SELECT estado FROM crm_sync_queue WHERE entidade_id = 42") == (
        "pendente"
    )
    await conn.execute("UPDATE clientes SET nome = 'Maria' WHERE id = 42")
    await run_once(settings_for(db_dsn, crm))
    assert await resend(conn, "clientes", 42) == "enfileirado"
    assert await resend(conn, "clientes", 42) == "já estava na fila"


async def test_history_command_shows_attempts_and_bodies(
    conn: asyncpg.Connection, db_dsn: str, crm: DevCrm
) -> None:
    await add_cliente(conn)
    await run_once(settings_for(db_dsn, crm))
    env = {"CRMD_DATABASE__DSN": db_dsn, "CRMD_CONFIG": os.devnull}
    text, as_json, nothing = await asyncio.gather(
        asyncio.to_thread(run_crmd, "history", "clientes", "42", env=env),
        asyncio.to_thread(run_crmd, "history", "clientes", "42", "--json", env=env),
        asyncio.to_thread(run_crmd, "history", "clientes", "7", env=env),
    )
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert out.startswith("clientes 42\n  No CRM: conta default, registro 1")
    assert "Tentativas (1 tentativa, a mais recente primeiro):" in out
    assert "sucesso  HTTP 200  tentativa 1" in out and " UTC" in out
    assert "POST /clientes -> 200" in out and '"nome": "Maria Souza"' in out
    data: dict[str, Any] = json.loads(as_json.stdout)
    assert data["attempts"][0]["trocas"][1]["metodo"] == "POST"
    assert nothing.returncode == 0 and "Tentativas (0 tentativas" in nothing.stdout
