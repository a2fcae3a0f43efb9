"""Migrations: applied once, recorded, safe to repeat and to run concurrently."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from crmd.dev.schema import REFERENCE_ERP
from crmd.store import migrate
from tests.conftest import PgServer, run_crmd


@pytest.fixture
async def empty_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    name = f"crmd_empty_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_server.admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.dsn_for(name)
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


async def tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def test_migrate_creates_core_schema_and_second_run_changes_nothing(
    empty_dsn: str,
) -> None:
    conn = await asyncpg.connect(empty_dsn)
    try:
        first = await migrate.migrate(conn)
        core = [(m.conjunto, m.version) for m in migrate.available(migrate.CORE)]
        assert core[0] == ("core", 1)
        assert [(m.conjunto, m.version) for m in first] == core
        assert await migrate.pending(conn) == []
        assert await migrate.migrate(conn) == []
    finally:
        await conn.close()
    assert {"crm_sync_queue", "crm_sync_log", "crm_sync_map", "crmd_schema_version"} <= (
        await tables(empty_dsn)
    )
    assert "clientes" not in await tables(empty_dsn)


async def test_reference_erp_is_optional_and_added_later(empty_dsn: str) -> None:
    conn = await asyncpg.connect(empty_dsn)
    try:
        await migrate.migrate(conn)
        added = await migrate.migrate(conn, [REFERENCE_ERP])
        assert [(m.conjunto, m.version) for m in added] == [("reference_erp", 1)]
        assert await migrate.migrate(conn, [REFERENCE_ERP]) == []
    finally:
        await conn.close()
    assert {"lojas", "clientes", "produtos", "vendas", "venda_itens", "atividades"} <= (
        await tables(empty_dsn)
    )


async def test_concurrent_migrations_apply_each_file_once(empty_dsn: str) -> None:
    conns = [await asyncpg.connect(empty_dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate.migrate(c, [REFERENCE_ERP]) for c in conns))
        applied = sorted((m.conjunto, m.version) for r in results for m in r)
        expected = sorted(
            (m.conjunto, m.version)
            for s in (migrate.CORE, REFERENCE_ERP)
            for m in migrate.available(s)
        )
        assert applied == expected
        count = await conns[0].fetchval("SELECT count(*) FROM crmd_schema_version")
        assert count == len(expected)
    finally:
        for c in conns:
            await c.close()


async def test_failed_migration_leaves_nothing_half_applied(empty_dsn: str) -> None:
    conn = await asyncpg.connect(empty_dsn)
    try:
        await conn.execute("CREATE TABLE crm_sync_log (id int)")  # collides with 0001
        with pytest.raises(asyncpg.DuplicateTableError):
            await migrate.migrate(conn)
        assert await migrate.applied(conn) == set()
        assert "crm_sync_queue" not in await tables(empty_dsn)
        # The lock was released: once the obstacle is gone, migrating works.
        await conn.execute("DROP TABLE crm_sync_log")
        assert len(await migrate.migrate(conn)) == len(migrate.available(migrate.CORE))
    finally:
        await conn.close()


def migrate_cmd(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    # CRMD_CONFIG is an empty file: defaults plus the environment.
    return run_crmd(*args, env={"CRMD_DATABASE__DSN": dsn, "CRMD_CONFIG": os.devnull})


async def test_migrate_command_on_empty_database_then_again(empty_dsn: str) -> None:
    first = await asyncio.to_thread(migrate_cmd, "migrate", "--with-reference-erp", dsn=empty_dsn)
    assert first.returncode == 0, first.stderr
    assert "aplicada: core/0001_queue" in first.stdout
    assert "aplicada: reference_erp/0001_erp" in first.stdout
    second = await asyncio.to_thread(migrate_cmd, "migrate", "--with-reference-erp", dsn=empty_dsn)
    assert second.returncode == 0
    assert "nada a aplicar" in second.stdout and "aplicada" not in second.stdout


def test_migrate_command_reports_unreachable_database_with_exit_69() -> None:
    result = migrate_cmd("migrate", dsn="postgresql://crmd:topsecret@127.0.0.1:1/none")
    assert result.returncode == 69
    assert "não foi possível conectar a postgresql://crmd:***@127.0.0.1:1/none" in result.stderr
    assert "topsecret" not in result.stderr + result.stdout
