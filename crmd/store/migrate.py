"""Numbered SQL migrations, each applied once and recorded, under an advisory lock.

A set of migrations lives in a package folder as files named `NNNN_name.sql`; each runs in its
own transaction together with its record in `crmd_schema_version`. `CORE` holds crmd's own
tables; the development tools add the reference ERP schema as a set of their own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import asyncpg

from crmd.store.db import LOCK_CLASS
from crmd.store.sql import queries

LOCK_MIGRATE = 1
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True)
class MigrationSet:
    name: str  # crmd_schema_version.conjunto
    package: str
    folder: str


CORE = MigrationSet("core", "crmd.store", "migrations/core")


class SchemaOutdated(Exception):
    """The database lacks migrations this version of crmd needs; the message names them."""


@dataclass(frozen=True)
class Migration:
    conjunto: str
    version: int
    name: str
    sql: str

    def __str__(self) -> str:
        return f"{self.conjunto}/{self.version:04d}_{self.name}"


def available(migration_set: MigrationSet) -> list[Migration]:
    folder = resources.files(migration_set.package).joinpath(migration_set.folder)
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            text = entry.read_text(encoding="utf-8")
            found.append(Migration(migration_set.name, int(match[1]), match[2], text))
    return sorted(found, key=lambda m: m.version)


async def applied(conn: asyncpg.Connection) -> set[tuple[str, int]]:
    if not await conn.fetchval(queries["schema_version_table_exists"]):
        return set()
    return {
        (r["conjunto"], r["versao"]) for r in await conn.fetch(queries["schema_versions_applied"])
    }


async def pending(
    conn: asyncpg.Connection, sets: Sequence[MigrationSet] = (CORE,)
) -> list[Migration]:
    """Migrations of `sets` not yet applied: empty means the schema is what this code expects."""
    done = await applied(conn)
    return [m for s in sets for m in available(s) if (m.conjunto, m.version) not in done]


async def check_current(conn: asyncpg.Connection) -> None:
    """Raise SchemaOutdated unless every core migration is applied."""
    missing = await pending(conn)
    if missing:
        names = ", ".join(map(str, missing))
        raise SchemaOutdated(
            f"o esquema do banco não está em dia (falta {names}): rode crmd migrate"
        )


async def migrate(conn: asyncpg.Connection, extra: Sequence[MigrationSet] = ()) -> list[Migration]:
    """Apply what is missing of the core set and of `extra`; returns what was applied (empty on a
    second run)."""
    await conn.execute(queries["advisory_lock"], LOCK_CLASS, LOCK_MIGRATE)
    try:
        await conn.execute(queries["schema_version_table"])
        todo = await pending(conn, (CORE, *extra))
        for migration in todo:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    queries["schema_version_record"],
                    migration.conjunto,
                    migration.version,
                    migration.name,
                )
        return todo
    finally:
        await conn.execute(queries["advisory_unlock"], LOCK_CLASS, LOCK_MIGRATE)
