"""The rate limiter: no sliding window ever over its limit, and the budget used when work waits.

Window logic is checked on fake clocks (`delay` / `try_acquire`, no sleeping); the asyncio side
(queueing, pauses, cancellation, reloads) runs for real on compressed limits of a second or less.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from crmd.config import DEFAULT_LIMITS, RateLimit
from crmd.crm.limiter import RateLimiter, max_in_window


class FakeClocks:
    """A monotonic clock and a wall clock that advance together, only when told to."""

    def __init__(self, mono: float = 0.0, wall: float = 1_750_000_000.0) -> None:
        self.t = mono
        self.offset = wall - mono

    def mono(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.t + self.offset

    def advance(self, seconds: float) -> None:
        self.t += seconds


def ideal_times(limits: Sequence[tuple[int, float]], start: float, until: float) -> list[float]:
    """The earliest every grant may happen with an endless backlog, from a first grant at `start`.

    Granting as early as the windows allow is optimal: by induction, the k-th grant of this
    schedule is no later than the k-th grant of any schedule that respects the limits.
    """
    times: list[float] = []
    while True:
        t = times[-1] if times else start
        for requests, seconds in limits:
            if len(times) >= requests:
                t = max(t, times[-requests] + seconds)
        if t > until:
            return times
        times.append(t)


def drive(limiter: RateLimiter, clocks: FakeClocks, until: float) -> list[float]:
    """Grant as fast as the limiter allows on a fake clock (a backlog that never empties)."""
    grants = []
    while clocks.t + limiter.delay() <= until:
        clocks.advance(limiter.delay())
        assert limiter.try_acquire()
        grants.append(clocks.t)
    return grants


# -- the window helper ---------------------------------------------------------------------------


def test_max_in_window_counts_half_open_windows() -> None:
    assert max_in_window([], 1.0) == 0
    assert max_in_window([5.0], 1.0) == 1
    # (t - 1, t]: a grant exactly one window earlier has left it.
    assert max_in_window([0.0, 1.0, 2.0], 1.0) == 1
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.2], 1.0) == 4
    assert max_in_window([1.0, 1.0, 1.0], 0.001) == 3
    with pytest.raises(ValueError, match="sorted"):
        max_in_window([2.0, 1.0], 1.0)


# -- window logic on a fake clock ----------------------------------------------------------------


def test_stacked_limits_hold_and_backlog_gets_every_slot() -> None:
    limits = [(20, 1.0), (50, 5.0)]
    clocks = FakeClocks()
    limiter = RateLimiter(limits, clock=clocks.mono, wall_clock=clocks.wall)

    grants = drive(limiter, clocks, until=59.9)

    assert max_in_window(grants, 1.0) == 20
    assert max_in_window(grants, 5.0) == 50
    # Bursts of 20, 20 and 10 every 5 s: the whole 50/5 s budget, with no slot left idle.
    assert grants == ideal_times(limits, 0.0, 59.9)
    assert len(grants) == 12 * 50


def test_default_limits_over_a_simulated_day() -> None:
    clocks = FakeClocks()
    limiter = RateLimiter(DEFAULT_LIMITS, clock=clocks.mono, wall_clock=clocks.wall)

    grants = drive(limiter, clocks, until=86_400.0)

    assert max_in_window(grants, 1.0) == 3
    assert max_in_window(grants, 60.0) == 100
    assert max_in_window(grants, 86_400.0) == 30_000
    # 100 a minute until the day's 30,000 are spent (after 5 hours), then nothing until the
    # first grants of the day (three at 0.0) have left the daily window.
    assert len(grants) == 30_003
    assert grants[29_999] == 299 * 60 + 33
    assert grants[30_000:] == [86_400.0] * 3
    assert grants == ideal_times([(3, 1.0), (100, 60.0), (30_000, 86_400.0)], 0.0, 86_400.0)
    assert limiter.used(86_400) == 30_000  # the first grant is exactly one day old now
    assert len(limiter.recent_grants()) == 30_000


def test_delay_is_exactly_the_time_until_the_oldest_relevant_grant_leaves() -> None:
    clocks = FakeClocks()
    limiter = RateLimiter([(3, 1.0), (5, 10.0)], clock=clocks.mono, wall_clock=clocks.wall)
    for _ in range(3):
        assert limiter.try_acquire()
        clocks.advance(0.25)
    assert clocks.t == 0.75
    assert not limiter.try_acquire()
    assert limiter.delay() == 0.25  # the grant at 0.0 leaves the 1 s window at 1.0

    clocks.advance(0.25)
    assert limiter.try_acquire()
    clocks.advance(1.0)
    assert limiter.try_acquire()  # five in 10 s now
    assert limiter.delay() == pytest.approx(10.0 - 2.0)
    assert limiter.used(1.0) == 1
    assert limiter.used(10.0) == 5


def test_margin_lengthens_every_window() -> None:
    clocks = FakeClocks()
    limiter = RateLimiter([(1, 1.0)], margin=0.25, clock=clocks.mono, wall_clock=clocks.wall)
    assert limiter.try_acquire()
    clocks.advance(1.0)
    assert not limiter.try_acquire()
    assert limiter.delay() == 0.25
    clocks.advance(0.25)
    assert limiter.try_acquire()


def test_preload_seeds_the_daily_window_from_epoch_times() -> None:
    clocks = FakeClocks(mono=5_000.0, wall=1_750_000_000.0)
    limiter = RateLimiter(DEFAULT_LIMITS, clock=clocks.mono, wall_clock=clocks.wall)
    # The previous process spent the day's budget over the last 21 hours, then restarted.
    first = clocks.wall() - 75_000
    sent = [first + 2.5 * i for i in range(30_000)]

    limiter.preload(sent)

    assert limiter.used(86_400) == 30_000
    assert limiter.used(60) == 23
    assert not limiter.try_acquire()
    assert limiter.delay() == 86_400 - 75_000  # until the oldest is a day old
    clocks.advance(86_400 - 75_000)
    assert limiter.try_acquire()
    assert not limiter.try_acquire()  # the next one leaves 2.5 s later
    assert limiter.delay() == 2.5


def test_preload_drops_expired_times_and_counts_future_ones_as_now() -> None:
    clocks = FakeClocks(mono=100.0, wall=1_750_000_000.0)
    limiter = RateLimiter([(2, 60.0)], clock=clocks.mono, wall_clock=clocks.wall)
    limiter.preload([clocks.wall() - 60.0, clocks.wall() - 30.0, clocks.wall() + 3600.0])
    assert limiter.recent_grants() == [70.0, 100.0]
    assert limiter.delay() == 30.0


def test_pause_extends_but_never_shortens_and_resume_ends_it() -> None:
    clocks = FakeClocks()
    limiter = RateLimiter([(10, 1.0)], clock=clocks.mono, wall_clock=clocks.wall)
    assert limiter.paused_until is None
    assert limiter.pause_reason is None

    limiter.pause(10.0, "429: O limite de requisicoes foi atingido")
    limiter.pause(5.0, "shorter")
    assert limiter.paused_until == clocks.wall() + 10.0
    assert limiter.pause_reason == "429: O limite de requisicoes foi atingido"
    limiter.pause(20.0, "longer")
    assert limiter.paused_until == clocks.wall() + 20.0
    assert limiter.pause_reason == "longer"
    assert not limiter.try_acquire()
    assert limiter.delay() == 20.0

    clocks.advance(20.0)
    assert limiter.paused_until is None
    assert limiter.pause_reason is None
    assert limiter.try_acquire()

    limiter.pause(60.0, "again")
    limiter.resume()
    assert limiter.paused_until is None
    assert limiter.try_acquire()


def test_reconfigure_keeps_the_history_of_grants() -> None:
    clocks = FakeClocks()
    limiter = RateLimiter([(5, 1.0)], clock=clocks.mono, wall_clock=clocks.wall)
    for _ in range(5):
        assert limiter.try_acquire()
        clocks.advance(0.125)

    limiter.reconfigure([RateLimit(requests=3, per_seconds=1.0)])
    assert limiter.limits == (RateLimit(requests=3, per_seconds=1.0),)
    assert limiter.delay() == pytest.approx(1.25 - 0.625)  # the third most recent is at 0.25

    limiter.reconfigure([(10, 1.0)], margin=0.5)
    assert limiter.try_acquire()
    assert limiter.used(1.0) == 6

    with pytest.raises(ValueError, match="at least one"):
        limiter.reconfigure([])
    assert limiter.limits == (RateLimit(requests=10, per_seconds=1.0),)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ([], "at least one"),
        ([(0, 1.0)], r"limits\[0\]: requests"),
        ([(3, 1.0), (1.5, 1.0)], r"limits\[1\]: requests"),
        ([(3, 0.0)], "per_seconds"),
        ([(3, float("inf"))], "per_seconds"),
    ],
)
def test_rejects_limits_it_cannot_enforce(limits: list[tuple[int, float]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimiter(limits)


def test_rejects_a_negative_margin() -> None:
    with pytest.raises(ValueError, match="margin"):
        RateLimiter([(1, 1.0)], margin=-0.1)


# -- for real, on compressed limits --------------------------------------------------------------


async def run_senders(limiter: RateLimiter, count: int, seconds: float) -> list[float]:
    """`count` tasks each looping acquire-then-send for `seconds`; returns the send times."""
    sent: list[float] = []

    async def sender() -> None:
        while True:
            await limiter.acquire()
            sent.append(time.monotonic())
            await asyncio.sleep(0)  # the send

    tasks = [asyncio.create_task(sender()) for _ in range(count)]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert limiter._waiting == 0
    return sent


async def test_concurrent_senders_never_exceed_stacked_limits() -> None:
    limiter = RateLimiter([(20, 1.0), (50, 5.0)])

    sent = await run_senders(limiter, count=8, seconds=2.6)

    grants = limiter.recent_grants()
    assert len(grants) == len(sent)
    assert max_in_window(grants, 1.0) == 20
    assert max_in_window(grants, 5.0) == 50
    # Bursts at 0, 1 and 2 s spend the 5 s budget; nothing more until 5 s.
    assert len(grants) == 50


async def test_backlog_with_8_waiters_uses_the_budget() -> None:
    limits = [(10, 0.25), (30, 1.0)]  # 30/s binds over time; 10 per 0.25 s shapes the bursts
    limiter = RateLimiter(limits)

    sent = await run_senders(limiter, count=8, seconds=3.9)

    # Count up to 3.75 s after the first grant, half-way between the ideal bursts at 3.5 and
    # 4.0 s, so a loaded machine's scheduling delays do not move a burst across the line.
    end = sent[0] + 3.75
    actual = sum(1 for t in sent if t <= end)
    ideal = len(ideal_times(limits, sent[0], end))
    assert ideal == 120
    assert actual >= 0.99 * ideal, f"{actual} of {ideal} slots used"
    assert max_in_window(sent, 0.25 - 0.001) <= 10
    assert max_in_window(sent, 1.0 - 0.001) <= 30
    # For the record (pytest -s): how far scheduling let the last counted grant drift.
    drift = sent[actual - 1] - ideal_times(limits, sent[0], end)[-1]
    print(f"\nutilisation {actual}/{ideal} slots; last burst {drift * 1000:.1f} ms after ideal")


async def test_waiters_are_served_in_arrival_order() -> None:
    limiter = RateLimiter([(2, 0.05)])
    limiter.pause(0.05, "hold everyone so the queue forms")
    order: list[int] = []

    async def waiter(index: int) -> None:
        await limiter.acquire()
        order.append(index)

    tasks = []
    for index in range(8):
        tasks.append(asyncio.create_task(waiter(index)))
        await asyncio.sleep(0)  # let it join the queue before the next one arrives
    await asyncio.gather(*tasks)
    assert order == list(range(8))


async def test_a_newcomer_does_not_overtake_queued_waiters() -> None:
    limiter = RateLimiter([(1, 0.05)])
    limiter.pause(60.0, "hold")
    queued = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    limiter.resume()  # a slot is free, but `queued` was first
    assert not limiter.try_acquire()
    await queued
    assert len(limiter.recent_grants()) == 1


async def test_pause_holds_every_waiter_until_it_ends() -> None:
    limiter = RateLimiter([(100, 1.0)])
    limiter.pause(0.2, "429: O limite de requisicoes foi atingido")
    paused_until = limiter.paused_until
    assert paused_until is not None
    assert paused_until == pytest.approx(time.time() + 0.2, abs=0.05)
    assert limiter.pause_reason == "429: O limite de requisicoes foi atingido"

    waits = await asyncio.gather(*(limiter.acquire() for _ in range(5)))

    assert time.time() >= paused_until - 0.001
    assert min(waits) >= 0.19
    assert len(limiter.recent_grants()) == 5
    assert limiter.paused_until is None
    assert limiter.pause_reason is None


async def test_resume_releases_waiters_at_once() -> None:
    limiter = RateLimiter([(100, 1.0)])
    limiter.pause(60.0, "429")
    tasks = [asyncio.create_task(limiter.acquire()) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in tasks)
    limiter.resume()
    waits = await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert max(waits) < 0.5


async def test_a_longer_pause_during_a_wait_holds_the_waiter_longer() -> None:
    limiter = RateLimiter([(1, 0.1)])
    await limiter.acquire()
    task = asyncio.create_task(limiter.acquire())  # due in 0.1 s
    await asyncio.sleep(0.02)
    limiter.pause(0.3, "429")
    waited = await task
    assert waited >= 0.3


async def test_cancelled_head_waiter_takes_no_slot_and_blocks_nobody() -> None:
    limiter = RateLimiter([(1, 0.2)])
    await limiter.acquire()
    head = asyncio.create_task(limiter.acquire())
    behind = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.05)
    assert limiter._waiting == 2

    head.cancel()
    waited = await behind

    assert head.cancelled()
    assert 0.1 < waited < 0.3  # served when the slot opened, not a window later
    assert limiter.used(0.2) == 1  # `behind` only: the first grant was a window before it
    assert limiter._waiting == 0


async def test_cancelled_queued_waiters_leak_nothing() -> None:
    limiter = RateLimiter([(1, 0.1)])

    async def granted_at() -> float:
        await limiter.acquire()
        return time.monotonic()

    first = await granted_at()
    tasks = [asyncio.create_task(granted_at()) for _ in range(4)]
    await asyncio.sleep(0.02)
    tasks[1].cancel()
    tasks[2].cancel()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(limiter.acquire(), 0.01)

    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert [task.cancelled() for task in tasks] == [False, True, True, False]
    grants = [first, results[0], results[3]]
    assert all(isinstance(t, float) for t in grants)
    assert max_in_window(grants, 0.1 - 0.005) == 1
    # Two slots after the first, not four: the cancelled ones took none.
    assert grants[-1] - grants[0] < 0.3
    assert limiter._waiting == 0


async def test_waiters_sleep_instead_of_spinning() -> None:
    limiter = RateLimiter([(1, 60.0)])
    await limiter.acquire()
    cpu = time.process_time()
    tasks = [asyncio.create_task(limiter.acquire()) for _ in range(8)]
    await asyncio.sleep(0.3)
    spent = time.process_time() - cpu
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert spent < 0.05
    assert len(limiter.recent_grants()) == 1


async def test_reconfigure_applies_to_waiters_at_once() -> None:
    limiter = RateLimiter([(1, 60.0)])
    await limiter.acquire()
    task = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.05)
    assert not task.done()

    limiter.reconfigure([(2, 60.0)])

    assert await asyncio.wait_for(task, 1.0) < 0.5
    assert not limiter.try_acquire()  # both earlier grants still count
    assert limiter.delay() > 59.0


async def test_restarted_limiter_respects_the_previous_process_window() -> None:
    before = RateLimiter([(5, 0.5)])
    sent = []
    for _ in range(5):
        await before.acquire()
        sent.append(time.time())  # what the engine writes to crm_sync_log

    after = RateLimiter([(5, 0.5)])
    after.preload(sent)
    assert after.used(0.5) == 5
    waited = await after.acquire()
    resumed = time.time()

    assert waited > 0.4
    assert resumed - sent[0] >= 0.5 - 0.001
    assert max_in_window([*sent, resumed], 0.5 - 0.001) <= 5


async def test_the_window_counts_from_the_answer_not_from_the_end_of_the_block() -> None:
    clocks = FakeClocks()
    limiter = RateLimiter([(1, 1.0)], clock=clocks.mono, wall_clock=clocks.wall)
    async with limiter.slot() as held:
        clocks.advance(0.2)
        held.answered()  # the CRM's answer came
        clocks.advance(0.3)  # reading and logging it
    assert limiter.delay() == pytest.approx(0.7)  # 1 s from the answer, not from now
    clocks.advance(0.7)
    async with limiter.slot():
        clocks.advance(0.2)  # failed without an answer: held until the block's end
    assert limiter.delay() == pytest.approx(1.0)
