"""Numbered SQL migrations, each applied once and recorded, under an advisory lock.

Two sets: `core` (crmd's own tables, always) and `reference_erp` (the sample ERP schema, on
request). Files are named `NNNN_name.sql`; each runs in its own transaction with its record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from crmd.store.sql import queries

CORE = "core"
REFERENCE_ERP = "reference_erp"
# pg_advisory_lock(LOCK_CLASS, LOCK_MIGRATE): 'crmd' in ASCII, then the lock's purpose.
LOCK_CLASS = 0x63726D64
LOCK_MIGRATE = 1
# Where each set's files live: crmd's own tables ship with the product, the sample ERP schema
# with the development tools.
LOCATIONS = {
    CORE: ("crmd.store", "migrations/core"),
    REFERENCE_ERP: ("crmd.dev", "migrations/reference_erp"),
}
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True)
class Migration:
    conjunto: str
    version: int
    name: str
    sql: str


def available(conjunto: str) -> list[Migration]:
    package, folder_name = LOCATIONS[conjunto]
    folder = resources.files(package).joinpath(folder_name)
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            text = entry.read_text(encoding="utf-8")
            found.append(Migration(conjunto, int(match[1]), match[2], text))
    return sorted(found, key=lambda m: m.version)


async def applied(conn: asyncpg.Connection) -> set[tuple[str, int]]:
    if not await conn.fetchval(queries["schema_version_table_exists"]):
        return set()
    return {
        (r["conjunto"], r["versao"]) for r in await conn.fetch(queries["schema_versions_applied"])
    }


async def pending(conn: asyncpg.Connection, sets: tuple[str, ...] = (CORE,)) -> list[Migration]:
    """Migrations of `sets` not yet applied: empty means the schema is what this code expects."""
    done = await applied(conn)
    return [m for s in sets for m in available(s) if (m.conjunto, m.version) not in done]


async def migrate(conn: asyncpg.Connection, *, reference_erp: bool = False) -> list[Migration]:
    """Apply what is missing; returns what was applied (empty on a second run)."""
    sets = (CORE, REFERENCE_ERP) if reference_erp else (CORE,)
    await conn.execute(queries["advisory_lock"], LOCK_CLASS, LOCK_MIGRATE)
    try:
        await conn.execute(queries["schema_version_table"])
        todo = await pending(conn, sets)
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
