"""Group commit of outcomes: a worker hands its outcome over and moves on to the next item.

One task writes whatever has gathered, in one statement, while the next group gathers; so under
load many outcomes share a round trip and a commit, and when idle an outcome is written at once.
A write that fails because the database is away is tried again with growing pauses (the items
stay held, their leases extended), so an outage costs no item an attempt; an outcome the
database refuses (bad data) is written alone, so it cannot hold up the others. An outcome not
yet written when the process dies is lost with it: its item stays leased and is tried again
after the lease (a create was marked in crm_sync_map before its POST, so the retry looks the
record up instead of creating it twice).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import structlog

from crmd.aio import Backoff, wait_any
from crmd.model import Entry, Item, Outcome, RetryPolicy, Settled
from crmd.store import queue
from crmd.store.db import DB_ERRORS, refused

log = structlog.get_logger("crmd.recorder")

MAX_GROUP = 500
UNWRITTEN = "o resultado do envio não pôde ser gravado"


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
        self._starting: list[Item] = []  # written before the outcomes gathered with them
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    def started(self, item: Item) -> None:
        """A worker started on `item`: its attempt is spent (written ahead of its outcome)."""
        self._starting.append(item)
        self._kick()

    def submit(self, entry: Entry) -> None:
        self._pending.append(entry)
        self._kick()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="recorder")

    async def drain(self) -> None:
        """Return once everything submitted so far is written (or its write failed)."""
        await self._idle.wait()

    async def close(self) -> None:
        """Write what is pending; a database that is away gets one more try, not more."""
        self._closing.set()
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._starting or self._pending:
                if self._starting:
                    starting, self._starting = self._starting, []
                    await self._write_starts(starting)
                group = self._pending[:MAX_GROUP]
                del self._pending[:MAX_GROUP]
                if group:
                    await self._write(group)
            self._idle.set()

    async def _write_starts(self, items: list[Item]) -> None:
        """Attempts spent; while the database is away they wait (with the outcomes behind
        them), so an outcome never lands before its attempt was counted."""
        backoff = Backoff()
        while True:
            try:
                async with self._pool().acquire() as conn:
                    await queue.start(conn, items)
                return
            except DB_ERRORS as exc:
                if self._closing.is_set() or refused(exc):
                    log.error("start_record_failed", count=len(items), error=str(exc))
                    return
                await wait_any(self._closing, within=backoff.next())

    async def _write(self, group: list[Entry]) -> None:
        backoff = Backoff()
        while True:
            try:
                async with self._pool().acquire() as conn:
                    results = await queue.settle(conn, group, self._policy())
                break
            except DB_ERRORS as exc:
                error = str(exc) or type(exc).__name__
                if refused(exc):
                    await self._refused(group, error)
                    return
                if self._closing.is_set():
                    log.error(
                        "record_failed",
                        count=len(group),
                        error=error,
                        note="stopping: these items are tried again when their lease ends",
                    )
                    return
                pause = backoff.next()
                log.error("record_failed", count=len(group), error=error, retry_in=pause)
                await wait_any(self._closing, within=pause)
        for entry, settled in zip(group, results, strict=True):
            self._settled(entry, settled)

    async def _refused(self, group: list[Entry], error: str) -> None:
        """The database refused the group: write each outcome alone, so only the one it
        refuses stays unwritten (its item comes back after its lease)."""
        if len(group) > 1:
            for entry in group:
                await self._write([entry])
            return
        entry = group[0]
        item = entry.item
        log.error("record_refused", queue_id=item.id, entidade=item.entidade, error=error)
        if entry.outcome.message.startswith(UNWRITTEN):
            self._settled(entry, "stale")  # not even that: the lease brings the item back
            return
        fallback = Outcome.failed(f"{UNWRITTEN}: {error}", retryable=True)
        await self._write([Entry(item, entry.conta, fallback)])
