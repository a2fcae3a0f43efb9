"""Scenario 5: crmd's memory. Peak RSS, and RSS after 10 thousand versus 100 thousand items.

`crmd run` drains 100 thousand queue items (quick: 10 thousand) of new clientes (no CPF or CNPJ,
so each one is a single POST) against the development CRM answering at once; the process's RSS
is sampled as requests arrive. Its peak (VmHWM) is reported with the peak of crmd's runs in the
throughput scenario, when that ran first.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from bench import fixtures, proc
from bench.scenario import Context, Outcome
from crmd.dev.devcrm.server import DevCrm

GROWTH_TOLERANCE_MB = 5.0  # allocator noise: "no growth" means within this

CLIENTES = """
INSERT INTO clientes (loja_id, tipo_pessoa, nome, email, telefone, cep, logradouro, numero,
                      bairro, cidade, uf)
SELECT 1, 'PF', 'Cliente ' || g, 'cliente' || g || '@example.com.br',
       '(81) 3333-' || lpad((g % 10000)::text, 4, '0'), '50000-000', 'Rua das Flores',
       (1 + g % 2000)::text, 'Boa Viagem', 'Recife', 'PE'
  FROM generate_series(1, $1) g"""
# The rows go in with the ERP's triggers off and are enqueued in one statement (crmd's bulk mode).
ENQUEUE = """
INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, prioridade)
SELECT loja_id, 'clientes', id, 3 FROM clientes"""


async def run(ctx: Context) -> Outcome:
    early, total = (1_000, 10_000) if ctx.quick else (10_000, 100_000)
    async with ctx.pg.fresh_database("memory") as db, fixtures.dev_crm() as crm:
        conn = await asyncpg.connect(db.dsn)
        try:
            await _seed(conn, total)
            config = fixtures.crmd_config(ctx.tmp / "memory.toml", db.dsn, crm.url)
            log = ctx.tmp / "memory-crmd.log"
            progress = _Counter(crm)
            async with proc.running(
                fixtures.crmd_argv(config), log, progress=progress, interval=0.1
            ) as child:
                await _until_sent(progress, total, child)
                await asyncio.sleep(0.5)  # the last records are written; one more sample
                rss_early = child.rss_at_progress(early)
                rss_total = child.rss_at_progress(total)
                await proc.terminate(child)
        finally:
            await conn.close()
    if rss_early is None or rss_total is None:
        raise RuntimeError("no RSS samples at the points wanted")
    return _outcome(ctx, early, total, rss_early, rss_total, child.peak_rss)


class _Counter:
    """Requests the CRM has received, for the sampler (reads the ledger's length only)."""

    def __init__(self, crm: DevCrm) -> None:
        self.crm = crm

    def __call__(self) -> int:
        return len(self.crm.ledger)


async def _seed(conn: asyncpg.Connection, total: int) -> None:
    await conn.execute("INSERT INTO lojas (id, nome) VALUES (1, 'Loja Centro')")
    await conn.execute("ALTER TABLE clientes DISABLE TRIGGER USER")
    await conn.execute(CLIENTES, total)
    await conn.execute("ALTER TABLE clientes ENABLE TRIGGER USER")
    async with conn.transaction():
        await conn.execute("SELECT set_config('crmd.inner_insert', 'on', true)")
        await conn.execute(ENQUEUE)
    await conn.execute("VACUUM ANALYZE")


async def _until_sent(progress: _Counter, total: int, child: proc.Child) -> None:
    deadline = time.monotonic() + 1800
    while progress() < total:
        if child.usage is not None or time.monotonic() > deadline:
            raise RuntimeError(f"crmd stopped after {progress()} requests:\n{child.log_tail()}")
        await asyncio.sleep(0.2)


def _outcome(
    ctx: Context, early: int, total: int, rss_early: int, rss_total: int, peak: int
) -> Outcome:
    out = Outcome("memory", "Memory of the crmd process")
    mb = 2**20
    growth = (rss_total - rss_early) / mb
    throughput_peak = ctx.shared.get("throughput_crmd_peak_rss_mb")
    peak_mb = max(peak / mb, throughput_peak or 0.0)
    out.rows.append(("measure", "MB"))
    out.rows.append((f"RSS after {early:,} items", f"{rss_early / mb:.1f}"))
    out.rows.append((f"RSS after {total:,} items", f"{rss_total / mb:.1f}"))
    out.rows.append((f"peak RSS, {total:,}-item run", f"{peak / mb:.1f}"))
    if throughput_peak is not None:
        out.rows.append(("peak RSS, throughput runs", f"{throughput_peak:.1f}"))
    out.figures = {
        "items": total,
        "rss_mb": {str(early): round(rss_early / mb, 1), str(total): round(rss_total / mb, 1)},
        "growth_mb": round(growth, 1),
        "peak_rss_mb": round(peak / mb, 1),
        "throughput_peak_rss_mb": throughput_peak,
    }
    out.goal("peak RSS < 100 MB", peak_mb < 100, f"{peak_mb:.1f} MB")
    out.goal(
        f"no growth from {early:,} to {total:,} items (within {GROWTH_TOLERANCE_MB:g} MB)",
        growth <= GROWTH_TOLERANCE_MB,
        f"{growth:+.1f} MB",
    )
    return out
