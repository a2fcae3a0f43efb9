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
from croniter import croniter

from crmd.config import ScheduleSettings
from crmd.store.migrate import LOCK_CLASS
from crmd.store.sql import queries

log = structlog.get_logger("crmd.timers")

# pg_try_advisory_lock(LOCK_CLASS, LOCK_TIMER_BASE + n): one lock per timer.
LOCK_TIMER_BASE = 100
Action = Callable[[asyncpg.Connection], Awaitable[str]]  # returns a line for the log and table
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Timer:
    name: str
    cron: str
    action: Action
    lock_key: int


@dataclass(frozen=True)
class TimerInfo:
    name: str
    cron: str
    last_run: datetime | None
    next_run: datetime


def last_due(cron: str, tz: zoneinfo.ZoneInfo, since: datetime, now: datetime) -> datetime | None:
    """The latest scheduled time after `since` and not after `now`, or None if there is none."""
    it = croniter(cron, since.astimezone(tz))
    due = None
    while True:
        nxt: datetime = it.get_next(datetime)
        if nxt > now:
            return due
        due = nxt


def next_after(cron: str, tz: zoneinfo.ZoneInfo, moment: datetime) -> datetime:
    result: datetime = croniter(cron, moment.astimezone(tz)).get_next(datetime)
    return result


async def _no_action(_: asyncpg.Connection) -> str:
    return ""


def for_display(pool: asyncpg.Pool, schedule: ScheduleSettings) -> Timers:
    """The configured timers, to show their last and next runs (they never run from here)."""
    timers = Timers(pool, schedule.timezone)
    timers.configure(
        schedule.timezone,
        {"cleanup": (schedule.cleanup, _no_action), "full_sync": (schedule.full_sync, _no_action)},
    )
    return timers


class Timers:
    def __init__(self, pool: asyncpg.Pool, timezone: str, clock: Clock = utc_now) -> None:
        self.pool = pool
        self.tz = zoneinfo.ZoneInfo(timezone)
        self.clock = clock
        self.timers: dict[str, Timer] = {}
        self._changed = asyncio.Event()
        self.last_runs: dict[str, datetime] = {}

    def configure(self, timezone: str, schedule: dict[str, tuple[str, Action]]) -> None:
        """Set (or, on reload, replace) the timers and their zone; takes effect at once."""
        self.tz = zoneinfo.ZoneInfo(timezone)
        self.timers = {
            name: Timer(name, cron, action, LOCK_TIMER_BASE + i)
            for i, (name, (cron, action)) in enumerate(sorted(schedule.items()))
        }
        self._changed.set()

    async def info(self) -> list[TimerInfo]:
        async with self.pool.acquire() as conn:
            rows = {r["nome"]: r for r in await conn.fetch(queries["timer_runs"])}
        now = self.clock()
        result = []
        for t in self.timers.values():
            row = rows.get(t.name)
            # The schedule counts from the last scheduled time (or from when the timer was first
            # seen); "last run" is when it really ran, None if never.
            upcoming = next_after(t.cron, self.tz, row["ultima_execucao"] if row else now)
            upcoming = max(upcoming, now)  # overdue: runs at the next check
            result.append(TimerInfo(t.name, t.cron, row["executado_em"] if row else None, upcoming))
        return result

    async def run(self, stop: asyncio.Event) -> None:
        """Check the timers until `stop`; sleeps until the next is due (a minute at most, so a
        changed clock or schedule is noticed)."""
        while not stop.is_set():
            self._changed.clear()
            wait = 60.0
            for timer in list(self.timers.values()):
                try:
                    wait = min(wait, await self.check(timer))
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.error("timer_check_failed", timer=timer.name, error=str(exc))
                    wait = min(wait, 10.0)
            waiters = [asyncio.ensure_future(e.wait()) for e in (stop, self._changed)]
            await asyncio.wait(waiters, timeout=max(wait, 0.05), return_when="FIRST_COMPLETED")
            for w in waiters:
                w.cancel()

    async def check(self, timer: Timer) -> float:
        """Run `timer` if a scheduled time has come; returns seconds until it is due again."""
        async with self.pool.acquire() as conn:
            now = self.clock()
            if not await conn.fetchval(queries["try_advisory_lock"], LOCK_CLASS, timer.lock_key):
                return 1.0  # another instance is running it; look again shortly
            try:
                last = await conn.fetchval(queries["timer_last"], timer.name)
                if last is None:
                    await conn.execute(queries["timer_start"], timer.name, now)
                    last = now
                due = last_due(timer.cron, self.tz, last, now)
                if due is not None:
                    await self._fire(conn, timer, due)
                    last = due
            finally:
                try:
                    await conn.execute(queries["advisory_unlock"], LOCK_CLASS, timer.lock_key)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    conn.terminate()  # the lock ends with the session; the pool makes a new one
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
        await conn.execute(queries["timer_done"], timer.name, due, ms, result)
        self.last_runs[timer.name] = self.clock()
        log.info("timer_finished", timer=timer.name, duration_ms=ms, result=result)
