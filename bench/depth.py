"""Scenario 4: queue depth. Does claiming stay cheap as finished rows pile up?

One database: 100 thousand pending items (distinct records, as the unique pending index demands),
then 10 thousand done rows; time `crmd.store.queue.claim` of a batch of 100, many times (each
claimed batch is then marked done, untimed, so every claim sees the same queue). Then the done
rows grow to 1 million (quick: 100 thousand) and the claims are timed again. Finally, the time
`crmd.store.queue.enqueue_many` takes to enqueue 1 million new items (quick: 50 thousand), in
chunks of 100 thousand.
"""

from __future__ import annotations

import statistics
import time

import asyncpg

from bench.scenario import Context, Outcome
from crmd.model import NewItem
from crmd.store import queue

PENDING = 100_000
SMALL_DONE = 10_000
CLAIMS = 40
CHUNK = 100_000

# crmd's own bulk inserts coalesce with ON CONFLICT themselves; the row trigger stands aside.
BULK_MODE = "SELECT set_config('crmd.inner_insert', 'on', false)"
PENDING_ROWS = """
INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, prioridade)
SELECT 1 + g % 4, 'clientes', g, 3 FROM generate_series(1, $1) g"""
DONE_ROWS = """
INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, prioridade, estado, tentativas,
                            processado_em, criado_em)
SELECT 1 + g % 4, 'produtos', g, 3, 'concluido', 1, now() - interval '1 day',
       now() - interval '1 day'
  FROM generate_series($1::bigint, $2::bigint) g"""
DONE = "UPDATE crm_sync_queue SET estado = 'concluido', processado_em = now() WHERE id = ANY($1)"


async def run(ctx: Context) -> Outcome:
    large_done = 100_000 if ctx.quick else 1_000_000
    bulk = 50_000 if ctx.quick else 1_000_000
    async with ctx.pg.fresh_database("depth") as db:
        conn = await asyncpg.connect(db.dsn)
        try:
            await conn.execute(BULK_MODE)
            await conn.execute(DONE_ROWS, 1, SMALL_DONE)
            await conn.execute(PENDING_ROWS, PENDING)
            small = await _claims(conn)
            await conn.execute(DONE_ROWS, SMALL_DONE + 1, large_done)
            large = await _claims(conn)
            table_mb = await conn.fetchval(
                "SELECT pg_total_relation_size('crm_sync_queue') / 1048576.0"
            )
            enqueue_seconds = await _bulk_enqueue(conn, bulk)
        finally:
            await conn.close()
    return _outcome(small, large, large_done, bulk, enqueue_seconds, float(table_mb))


async def _claims(conn: asyncpg.Connection) -> list[float]:
    """Claim times in ms, after VACUUM ANALYZE (as autovacuum would have done by then)."""
    await conn.execute("VACUUM ANALYZE crm_sync_queue")
    times = []
    for _ in range(CLAIMS):
        start = time.perf_counter()
        items = await queue.claim(conn, 100, 300.0)
        times.append((time.perf_counter() - start) * 1000)
        assert len(items) == 100
        await conn.execute(DONE, [i.id for i in items])
    return times[CLAIMS // 4 :]  # the first quarter warms the cache and prepares the statement


async def _bulk_enqueue(conn: asyncpg.Connection, count: int) -> float:
    start = time.perf_counter()
    for first in range(1, count + 1, CHUNK):
        items = [NewItem(1, "vendas", i) for i in range(first, min(first + CHUNK, count + 1))]
        await queue.enqueue_many(conn, items)
    return time.perf_counter() - start


def _outcome(
    small: list[float],
    large: list[float],
    large_done: int,
    bulk: int,
    enqueue_seconds: float,
    table_mb: float,
) -> Outcome:
    out = Outcome("depth", "Queue depth (claim 100 with 100k pending)")
    med_small, med_large = statistics.median(small), statistics.median(large)
    ratio = med_large / med_small
    out.rows.append(("done rows", "claim median ms", "claim p90 ms"))
    for done, times in ((SMALL_DONE, small), (large_done, large)):
        out.rows.append((f"{done:,}", f"{statistics.median(times):.2f}", f"{_p90(times):.2f}"))
    out.notes.append(
        f"bulk enqueue of {bulk:,} items: {enqueue_seconds:.1f} s "
        f"({bulk / enqueue_seconds:,.0f} items/s); queue table {table_mb:.0f} MB"
    )
    out.figures = {
        "pending": PENDING,
        "claims_timed": len(small),
        "claim_ms": {
            str(SMALL_DONE): {"median": round(med_small, 3), "p90": round(_p90(small), 3)},
            str(large_done): {"median": round(med_large, 3), "p90": round(_p90(large), 3)},
        },
        "claim_ratio": round(ratio, 3),
        "bulk_enqueue": {
            "items": bulk,
            "seconds": round(enqueue_seconds, 2),
            "items_per_second": round(bulk / enqueue_seconds),
        },
        "queue_table_mb": round(table_mb, 1),
    }
    out.goal(
        f"claim time ratio ({large_done:,} vs {SMALL_DONE:,} done) < 1.5",
        ratio < 1.5,
        f"{ratio:.2f}",
    )
    return out


def _p90(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.9) - 1]
