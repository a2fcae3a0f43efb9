"""LISTEN crm_sync: wakes the engine the moment a producer commits work.

One dedicated connection (a pooled one would lose its LISTEN when returned). When it breaks
(PostgreSQL restarted, network cut) it reconnects with growing pauses and wakes the engine once
back, since notifications sent meanwhile were lost.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import structlog

from crmd.aio import Backoff, wait_any
from crmd.config import DatabaseSettings
from crmd.store import db, reports
from crmd.store.db import DB_ERRORS

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
        backoff = Backoff()
        while not stop.is_set():
            try:
                conn = await db.connect(self.settings)
                await conn.add_listener(CHANNEL, self._on_notify)
            except DB_ERRORS as exc:
                pause = backoff.next()
                log.warning("listen_failed", error=str(exc), retry_in=pause)
                await wait_any(stop, within=pause)
                continue
            self._conn, self.connected = conn, True
            backoff.reset()
            conn.add_termination_listener(self._on_lost)
            self._lost.clear()
            self.wake.set()  # whatever was notified while we were away
            log.info("listening", channel=CHANNEL)
            await wait_any(stop, self._lost, self._health(conn, stop))
            if not stop.is_set():
                log.warning("listen_connection_lost")
            await self._close()

    async def _health(self, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
        """A half-open TCP connection never reports termination: probe it now and then."""
        while not stop.is_set():
            await wait_any(stop, within=15.0)
            try:
                await asyncio.wait_for(reports.ping(conn), 5.0)
            except DB_ERRORS:
                return

    async def _close(self) -> None:
        conn, self._conn, self.connected = self._conn, None, False
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 2.0)
            except DB_ERRORS:
                conn.terminate()
