"""Scenario 3: wake-up latency of an idle daemon.

`crmd run` waits idle (its safety-net poll is 30 s); the benchmark inserts one produto into the ERP
every 100 ms, and the ERP's trigger enqueues it (NOTIFY at commit). For each insert: the time from
the moment its commit returned to the moment the development CRM received crmd's first request for
it (the lookup `GET /produtos?codigo=...`), both on this machine's wall clock. One unmeasured
insert goes first, as a long-running daemon has already made its HTTP session.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from urllib.parse import parse_qs

import asyncpg

from bench import fixtures, proc
from bench.scenario import Context, Outcome
from crmd.dev.devcrm.ledger import LedgerEntry
from crmd.dev.devcrm.server import DevCrm

INTERVAL = 0.1
INSERT = """
INSERT INTO produtos (loja_id, codigo_interno, nome, valor_custo, valor_venda, estoque)
VALUES (1, $1, $2, 10.5, 18.9, 7)"""


async def run(ctx: Context) -> Outcome:
    seconds = 10.0 if ctx.quick else 30.0
    async with ctx.pg.fresh_database("latency") as db, fixtures.dev_crm() as crm:
        conn = await asyncpg.connect(db.dsn)
        try:
            await conn.execute("INSERT INTO lojas (id, nome) VALUES (1, 'Loja Centro')")
            config = fixtures.crmd_config(ctx.tmp / "latency.toml", db.dsn, crm.url)
            log = ctx.tmp / "latency-crmd.log"
            async with proc.running(fixtures.crmd_argv(config), log) as child:
                await _until_listening(child)
                # One unmeasured insert first: the daemon's HTTP session and prepared statements
                # are made on first use, and a long-running daemon has them.
                await _insert_every(conn, INTERVAL, 1, prefix="WARM")
                await _until_received(crm, 1, child)
                committed = await _insert_every(conn, INTERVAL, int(seconds / INTERVAL))
                await _until_received(crm, len(committed) + 1, child)
                await proc.terminate(child)
        finally:
            await conn.close()
        received = _first_lookups(crm.ledger)
    latencies = sorted(
        (received[code] - at) * 1000 for code, at in committed.items() if code in received
    )
    return _outcome(latencies, len(committed), seconds)


def _outcome(latencies: list[float], inserted: int, seconds: float) -> Outcome:
    out = Outcome("latency", "Wake-up latency (insert commit -> CRM receives the request)")
    p50, p95, p99 = (_percentile(latencies, q) for q in (50, 95, 99))
    out.rows.append(("inserts", "received", "p50 ms", "p95 ms", "p99 ms", "max ms"))
    out.rows.append(
        (
            str(inserted),
            str(len(latencies)),
            f"{p50:.1f}",
            f"{p95:.1f}",
            f"{p99:.1f}",
            f"{max(latencies, default=float('nan')):.1f}",
        )
    )
    out.figures = {
        "insert_interval_seconds": INTERVAL,
        "seconds": seconds,
        "inserted": inserted,
        "received": len(latencies),
        "p50_ms": round(p50, 2),
        "p95_ms": round(p95, 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(max(latencies, default=float("nan")), 2),
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
    }
    out.goal("p99 < 50 ms", p99 < 50 and len(latencies) == inserted, f"{p99:.1f} ms")
    return out


async def _until_listening(child: proc.Child) -> None:
    """Until the daemon logged that its LISTEN connection is up."""
    deadline = time.monotonic() + 60
    while '"listening"' not in child.log_path.read_text(errors="replace"):
        if child.usage is not None or time.monotonic() > deadline:
            raise RuntimeError(f"crmd did not start listening:\n{child.log_tail()}")
        await asyncio.sleep(0.05)


async def _insert_every(
    conn: asyncpg.Connection, interval: float, count: int, prefix: str = "LAT"
) -> dict[str, float]:
    """Insert `count` produtos on a fixed schedule; returns when each commit returned."""
    committed: dict[str, float] = {}
    start = time.monotonic()
    for i in range(count):
        await asyncio.sleep(max(start + i * interval - time.monotonic(), 0))
        code = f"{prefix}-{i:06d}"
        await conn.execute(INSERT, code, f"Produto de latência {i}")  # autocommit
        committed[code] = time.time()
    return committed


async def _until_received(crm: DevCrm, count: int, child: proc.Child) -> None:
    deadline = time.monotonic() + 30
    while len(_first_lookups(crm.ledger)) < count:
        if child.usage is not None or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)


def _first_lookups(ledger: list[LedgerEntry]) -> dict[str, float]:
    """Per produto code, when its first request (the lookup by code) arrived (wall clock)."""
    seen: dict[str, float] = {}
    for entry in ledger:
        codes = parse_qs(entry.query).get("codigo")
        if entry.method == "GET" and codes and codes[0] not in seen:
            seen[codes[0]] = entry.wall
    return seen


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return float("nan")
    rank = max(int(-(-q * len(values) // 100)), 1)
    return values[rank - 1]
