"""Deleting old rows: log rows past their retention and done queue items, in batches of short
transactions so a large backlog never holds locks for long."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from crmd.store.sql import queries


@dataclass(frozen=True)
class Removed:
    log_rows: int
    queue_rows: int
    log_before: datetime
    queue_before: datetime


async def cleanup(
    conn: asyncpg.Connection, log_days: int, queue_days: int, batch: int, *, dry_run: bool
) -> Removed:
    """Delete (or, dry, count) log rows older than `log_days` and done items older than
    `queue_days`; failed items are kept for a person."""
    cut = await conn.fetchrow(queries["cleanup_cutoffs"], log_days, queue_days)
    log_before, queue_before = cut["log_before"], cut["queue_before"]
    if dry_run:
        log_rows = int(await conn.fetchval(queries["cleanup_log_count"], log_before))
        queue_rows = int(await conn.fetchval(queries["cleanup_queue_count"], queue_before))
    else:
        log_rows = await _delete_batched(conn, "cleanup_log_batch", log_before, batch)
        queue_rows = await _delete_batched(conn, "cleanup_queue_batch", queue_before, batch)
    return Removed(log_rows, queue_rows, log_before, queue_before)


async def _delete_batched(conn: asyncpg.Connection, query: str, before: datetime, size: int) -> int:
    total = 0
    while True:
        status_line = await conn.execute(queries[query], before, size)
        deleted = int(status_line.rsplit(" ", 1)[-1])
        total += deleted
        if deleted < size:
            return total
