"""`crmd map import`: the CRM ids the old system stored in the ERP, into crm_sync_map, so the
records it created are updated rather than created again; against a real PostgreSQL and the
development CRM."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from crmd.config import Settings
from crmd.dev.devcrm.server import DevCrm, DevCrmConfig
from crmd.ops import map_import
from crmd.ops.checks import InvalidRequest
from tests.test_engine import TOKENS, drain, make_settings, requests, seed_small
from tests.test_ops import crmd


@pytest.fixture
async def crm() -> AsyncIterator[DevCrm]:
    async with DevCrm(DevCrmConfig(**TOKENS, limits=())) as server:
        yield server


QUERY = "SELECT id, crm_id AS external_id FROM clientes WHERE crm_id IS NOT NULL"


async def old_system_ids(conn: asyncpg.Connection, crm: DevCrm) -> dict[int, str]:
    """What the old system left: both clientes and produtos in the CRM, their ids in the ERP."""
    await seed_small(conn)
    await conn.execute("DELETE FROM crm_sync_queue")
    ids = {}
    for erp_id, nome, doc in ((1, "Maria Souza", "52998224725"), (2, "Padaria", "")):
        body = {"tipo_pessoa": "PF", "nome": nome, "cpf": doc}
        ids[erp_id] = crm.store.create("clientes", body)["id"]
    await conn.execute("ALTER TABLE clientes ADD COLUMN crm_id text")
    for erp_id, ext in ids.items():
        await conn.execute("UPDATE clientes SET crm_id = $2 WHERE id = $1", erp_id, ext)
    await conn.execute("DELETE FROM crm_sync_queue")
    return ids


def settings_with(db_dsn: str, server: DevCrm, **overrides: Any) -> Settings:
    return make_settings(db_dsn, server, map_import={"clientes": QUERY}, **overrides)


async def links(conn: asyncpg.Connection) -> dict[tuple[str, int], str | None]:
    rows = await conn.fetch("SELECT conta, entidade_id, external_id FROM crm_sync_map")
    return {(r["conta"], r["entidade_id"]): r["external_id"] for r in rows}


async def test_imported_records_are_updated_not_created_again(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    ids = await old_system_ids(conn, crm)
    settings = settings_with(db_dsn, crm)

    result = await map_import.import_map(conn, settings, "clientes")

    assert (result.read, result.linked, result.unchanged, result.problems) == (2, 2, 0, {})
    assert await links(conn) == {("default", 1): ids[1], ("default", 2): ids[2]}
    await conn.execute("SELECT crm_enqueue(1, 'clientes', 1), crm_enqueue(1, 'clientes', 2)")
    await drain(settings)
    assert sorted(requests(crm)) == sorted(f"PUT /clientes/{ext}" for ext in ids.values())
    assert {c["nome"] for c in crm.records("clientes")} == {"Maria Souza", "Padaria Boa Massa"}


async def test_importing_again_changes_nothing_and_a_dry_run_writes_nothing(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    await old_system_ids(conn, crm)
    settings = settings_with(db_dsn, crm)

    dry = await map_import.import_map(conn, settings, "clientes", dry_run=True)
    assert (dry.linked, await links(conn)) == (2, {})
    await map_import.import_map(conn, settings, "clientes")
    again = await map_import.import_map(conn, settings, "clientes")

    assert (again.read, again.linked, again.unchanged, again.problems) == (2, 0, 2, {})


async def test_rows_that_contradict_the_map_are_reported_and_left_alone(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    ids = await old_system_ids(conn, crm)
    # crmd already linked cliente 1 elsewhere; a create of cliente 3 is in doubt.
    await conn.execute(
        "INSERT INTO crm_sync_map (conta, entidade, entidade_id, external_id)"
        " VALUES ('default', 'clientes', 1, '999')"
    )
    await conn.execute(
        "INSERT INTO crm_sync_map (conta, entidade, entidade_id) VALUES ('default', 'clientes', 3)"
    )
    query = (
        f"SELECT * FROM (VALUES (1, '{ids[1]}'), (2, '{ids[2]}'), (3, '77'), (4, '{ids[2]}'),"
        " (5, 'abc'), (6, NULL), (7, '88'), (7, '89')) AS t (id, external_id)"
    )
    settings = settings_with(db_dsn, crm)

    result = await map_import.import_map(conn, settings, "clientes", query=query)

    assert result.problems == {"divergente": 1, "duplicado": 4, "external_id_invalido": 2}
    assert result.linked == 1  # cliente 3: the create in doubt is resolved by the old id
    assert (await links(conn))[("default", 3)] == "77"
    assert (await links(conn))[("default", 1)] == "999"
    described = [map_import.describe("clientes", p) for p in result.examples]
    assert "clientes 1 já está vinculado ao registro 999 do CRM (conta default); mantido" in (
        " ".join(described)
    )
    assert any("'abc' não é um id do GestãoClick" in d for d in described)


async def test_a_crm_record_linked_to_another_erp_record_is_not_linked_twice(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    ids = await old_system_ids(conn, crm)
    await conn.execute(
        "INSERT INTO crm_sync_map (conta, entidade, entidade_id, external_id)"
        " VALUES ('default', 'clientes', 9, $1)",
        ids[1],
    )

    result = await map_import.import_map(conn, settings_with(db_dsn, crm), "clientes")

    assert result.problems == {"ocupado": 1} and result.linked == 1
    [problem] = result.examples
    assert map_import.describe("clientes", problem) == (
        f"o registro {ids[1]} do CRM já está vinculado a clientes 9 (conta default); clientes 1 "
        "não foi vinculado"
    )


async def test_lojas_with_accounts_of_their_own_get_the_engines_account_names(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    await old_system_ids(conn, crm)
    await conn.execute("INSERT INTO lojas (id, nome) VALUES (2, 'Filial')")
    await conn.execute("UPDATE clientes SET loja_id = 2 WHERE id = 2")
    loja2 = {"base_url": crm.url, **TOKENS}
    settings = settings_with(db_dsn, crm, crm={"lojas": {2: loja2}})

    with pytest.raises(InvalidRequest, match=r"não traz a\(s\) coluna\(s\) loja_id"):
        await map_import.import_map(conn, settings, "clientes")
    query = "SELECT id, loja_id, crm_id AS external_id FROM clientes"
    await map_import.import_map(conn, settings, "clientes", query=query)

    assert set(await links(conn)) == {
        (settings.crm.account_name(1), 1),
        (settings.crm.account_name(2), 2),
    }
    assert settings.crm.account_name(2) == "loja-2"


async def test_a_query_that_cannot_be_used_is_named(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    settings = make_settings(db_dsn, crm)
    with pytest.raises(InvalidRequest, match=r"defina \[map_import\] produtos"):
        await map_import.import_map(conn, settings, "produtos")
    with pytest.raises(InvalidRequest, match="recusada pelo banco"):
        await map_import.import_map(conn, settings, "produtos", query="SELECT nada FROM lugar")
    with pytest.raises(InvalidRequest, match="external_id"):
        await map_import.import_map(conn, settings, "produtos", query="SELECT id FROM produtos")
    with pytest.raises(InvalidRequest, match="atividades"):
        await map_import.import_map(conn, settings, "atividades", query="SELECT 1 AS id")


async def test_the_command_prints_a_summary_and_exits_65_on_problems(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    ids = await old_system_ids(conn, crm)

    dry = await crmd(db_dsn, "map", "import", "clientes", "--query", QUERY, "--dry-run")
    first = await crmd(db_dsn, "map", "import", "clientes", "--query", QUERY)
    again = await crmd(db_dsn, "map", "import", "clientes", "--query", QUERY)
    bad = await crmd(
        db_dsn, "map", "import", "clientes", "--query", f"SELECT 1 AS id, '{ids[2]}' AS external_id"
    )
    unknown = await crmd(db_dsn, "map", "import", "atividades")
    nothing = await crmd(db_dsn, "map", "import")

    assert dry.code == 0 and dry.out.splitlines() == [
        "clientes: 2 linhas lidas; 2 seriam vinculados; 0 já estavam no mapa",
        "(simulação: nada foi gravado)",
    ]
    assert first.code == 0
    assert first.out.strip() == "clientes: 2 linhas lidas; 2 vinculados; 0 já estavam no mapa"
    assert again.out.strip() == "clientes: 2 linhas lidas; 0 vinculados; 2 já estavam no mapa"
    assert bad.code == 65 and "1 com problema" in bad.out
    assert "já está vinculado ao registro" in bad.out
    assert (unknown.code, nothing.code) == (64, 64)
    assert "use clientes, produtos, vendas" in unknown.err
    assert "nenhuma consulta em [map_import]" in nothing.err
