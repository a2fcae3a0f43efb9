"""The in-process timers against a real PostgreSQL: each scheduled time runs once, however many
instances check it and however long crmd was down; a clock is injected so hours pass instantly."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from crmd.service.timers import Timers

T0 = datetime(2026, 11, 29, 10, 0, 30, tzinfo=UTC)  # a Sunday, half a minute past 10:00


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Recorder:
    """An action that records when it was called (by the clock) and can be told to fail."""

    clock: Clock | None = None
    calls: list[datetime] = field(default_factory=list)
    fail: bool = False
    hold: float = 0.0  # seconds to take, so concurrent checks overlap

    async def __call__(self, conn: asyncpg.Connection) -> str:
        self.calls.append(self.clock() if self.clock else datetime.now(UTC))
        assert await conn.fetchval("SELECT 1") == 1  # it is given a usable connection
        if self.hold:
            await asyncio.sleep(self.hold)
        if self.fail:
            raise RuntimeError("boom")
        return f"run {len(self.calls)}"


def timers_with(
    pool: asyncpg.Pool, clock: Clock, action: Recorder, cron: str = "* * * * *", tz: str = "UTC"
) -> Timers:
    timers = Timers(pool, tz, clock=clock)
    timers.configure(tz, {"job": (cron, action)})
    return timers


async def check(timers: Timers) -> float:
    return await timers.check(timers.timers["job"])


async def row(pool: asyncpg.Pool) -> asyncpg.Record:
    return await pool.fetchrow("SELECT * FROM crm_sync_timer WHERE nome = 'job'")


@pytest.fixture
async def second_pool(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """Another instance's own pool on the same database."""
    p = await asyncpg.create_pool(db_dsn, min_size=1, max_size=4)
    yield p
    await p.close()


async def test_a_timer_seen_for_the_first_time_waits_for_its_next_time(pool: asyncpg.Pool) -> None:
    clock = Clock()
    action = Recorder(clock)
    timers = timers_with(pool, clock, action)

    wait = await check(timers)
    assert action.calls == []
    assert (await row(pool))["ultima_execucao"] == T0  # counting starts now
    assert wait == pytest.approx(30.0)  # until 10:01:00

    clock.advance(seconds=29)
    await check(timers)
    assert action.calls == []
    clock.advance(seconds=2)  # 10:01:01
    await check(timers)
    await check(timers)
    assert action.calls == [T0 + timedelta(seconds=31)]
    recorded = await row(pool)
    assert recorded["ultima_execucao"] == datetime(2026, 11, 29, 10, 1, tzinfo=UTC)
    assert recorded["resultado"] == "run 1"
    assert recorded["duracao_ms"] is not None


async def test_two_instances_checking_at_once_run_each_time_once(
    pool: asyncpg.Pool, second_pool: asyncpg.Pool
) -> None:
    clock = Clock()
    action = Recorder(clock, hold=0.3)
    a = timers_with(pool, clock, action)
    b = timers_with(second_pool, clock, action)
    await asyncio.gather(check(a), check(b))
    for minute in range(3):
        clock.advance(minutes=1)
        # Both instances check again and again while the run is in progress and after it.
        await asyncio.gather(*(check(t) for t in (a, b, a, b)))
        await asyncio.gather(check(b), check(a))
        assert len(action.calls) == minute + 1
    assert (await row(pool))["ultima_execucao"] == datetime(2026, 11, 29, 10, 3, tzinfo=UTC)


async def test_two_running_instances_in_real_time_never_run_a_time_twice(
    pool: asyncpg.Pool, second_pool: asyncpg.Pool
) -> None:
    action = Recorder(hold=0.05)
    schedule = {"job": ("* * * * * */2", action)}  # croniter's 6th field: every 2 seconds
    instances = [Timers(pool, "UTC"), Timers(second_pool, "UTC")]
    for t in instances:
        t.configure("UTC", schedule)
    stop = asyncio.Event()
    loops = [asyncio.create_task(t.run(stop)) for t in instances]
    try:
        await asyncio.sleep(5.2)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*loops), 5)
    # First seen at start, so the first run is at the next even second: 2 or 3 runs in 5.2 s.
    assert 2 <= len(action.calls) <= 3, action.calls
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(action.calls)]
    assert all(g > 1.5 for g in gaps), gaps  # a duplicate would follow within milliseconds


async def test_runs_missed_while_down_run_once_at_the_next_start(pool: asyncpg.Pool) -> None:
    clock = Clock()
    first = Recorder(clock)
    await check(timers_with(pool, clock, first, cron="0 * * * *"))  # hourly, first seen 10:00:30

    # crmd is down for five hours and a bit; a new process (new Timers) starts at 15:20:30.
    clock.advance(hours=5, minutes=20)
    action = Recorder(clock)
    restarted = timers_with(pool, clock, action, cron="0 * * * *")
    wait = await check(restarted)
    await check(restarted)
    assert len(action.calls) == 1  # 11:00 ... 15:00 were missed: one catch-up run, not five
    assert (await row(pool))["ultima_execucao"] == datetime(2026, 11, 29, 15, tzinfo=UTC)
    assert wait == pytest.approx(39 * 60 + 30)  # then on schedule again: 16:00

    clock.advance(minutes=40)
    await check(restarted)
    assert len(action.calls) == 2
    assert (await row(pool))["ultima_execucao"] == datetime(2026, 11, 29, 16, tzinfo=UTC)


async def test_a_failing_run_is_recorded_and_the_next_one_still_happens(
    pool: asyncpg.Pool,
) -> None:
    clock = Clock()
    action = Recorder(clock, fail=True)
    timers = timers_with(pool, clock, action)
    await check(timers)
    clock.advance(minutes=1)
    await check(timers)  # does not raise
    failed = await row(pool)
    assert failed["resultado"] == "erro: RuntimeError: boom"
    assert failed["ultima_execucao"] == datetime(2026, 11, 29, 10, 1, tzinfo=UTC)
    await check(timers)
    assert len(action.calls) == 1  # a failure is not retried at once (it is the same time)

    action.fail = False
    clock.advance(minutes=1)
    await check(timers)
    assert len(action.calls) == 2
    assert (await row(pool))["resultado"] == "run 2"


async def test_info_shows_the_last_and_next_runs(pool: asyncpg.Pool) -> None:
    clock = Clock()
    action = Recorder(clock)
    timers = timers_with(pool, clock, action, cron="*/15 * * * *")

    [before] = await timers.info()
    assert (before.name, before.cron, before.last_run) == ("job", "*/15 * * * *", None)
    assert before.next_run == datetime(2026, 11, 29, 10, 15, tzinfo=UTC)

    await check(timers)
    [seen] = await timers.info()
    assert (seen.last_run, seen.next_run) == (None, before.next_run)  # seen, never run yet

    clock.advance(minutes=20)  # 10:20:30: the 10:15 run is due
    [overdue] = await timers.info()
    assert overdue.next_run == clock.now  # overdue: it runs at the next check
    await check(timers)
    [after] = await timers.info()
    # "Last run" is when it really ran (the database's clock), the next follows the schedule.
    assert after.last_run is not None
    assert abs((after.last_run - datetime.now(UTC)).total_seconds()) < 60
    assert after.next_run == datetime(2026, 11, 29, 10, 30, tzinfo=UTC)


async def test_schedules_follow_the_configured_time_zone(pool: asyncpg.Pool) -> None:
    # The daily cleanup at 03:00 in São Paulo (UTC-3, no summer time since 2019) is 06:00 UTC.
    clock = Clock(datetime(2026, 11, 29, 5, 59, tzinfo=UTC))
    action = Recorder(clock)
    timers = timers_with(pool, clock, action, cron="0 3 * * *", tz="America/Sao_Paulo")
    await check(timers)
    clock.advance(seconds=90)
    await check(timers)
    assert action.calls == [datetime(2026, 11, 29, 6, 0, 30, tzinfo=UTC)]
    [info] = await timers.info()
    assert info.next_run == datetime(2026, 11, 30, 6, tzinfo=UTC)


async def test_a_new_schedule_takes_effect_at_once(pool: asyncpg.Pool) -> None:
    clock = Clock()
    action = Recorder(clock)
    timers = timers_with(pool, clock, action, cron="0 3 * * *")
    assert await check(timers) > 3600
    timers.configure("UTC", {"job": ("*/5 * * * *", action)})  # as a SIGHUP reload does
    assert await check(timers) == pytest.approx(4 * 60 + 30)
