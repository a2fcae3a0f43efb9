"""The daily cleanup (the old 03:00 script): old log rows and old done queue items."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from crmd.config import CleanupSettings
from crmd.store import cleanup as store

log = structlog.get_logger("crmd.ops")


@dataclass(frozen=True)
class CleanupResult:
    log_rows: int
    queue_rows: int
    dry_run: bool
    log_before: datetime
    queue_before: datetime

    def __str__(self) -> str:
        verb = "seriam removidos" if self.dry_run else "removidos"
        return f"log: {self.log_rows} {verb}; fila: {self.queue_rows} concluídos {verb}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "log_rows": self.log_rows,
            "queue_rows": self.queue_rows,
            "dry_run": self.dry_run,
            "log_before": self.log_before.isoformat(),
            "queue_before": self.queue_before.isoformat(),
        }


async def cleanup(
    conn: asyncpg.Connection, settings: CleanupSettings, *, dry_run: bool = False
) -> CleanupResult:
    """Delete old log rows and old done queue items, in batches of `settings.batch_size` rows,
    each its own short transaction. A dry run only counts."""
    removed = await store.cleanup(
        conn,
        settings.log_retention_days,
        settings.queue_retention_days,
        settings.batch_size,
        dry_run=dry_run,
    )
    if not dry_run:
        log.info("cleanup", log_rows=removed.log_rows, queue_rows=removed.queue_rows)
    return CleanupResult(
        removed.log_rows, removed.queue_rows, dry_run, removed.log_before, removed.queue_before
    )
