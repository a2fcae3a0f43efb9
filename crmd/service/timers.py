"""In-process timers (cleanup, full sync) on cron expressions, run once per scheduled time.

Runs are recorded in `crm_sync_timer` and taken under an advisory lock, so with several
instances (or restarts) each scheduled time runs once. The table holds the scheduled time of the
last run; on start, a time missed while crmd was down is run once (not once per missed time).
A timer seen for the first time starts counting from now.
"""

from __future__ import annotations

import asyncio
import time
import zoneinfo
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import structlog

from crmd.aio import wait_any
from crmd.ops.schedule import TimerInfo, last_due, next_after, timers_info
from crmd.store import timers as store
from crmd.store.db import DB_ERRORS

log = structlog.get_logger("crmd.timers")

Action = Callable[[asyncpg.Connection], Awaitable[str]]  # returns a line for the log and table
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Timer:
    name: str
    cron: str
    action: Action
    lock_index: int


class Timers:
    def __init__(self, pool: asyncpg.Pool, timezone: str, clock: Clock = utc_now) -> None:
        self.pool = pool
        self.tz = zoneinfo.ZoneInfo(timezone)
        self.clock = clock
        self.timers: dict[str, Timer] = {}
        self._changed = asyncio.Event()

    def configure(self, timezone: str, schedule: dict[str, tuple[str, Action]]) -> None:
        """Set (or, on reload, replace) the timers and their zone; takes effect at once."""
        self.tz = zoneinfo.ZoneInfo(timezone)
        self.timers = {
            name: Timer(name, cron, action, i)
            for i, (name, (cron, action)) in enumerate(sorted(schedule.items()))
        }
        self._changed.set()

    async def info(self) -> list[TimerInfo]:
        async with self.pool.acquire() as conn:
            named = {t.name: t.cron for t in self.timers.values()}
            return await timers_info(conn, named, self.tz, self.clock())

    async def run(self, stop: asyncio.Event) -> None:
        """Check the timers until `stop`; sleeps until the next is due (a minute at most, so a
        changed clock or schedule is noticed)."""
        while not stop.is_set():
            self._changed.clear()
            wait = 60.0
            for timer in list(self.timers.values()):
                try:
                    wait = min(wait, await self.check(timer))
                except DB_ERRORS as exc:
                    log.error("timer_check_failed", timer=timer.name, error=str(exc))
                    wait = min(wait, 10.0)
            await wait_any(stop, self._changed, within=max(wait, 0.05))

    async def check(self, timer: Timer) -> float:
        """Run `timer` if a scheduled time has come; returns seconds until it is due again."""
        async with self.pool.acquire() as conn:
            now = self.clock()
            if not await store.try_lock(conn, timer.lock_index):
                return 1.0  # another instance is running it; look again shortly
            try:
                last = await store.last_run(conn, timer.name, now)
                due = last_due(timer.cron, self.tz, last, now)
                if due is not None:
                    await self._fire(conn, timer, due)
                    last = due
            finally:
                await store.unlock(conn, timer.lock_index)
        return max((next_after(timer.cron, self.tz, last) - self.clock()).total_seconds(), 0)

    async def _fire(self, conn: asyncpg.Connection, timer: Timer, due: datetime) -> None:
        log.info("timer_started", timer=timer.name, scheduled=due.isoformat())
        start = time.perf_counter()
        try:
            result = await timer.action(conn)
        except Exception as exc:  # a failed run is logged and recorded; the next one still runs
            log.exception("timer_failed", timer=timer.name)
            result = f"erro: {type(exc).__name__}: {exc}"
        ms = int((time.perf_counter() - start) * 1000)
        await store.record_run(conn, timer.name, due, ms, result)
        log.info("timer_finished", timer=timer.name, duration_ms=ms, result=result)
