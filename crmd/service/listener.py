"""LISTEN crm_sync: wakes the engine the moment a producer commits work.

One dedicated connection (a pooled one would lose its LISTEN when returned). When it breaks
(PostgreSQL restarted, network cut) it reconnects with growing pauses and wakes the engine once
back, since notifications sent meanwhile were lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import structlog

from crmd.config import DatabaseSettings
from crmd.store import db

CHANNEL = "crm_sync"
log = structlog.get_logger("crmd.listener")


class Listener:
    def __init__(self, settings: DatabaseSettings, wake: asyncio.Event) -> None:
        self.settings = settings
        self.wake = wake
        self.connected = False
        self._lost = asyncio.Event()
        self._conn: asyncpg.Connection | None = None

    def retarget(self, settings: DatabaseSettings) -> None:
        """Listen on another database (a reload changed [database]): reconnect now."""
        if settings != self.settings:
            self.settings = settings
            self._lost.set()

    def _on_notify(self, *_: Any) -> None:
        self.wake.set()

    def _on_lost(self, *_: Any) -> None:
        self.connected = False
        self._lost.set()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                conn = await db.connect(self.settings)
                await conn.add_listener(CHANNEL, self._on_notify)
            except (db.DatabaseUnavailable, OSError, asyncpg.PostgresError) as exc:
                log.warning("listen_failed", error=str(exc), retry_in=backoff)
                await sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            self._conn, self.connected, backoff = conn, True, 0.5
            conn.add_termination_listener(self._on_lost)
            self._lost.clear()
            self.wake.set()  # whatever was notified while we were away
            log.info("listening", channel=CHANNEL)
            await _wait_first(stop, self._lost, self._health(conn, stop))
            if not stop.is_set():
                log.warning("listen_connection_lost")
            await self._close()

    async def _health(self, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
        """A half-open TCP connection never reports termination: probe it now and then."""
        while not stop.is_set():
            await sleep_or_stop(stop, 15.0)
            try:
                await asyncio.wait_for(conn.execute("SELECT 1"), 5.0)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return

    async def _close(self) -> None:
        conn, self._conn, self.connected = self._conn, None, False
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 2.0)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _wait_first(stop: asyncio.Event, lost: asyncio.Event, health: Any) -> None:
    tasks = [asyncio.ensure_future(x) for x in (stop.wait(), lost.wait(), health)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
