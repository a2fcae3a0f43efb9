"""Group commit of outcomes: a worker hands its outcome over and moves on to the next item.

One task writes whatever has gathered, in one statement, while the next group gathers; so under
load many outcomes share a round trip and a commit, and when idle an outcome is written at once.
An outcome not yet written when the process dies is lost with it: its item stays leased and is
tried again after the lease (a create was marked in crm_sync_map before its POST, so the retry
looks the record up instead of creating it twice).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import structlog

from crmd.model import Entry, RetryPolicy, Settled
from crmd.store import queue
from crmd.store.db import DB_ERRORS

log = structlog.get_logger("crmd.recorder")

MAX_GROUP = 500


class Recorder:
    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        policy: Callable[[], RetryPolicy],
        settled: Callable[[Entry, Settled], None],
    ) -> None:
        self._pool = pool
        self._policy = policy
        self._settled = settled
        self._pending: list[Entry] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def submit(self, entry: Entry) -> None:
        self._pending.append(entry)
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="recorder")

    async def drain(self) -> None:
        """Return once everything submitted so far is written (or its write failed)."""
        await self._idle.wait()

    async def close(self) -> None:
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                group = self._pending[:MAX_GROUP]
                del self._pending[:MAX_GROUP]
                await self._write(group)
            self._idle.set()

    async def _write(self, group: list[Entry]) -> None:
        try:
            async with self._pool().acquire() as conn:
                results = await queue.settle(conn, group, self._policy())
        except DB_ERRORS as exc:
            log.error(
                "record_failed",
                count=len(group),
                error=str(exc) or type(exc).__name__,
                note="these items are tried again when their lease ends",
            )
            return
        for entry, settled in zip(group, results, strict=True):
            self._settled(entry, settled)
