"""Scenario 2: throughput against peers, limits off, the CRM answering in 0 ms and in 20 ms.

The same queue (clientes and produtos from `crmd dev seed`, each an edit of a record the CRM
already knows: one PUT) is drained by crmd (`crmd run`, the daemon), by a PgQueuer worker and by
the cron-style baseline, each in its own process on its own copy of the database, against a fresh
development CRM. Items per second over the sending window (first request to last), CPU seconds
of the process over the same window per 1,000 items, and peak RSS (for scenario 5).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

import asyncpg
import psutil

from bench import fixtures, pg, proc
from bench.peers import pgq
from bench.scenario import Context, Outcome, ratio
from crmd.dev.devcrm.server import DevCrm

CONCURRENCY = 16
CONTENDERS = ("crmd", "pgqueuer", "cron")


@dataclass
class Run:
    contender: str
    latency_ms: int
    items: int
    seconds: float
    items_per_s: float
    cpu_seconds: float
    cpu_per_1000: float
    peak_rss_mb: float
    non_200: int
    crm_server_cpu_per_1000: float
    """CPU of the development CRM (in the benchmark's own process) per 1,000 items."""
    postgres_cpu_per_1000: float | None
    """CPU of the PostgreSQL server per 1,000 items (None when it runs elsewhere)."""


async def run(ctx: Context) -> Outcome:
    items = 2_000 if ctx.quick else 20_000
    cron_seconds = 4.0 if ctx.quick else 10.0
    out = Outcome("throughput", "Throughput against peers (limits off)")
    runs: list[Run] = []
    # One development CRM for every run (its records are made once; each run reads its own part
    # of the ledger), and one seeded database copied for every run.
    async with _template(ctx, items) as (template, queued), fixtures.dev_crm() as crm:
        async with ctx.pg.fresh_database("tput_crm", template=template) as db:
            conn = await asyncpg.connect(db.dsn)
            try:
                await fixtures.populate(crm, conn)
            finally:
                await conn.close()
        for latency_ms in (0, 20):
            crm.set_faults(latency=latency_ms / 1000)
            for contender in CONTENDERS:
                runs.append(await _one(ctx, crm, template, contender, latency_ms, cron_seconds))
    ctx.shared["throughput_crmd_peak_rss_mb"] = max(
        r.peak_rss_mb for r in runs if r.contender == "crmd"
    )
    out.figures = {
        "queued_items": queued,
        "concurrency": CONCURRENCY,
        "cron_time_cap_seconds": cron_seconds,
        "runs": [asdict(r) for r in runs],
    }
    _summarise(out, runs)
    return out


def _summarise(out: Outcome, runs: list[Run]) -> None:
    out.rows.append(
        ("CRM", "contender", "items", "items/s", "CPU s/1000", "peak RSS MB", "PG CPU s/1000")
    )
    for r in runs:
        pg_cpu = "-" if r.postgres_cpu_per_1000 is None else f"{r.postgres_cpu_per_1000:.2f}"
        out.rows.append(
            (
                f"{r.latency_ms} ms",
                r.contender,
                str(r.items),
                f"{r.items_per_s:.0f}",
                f"{r.cpu_per_1000:.2f}",
                f"{r.peak_rss_mb:.0f}",
                pg_cpu,
            )
        )
    by = {(r.contender, r.latency_ms): r for r in runs}
    for latency_ms in (0, 20):
        crmd, peer, cron = (by[(c, latency_ms)] for c in CONTENDERS)
        vs_pgq = ratio(crmd.items_per_s, peer.items_per_s)
        vs_cron = ratio(crmd.items_per_s, cron.items_per_s)
        out.figures[f"ratios_{latency_ms}ms"] = {
            "crmd_vs_pgqueuer": round(vs_pgq, 2),
            "crmd_vs_cron": round(vs_cron, 2),
            "cpu_per_item_pgqueuer_vs_crmd": round(ratio(peer.cpu_per_1000, crmd.cpu_per_1000), 2),
        }
        out.notes.append(
            f"{latency_ms} ms: crmd {vs_pgq:.2f}x PgQueuer, {vs_cron:.1f}x cron-style; "
            f"CPU per item PgQueuer/crmd {ratio(peer.cpu_per_1000, crmd.cpu_per_1000):.2f}"
        )
        if latency_ms == 20:
            out.goal("crmd >= 1.5x PgQueuer at 20 ms", vs_pgq >= 1.5, f"{vs_pgq:.2f}x")
            out.goal("crmd >= 10x cron-style at 20 ms", vs_cron >= 10, f"{vs_cron:.1f}x")
    errors = sum(r.non_200 for r in runs)
    if errors:
        out.notes.append(f"{errors} requests were not answered 200 (see the runs)")


@contextlib.asynccontextmanager
async def _template(ctx: Context, items: int) -> AsyncIterator[tuple[str, int]]:
    """A database holding the queued items, copied for every run."""
    async with ctx.pg.fresh_database("tput_tpl") as db:
        conn = await asyncpg.connect(db.dsn)
        try:
            queued = await fixtures.seed_known(conn, items=items)
        finally:
            await conn.close()
        yield db.name, queued


async def _one(
    ctx: Context, crm: DevCrm, template: str, contender: str, latency_ms: int, cron_seconds: float
) -> Run:
    label = f"{contender}_{latency_ms}"
    base = len(crm.ledger)
    async with ctx.pg.fresh_database(label, template=template) as db:
        dsn = db.dsn
        conn = await asyncpg.connect(dsn)
        try:
            if contender == "pgqueuer":
                await pgq.prepare(dsn)
            argv = _argv(ctx, contender, dsn, crm.url, cron_seconds)
            log = ctx.tmp / f"throughput-{label}-{uuid.uuid4().hex[:6]}.log"
            postmaster = await pg.server_process(conn)
            pg_before, me_before = pg.server_cpu(postmaster), _own_cpu()
            async with proc.running(argv, log, progress=lambda: len(crm.ledger) - base) as child:
                if contender == "crmd":
                    await _until_drained(conn, child)
                    await proc.terminate(child)
                else:
                    await proc.wait(child, within=1800)
                if child.usage is None or child.usage.returncode != 0:
                    raise RuntimeError(f"{contender} failed:\n{child.log_tail()}")
            pg_after, me_after = pg.server_cpu(postmaster), _own_cpu()
            done = int(
                await conn.fetchval("SELECT count(*) FROM crm_sync_log WHERE status = 'sucesso'")
            )
        finally:
            await conn.close()
    ledger = crm.ledger[base:]
    first, last = ledger[0].monotonic, ledger[-1].monotonic
    seconds = max(last - first, 1e-6)
    cpu = child.cpu_between(first, last)
    assert child.usage is not None
    return Run(
        contender=contender,
        latency_ms=latency_ms,
        items=done,
        seconds=round(seconds, 2),
        items_per_s=round(done / seconds, 1),
        cpu_seconds=round(cpu, 2),
        cpu_per_1000=round(cpu / done * 1000, 3),
        peak_rss_mb=round(child.peak_rss / 2**20, 1),
        non_200=sum(1 for e in ledger if e.status != 200),
        crm_server_cpu_per_1000=round((me_after - me_before) / done * 1000, 3),
        postgres_cpu_per_1000=(
            None
            if pg_before is None or pg_after is None
            else round((pg_after - pg_before) / done * 1000, 3)
        ),
    )


def _own_cpu() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def _argv(ctx: Context, contender: str, dsn: str, url: str, cron_seconds: float) -> list[str]:
    if contender == "crmd":
        config = fixtures.crmd_config(
            ctx.tmp / f"crmd-{uuid.uuid4().hex[:6]}.toml", dsn, url, concurrency=CONCURRENCY
        )
        return fixtures.crmd_argv(config)
    if contender == "pgqueuer":
        return fixtures.peer_argv("pgq", dsn, url, "--concurrency", str(CONCURRENCY))
    return fixtures.peer_argv("cron", dsn, url, "--seconds", str(cron_seconds))


async def _until_drained(conn: asyncpg.Connection, child: proc.Child) -> None:
    """Until nothing is pending or in flight (the daemon stays up; it is stopped afterwards)."""
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        if child.usage is not None:
            raise RuntimeError(f"crmd exited early:\n{child.log_tail()}")
        left = await conn.fetchval(
            "SELECT count(*) FROM crm_sync_queue WHERE estado IN ('pendente', 'processando')"
        )
        if left == 0:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("crmd did not drain the queue in 30 minutes")
