"""What the scenarios set up: the development CRM, crmd's config, and data the CRM already knows.

Throughput and memory send edits of records the CRM already has (one PUT each): every contender
then does exactly one request per item, and the development CRM's list filter (a scan of every
record, fine for tests) stays out of the measurement.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from crmd.dev import seed
from crmd.dev.devcrm.server import DevCrm, DevCrmConfig

ACCESS_TOKEN = "bench-access-token"
SECRET_TOKEN = "bench-secret-token"
UNLIMITED = ((1_000_000, 1.0),)


@contextlib.asynccontextmanager
async def dev_crm(
    limits: tuple[tuple[int, float], ...] = (), latency: float = 0.0
) -> AsyncIterator[DevCrm]:
    config = DevCrmConfig(
        access_token=ACCESS_TOKEN, secret_access_token=SECRET_TOKEN, limits=limits, latency=latency
    )
    async with DevCrm(config) as crm:
        yield crm


def crmd_config(
    path: Path,
    dsn: str,
    crm_url: str,
    *,
    limits: tuple[tuple[int, float], ...] = UNLIMITED,
    concurrency: int = 16,
    pool_max_size: int = 10,
    log_level: str = "info",
) -> Path:
    """A TOML config for a `crmd run` child: admin endpoint off, JSON logs."""
    limit_lines = ", ".join(f"{{ requests = {n}, per_seconds = {s} }}" for n, s in limits)
    path.write_text(
        f"""[database]
dsn = {json.dumps(dsn)}
pool_max_size = {pool_max_size}

[crm]
base_url = {json.dumps(crm_url)}
access_token = {json.dumps(ACCESS_TOKEN)}
secret_access_token = {json.dumps(SECRET_TOKEN)}
concurrency = {concurrency}
limits = [{limit_lines}]

[admin]
listen = ""

[log]
level = "{log_level}"
format = "json"
""",
        encoding="utf-8",
    )
    return path


def crmd_argv(config: Path, *, once: bool = False) -> list[str]:
    return [sys.executable, "-m", "crmd", "run", "--config", str(config), *(["--once"] * once)]


def peer_argv(module: str, dsn: str, crm_url: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        f"bench.peers.{module}",
        "--dsn",
        dsn,
        "--url",
        crm_url,
        "--token",
        ACCESS_TOKEN,
        "--secret",
        SECRET_TOKEN,
        *extra,
    ]


async def seed_known(conn: asyncpg.Connection, *, items: int, lojas: int = 4) -> int:
    """`items` pending queue items (clientes and produtos, 4:1) of records the CRM already knows:
    seeded with `crmd dev seed`, mapped in crm_sync_map with a stale payload hash (so each one is
    sent, as an edit would be). Returns the number of pending items."""
    per_loja = max(items // lojas, 1)
    produtos = per_loja // 5
    await seed.seed(
        conn, lojas=lojas, clientes=per_loja - produtos, produtos=produtos, vendas=0, seed=6
    )
    await map_everything(conn)
    return int(await conn.fetchval("SELECT count(*) FROM crm_sync_queue WHERE estado = 'pendente'"))


async def map_everything(conn: asyncpg.Connection) -> None:
    """CRM ids 1..n in ERP id order, per entity: what `populate` creates in the CRM."""
    for entidade in ("clientes", "produtos"):
        await conn.execute(
            f"""INSERT INTO crm_sync_map (conta, entidade, entidade_id, external_id, payload_hash)
                SELECT 'default', '{entidade}', id, (row_number() OVER (ORDER BY id))::text, 'old'
                  FROM {entidade}"""
        )


async def populate(crm: DevCrm, conn: asyncpg.Connection) -> None:
    """Create in the CRM one record per ERP cliente and produto, ids in ERP id order."""
    for entidade, body in (
        ("clientes", {"tipo_pessoa": "PF", "nome": "Antigo"}),
        ("produtos", {"nome": "Antigo", "codigo_interno": "0", "valor_custo": "1.00"}),
    ):
        count = int(await conn.fetchval(f"SELECT count(*) FROM {entidade}"))
        for _ in range(count):
            crm.store.create(entidade, body)
