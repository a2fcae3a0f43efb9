"""This process among the instances on the database: registered at start, a heartbeat every few
seconds (a supervised task), gone at a clean stop. A vanished instance stops beating; its leases
run out and its items are claimed by the others, as after any crash."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable

import asyncpg
import structlog

from crmd import __version__
from crmd.store import instances
from crmd.store.db import DB_ERRORS

log = structlog.get_logger("crmd.instances")

HEARTBEAT_SECONDS = 5.0


class Instance:
    def __init__(self, pool: Callable[[], asyncpg.Pool]) -> None:
        self._pool = pool
        self.id = uuid.uuid4()
        self.host = socket.gethostname()
        self.pid = os.getpid()

    async def register(self) -> None:
        async with self._pool().acquire() as conn:
            await instances.register(conn, self.id, self.host, self.pid, __version__)
        log.info("instance_registered", instance=str(self.id), host=self.host, pid=self.pid)

    async def beat(self) -> None:
        """Heartbeats until cancelled; a database that is away is ridden out."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                async with self._pool().acquire() as conn:
                    if not await instances.heartbeat(conn, self.id):
                        await instances.register(conn, self.id, self.host, self.pid, __version__)
            except DB_ERRORS as exc:
                log.warning("heartbeat_failed", error=str(exc) or type(exc).__name__)

    async def unregister(self) -> None:
        try:
            async with self._pool().acquire() as conn:
                await instances.unregister(conn, self.id)
        except DB_ERRORS as exc:
            log.warning("unregister_failed", error=str(exc) or type(exc).__name__)
