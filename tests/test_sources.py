"""A real ERP's own schema, read only through `[sources]`: `crmd enqueue`, the weekly full sync
and the engine all find its records, with other table and column names than the reference's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from crmd.config import Settings, load_settings
from crmd.dev.devcrm.server import DevCrm, DevCrmConfig
from crmd.service.daemon import Daemon, default_actions
from crmd.service.startup import run_once
from tests.conftest import run_crmd

ERP = """
CREATE SCHEMA erp;
CREATE TABLE erp.filial (codigo integer PRIMARY KEY, apelido text NOT NULL);
CREATE TABLE erp.pessoa (
    codigo        bigint PRIMARY KEY,
    filial        integer NOT NULL REFERENCES erp.filial,
    nome_completo text NOT NULL,
    documento     text,
    situacao      char(1) NOT NULL DEFAULT 'A',
    alterado      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO erp.filial VALUES (10, 'Matriz'), (20, 'Filial Sul'), (30, 'Filial Norte');
INSERT INTO erp.pessoa (codigo, filial, nome_completo, documento, situacao, alterado) VALUES
    (1, 10, 'Ana Lima', '529.982.247-25', 'A', now()),
    (2, 10, 'Bruno Reis', '111.444.777-35', 'I', now()),
    (3, 20, 'Carla Dias', '390.533.447-05', 'A', now() - interval '10 days'),
    (4, 20, 'Davi Melo', '935.411.347-80', 'A', now());
"""

SOURCES = """
[sources]
lojas = "SELECT codigo AS id FROM erp.filial"
clientes_enqueue = "SELECT filial AS loja_id, codigo AS id, alterado AS data FROM erp.pessoa WHERE situacao = 'A'"
clientes = "SELECT codigo AS id, filial AS loja_id, 'PF' AS tipo_pessoa, nome_completo AS nome, documento AS cpf FROM erp.pessoa WHERE codigo = ANY($1::bigint[])"
"""  # noqa: E501 - one query per line, as an operator writes them


@pytest.fixture
async def crm() -> AsyncIterator[DevCrm]:
    async with DevCrm(DevCrmConfig(access_token="a", secret_access_token="b", limits=())) as s:
        yield s


@pytest.fixture
async def config(conn: asyncpg.Connection, db_dsn: str, crm: DevCrm, tmp_path: Path) -> Path:
    await conn.execute(ERP)
    path = tmp_path / "config.toml"
    path.write_text(
        f'[database]\ndsn = "{db_dsn}"\n'
        f'[crm]\nbase_url = "{crm.url}"\naccess_token = "a"\nsecret_access_token = "b"\n'
        "[[crm.limits]]\nrequests = 1000\nper_seconds = 1\n"
        '[admin]\nlisten = ""\n' + SOURCES,
        encoding="utf-8",
    )
    return path


async def queued(conn: asyncpg.Connection) -> list[tuple[int, str, int, int]]:
    rows = await conn.fetch(
        "SELECT loja_id, entidade, entidade_id, prioridade FROM crm_sync_queue"
        " WHERE estado = 'pendente' ORDER BY entidade_id"
    )
    return [(r["loja_id"], r["entidade"], r["entidade_id"], r["prioridade"]) for r in rows]


async def test_enqueue_command_reads_the_installations_own_tables(
    conn: asyncpg.Connection, config: Path
) -> None:
    done = await asyncio.to_thread(run_crmd, "enqueue", "clientes", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "Loja 10: 1 cliente encontrado" in done.stdout
    assert "Loja 20: 2 clientes encontrados" in done.stdout
    assert "Loja 30: 0 clientes encontrados" in done.stdout
    assert "Total enfileirado: 3" in done.stdout
    assert await queued(conn) == [
        (10, "clientes", 1, 3),
        (20, "clientes", 3, 3),
        (20, "clientes", 4, 3),
    ]

    await conn.execute("DELETE FROM crm_sync_queue")
    args = ("enqueue", "clientes", "--loja", "20", "--since", "2d", "--config", str(config))
    recent = await asyncio.to_thread(run_crmd, *args)
    assert recent.returncode == 0, recent.stderr
    assert await queued(conn) == [(20, "clientes", 4, 3)]

    missing = await asyncio.to_thread(
        run_crmd, "enqueue", "clientes", "--loja", "99", "--config", str(config)
    )
    assert missing.returncode == 64 and "nenhuma loja com id 99" in missing.stderr


async def test_full_sync_timer_and_engine_read_the_installations_own_tables(
    conn: asyncpg.Connection, config: Path, crm: DevCrm
) -> None:
    settings, _ = load_settings(str(config))
    assert isinstance(settings, Settings)
    _, full_sync = default_actions(Daemon(str(config), settings))["full_sync"]

    assert await full_sync(conn) == "enfileirado: clientes 3"
    assert await queued(conn) == [
        (10, "clientes", 1, 1),
        (20, "clientes", 3, 1),
        (20, "clientes", 4, 1),
    ]

    await run_once(settings)
    sent = {c["nome"]: c["cpf"] for c in crm.records("clientes")}
    assert sent == {
        "Ana Lima": "529.982.247-25",
        "Carla Dias": "390.533.447-05",
        "Davi Melo": "935.411.347-80",
    }


def test_a_listing_query_with_parameters_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[sources]\nclientes_enqueue = "SELECT loja_id, id, now() AS data FROM t WHERE id > $1"\n'
    )
    result = run_crmd("check-config", "--config", str(path))
    assert result.returncode == 78
    assert "sources.clientes_enqueue: a consulta não recebe parâmetros" in result.stderr
