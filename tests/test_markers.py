"""Create markers: committed before each POST, the markers of creates that start together in one
statement, and a group the database refuses written one by one."""

from __future__ import annotations

import asyncio

import asyncpg

from crmd.engine.markers import CreateMarkers
from crmd.store.mapping import Creating


class Counting(CreateMarkers):
    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(lambda: pool)
        self.groups: list[int] = []

    async def _write(self, group: list[tuple[Creating, asyncio.Future[None]]]) -> None:
        self.groups.append(len(group))
        await super()._write(group)


async def markers_in(pool: asyncpg.Pool) -> list[tuple[str, int, str | None]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT conta, entidade_id, chave FROM crm_sync_map"
            " WHERE external_id IS NULL ORDER BY conta, entidade_id"
        )
    return [(r["conta"], r["entidade_id"], r["chave"]) for r in rows]


async def test_creates_starting_together_share_one_statement(pool: asyncpg.Pool) -> None:
    markers = Counting(pool)
    records = [(f"conta-{n % 3}", "produtos", n, f"P-{n}") for n in range(30)]
    await asyncio.gather(*(markers.mark(r) for r in records))
    assert sorted(await markers_in(pool)) == sorted((c, n, k) for c, _, n, k in records)
    assert sum(markers.groups) == 30 and len(markers.groups) <= 2, markers.groups
    await markers.mark(("conta-0", "produtos", 99, None))  # alone, when nothing else is waiting
    assert markers.groups[-1] == 1
    assert ("conta-0", 99, None) in await markers_in(pool)


async def test_a_group_the_database_refuses_is_written_one_by_one(pool: asyncpg.Pool) -> None:
    markers = Counting(pool)
    # The same record twice in one statement: PostgreSQL refuses the whole INSERT ... ON
    # CONFLICT (a row affected twice); alone, each is written, and the other records with them.
    records = [
        ("a", "clientes", 1, "111"),
        ("a", "clientes", 1, "222"),
        ("a", "clientes", 2, "333"),
    ]
    await asyncio.gather(*(markers.mark(r) for r in records))
    assert markers.groups[0] == 3 and markers.groups[1:] == [1, 1, 1]
    assert await markers_in(pool) == [("a", 1, "222"), ("a", 2, "333")]


async def test_a_database_away_fails_every_waiter_of_the_group(db_dsn: str) -> None:
    gone = await asyncpg.create_pool(db_dsn, min_size=0, max_size=1)
    await gone.close()
    markers = CreateMarkers(lambda: gone)
    results = await asyncio.gather(
        *(markers.mark(("a", "clientes", n, None)) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, asyncpg.InterfaceError) for r in results), results
