"""Sample ERP data for demos and benchmarks: placeholder until the generator lands."""

from __future__ import annotations

import asyncpg


async def seed(
    conn: asyncpg.Connection, *, lojas: int, clientes: int, produtos: int, vendas: int,
    seed: int | None = None,
) -> dict[str, int]:
    raise NotImplementedError
