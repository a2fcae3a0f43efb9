"""The PgQueuer baseline: a worker built on PgQueuer (pgqueuer on PyPI) doing crmd's work per job.

Jobs live in PgQueuer's own table (installed into the same database by `prepare`), one per queue
item, with "loja:entidade:id" as payload. The entrypoint loads the row, sends it and records the
outcome with the shared `work.Sender`; PgQueuer dequeues, caps the jobs in flight at
`--concurrency` (`max_concurrent_tasks`) and marks each job done. Runs in drain mode: it exits
when the queue is empty.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

import asyncpg
import uvloop
from pgqueuer import AsyncpgPoolDriver, Job, QueueManager
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode

from bench.peers.work import Sender, Target

ENTRYPOINT = "crm_sync"


async def prepare(dsn: str) -> int:
    """Install PgQueuer's schema and turn every pending crm_sync_queue item into a job."""
    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries.from_asyncpg_connection(conn)
        await queries.install()
        items = await conn.fetch(
            "SELECT loja_id, entidade, entidade_id, prioridade FROM crm_sync_queue"
            " WHERE estado = 'pendente' ORDER BY prioridade DESC, id"
        )
        payloads: list[bytes | None] = [
            f"{i['loja_id']}:{i['entidade']}:{i['entidade_id']}".encode() for i in items
        ]
        for start in range(0, len(payloads), 5000):
            chunk = payloads[start : start + 5000]
            await queries.enqueue(
                [ENTRYPOINT] * len(chunk),
                chunk,
                [int(i["prioridade"]) for i in items[start : start + len(chunk)]],
            )
        return len(payloads)
    finally:
        await conn.close()


async def run(dsn: str, target: Target, concurrency: int) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=concurrency + 2)
    sender = Sender(target, concurrency)
    try:
        qm = QueueManager(Queries(AsyncpgPoolDriver(pool)))

        @qm.entrypoint(ENTRYPOINT)
        async def sync(job: Job) -> None:
            assert job.payload is not None
            loja, entidade, ident = job.payload.decode().split(":")
            async with pool.acquire() as conn:
                await sender.sync(conn, int(loja), entidade, int(ident))

        await qm.run(
            mode=QueueExecutionMode.drain,
            batch_size=max(concurrency // 2, 1),
            max_concurrent_tasks=concurrency,
            dequeue_timeout=timedelta(seconds=1),
        )
    finally:
        await sender.close()
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.pgq")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    target = Target(args.url, args.token, args.secret)
    uvloop.run(run(args.dsn, target, args.concurrency))  # as `pgq run` does when uvloop is there


if __name__ == "__main__":
    main()
