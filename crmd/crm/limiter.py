"""Client-side rate limiting for one CRM account: an exact sliding-window log.

Why not a token or leaky bucket (aiolimiter): a bucket that starts empty lets a full burst through
and keeps refilling behind it, so `AsyncLimiter(100, 60)` passes about 199 requests in the first
minute and a CRM that counts 100 per minute answers 429 to half of them. The CRM counts requests in
windows, so we count the same way.

What counts is when a request may arrive at the CRM: at any moment from its grant until its answer
comes back (a loaded event loop or a slow network can bunch requests granted apart). So a request
holds a place in every window from its grant until its answer (`slot()`), and after that until a
window's length has passed since the answer. A grant at time t needs, for every limit (requests,
per_seconds): requests in flight + requests answered in (t - per_seconds - margin, t] < requests.
Then two requests in one window at the CRM would need the later one to arrive less than a window
after the earlier one's answer, which the grant rules out. The next possible grant is known
exactly (the right answer time + per_seconds + margin), or is "when a request comes back" when
every slot is out; the waiter at the head of the queue sleeps exactly that long, the others wait
their turn without timers (FIFO, no thundering herd).

Clocks: windows are measured on a monotonic clock (`time.monotonic`), so a step of the wall clock
cannot open a window early. Only `preload` (send times read back from the database after a
restart, in epoch seconds) and `paused_until` (for display) convert between the wall clock and the
monotonic one, at the moment they are called. Both clocks are injectable so the window logic can be
tested without sleeping (`delay`, `try_acquire`); `acquire` sleeps for real on the running loop.

Memory: one float per request answered inside the longest configured window; with the default daily
limit of 30,000 that is up to 30,000 floats (about 1 MB) per account. History older than the longest
window is dropped, so a reload that adds a longer window knows only the grants of the old longest
window. With a shared budget only the windows up to LOCAL_HORIZON are kept here (the database keeps
the daily one), and for each of their requests its token too (to time a grant ahead from it).

Not thread-safe: call everything from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from crmd.config import RateLimit
from crmd.model import BudgetGrant

LimitSpec = RateLimit | tuple[int, float]
# With a shared budget the windows longer than this live only in the database: this process keeps
# no history for them (a daily window would cost a float per request).
LOCAL_HORIZON = 60.0
# The longest a waiter sleeps before asking the shared budget again: another instance's request
# may come back (and free its slot) before the time the budget could foresee.
SHARED_POLL = 0.1
# How long a request's slots in the shared budget are held without renewal (the budget renews
# them while the request is out): a process that dies frees them this soon.
SHARED_HOLD = 3.0
# The most requests one call to the shared budget asks for: the waiters queued here ask together
# (one round trip and one lock of the account's windows per group instead of per request).
SHARED_GROUP = 32


class SharedBudget(Protocol):
    """The account's windows as every instance sees them (crmd.store.budget.PgBudget)."""

    ahead: float  # seconds before a slot frees itself that it may be granted (with `ready`)

    async def grant(
        self, conta: str, tokens: Sequence[uuid.UUID], bulk: bool, hold: float
    ) -> BudgetGrant: ...

    def release(self, token: uuid.UUID, age: float = 0.0) -> None: ...

    def pause(self, conta: str, seconds: float, reason: str) -> None: ...


class Held:
    """A granted request's hold on its slots, yielded by `RateLimiter.slot()`."""

    __slots__ = ("_clock", "answered_at", "waited")

    def __init__(self, waited: float, clock: Callable[[], float]) -> None:
        self.waited = waited  # seconds the request waited for its grant
        self.answered_at: float | None = None
        self._clock = clock

    def answered(self) -> None:
        """The CRM's answer has begun to arrive: it had the request by then, so the windows
        count from now, not from whenever the caller is done reading and logging it."""
        if self.answered_at is None:
            self.answered_at = self._clock()


class RateLimiter:
    """Stacked sliding-window limits of one CRM account, shared by all its senders."""

    def __init__(
        self,
        limits: Iterable[LimitSpec],
        *,
        margin: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        budget: SharedBudget | None = None,
        account: str = "",
        hold: float = 60.0,
    ) -> None:
        self._budget = budget
        self._account = account
        self._hold = hold  # the longest a request can be out (its timeout)
        self._limits = _normalise(limits)
        self._local = self._kept_here(self._limits)
        self._margin = _check_margin(margin)
        self._clock = clock
        self._wall_clock = wall_clock
        self._history: deque[float] = deque()  # grant times on `clock`, oldest first
        self._lock = asyncio.Lock()  # FIFO; its holder is the one waiter that sleeps on a timer
        self._wakeup: asyncio.Future[None] | None = None  # the head's timer, resolved early
        self._paused_until = -math.inf
        self._pause_reason: str | None = None
        # After a pause one request goes first, alone; the others follow once it came back and
        # no new pause followed it (a CRM that just said 429 gets a probe, not a burst).
        self._probing = False
        self._pauses = 0  # pauses so far, to tell whether one followed the probe
        self._probe_pauses = -1  # `_pauses` when the probe went out; -1: no probe out
        self._waiting = 0
        self._waiting_bulk = 0  # of `_waiting`, the bulk work's
        self._in_flight = 0  # granted, not yet answered
        # Granted by the shared budget for the waiters queued behind the one that asked, not
        # taken yet: (token, granted as bulk, when it may leave on `clock`). Live work may take
        # either kind, bulk only its own.
        self._spare: deque[tuple[uuid.UUID, bool, float]] = deque()
        # When each request of this limiter's was answered, by token, on `clock` (shared budget
        # only; oldest first): a grant ahead of a slot freed by one of them is timed from it.
        self._answered: dict[uuid.UUID, float] = {}

    def __repr__(self) -> str:
        limits = ", ".join(f"{lim.requests}/{lim.per_seconds:g}s" for lim in self._limits)
        return f"<RateLimiter {limits} margin={self._margin:g}s waiting={self._waiting}>"

    # -- granting ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def slot(self, *, bulk: bool = False) -> AsyncIterator[Held]:
        """Wait for room in every window, then hold it while the request is out; yields the
        seconds waited and where to say the answer came (`Held.answered`).

        The request counts against every window from the grant until its answer (the moment
        `answered()` was called; or this block's end, when the request failed): until then it
        may still arrive at the CRM at any moment, so no window may count it as gone.
        Cancelling a waiter takes nothing. With a shared budget the grant is also the
        database's, for every instance; `bulk` work (the full sync) may then use only its share
        of each window.
        """
        waited, token = await self._wait_for_room(bulk)
        if self._probing:
            if self._probe_pauses == self._pauses:  # the probe came back and nothing paused us
                self._probing = False
            else:
                self._probe_pauses = self._pauses
        held = Held(waited, self._clock)
        self._in_flight += 1
        try:
            yield held
        finally:
            self._in_flight -= 1
            now = self._clock()
            answered = now if held.answered_at is None else min(held.answered_at, now)
            self._record(answered)
            if self._budget is not None and token is not None:
                self._remember(token, answered)
                self._budget.release(token, now - answered)
            self._wake()

    async def acquire(self) -> float:
        """Take a slot for a request that is over at once (tests, tools); the seconds waited."""
        async with self.slot() as held:
            return held.waited

    async def _wait_for_room(self, bulk: bool = False) -> tuple[float, uuid.UUID | None]:
        """Wait for room here and, with a shared budget, for the database's grant; the seconds
        waited and the shared budget's token for the request (None without one).

        The shared budget is asked as soon as the windows here free a slot within its `ahead`
        seconds; the grant says when the request may leave, and the head waits for that (and
        for room here) before it lets the request go. A pause while it waits gives the grant
        back.
        """
        start = self._clock()
        self._waiting += 1
        self._waiting_bulk += bulk
        token: uuid.UUID | None = None
        ready = 0.0  # when the shared budget lets `token`'s request leave, on `clock`
        try:
            async with self._lock:
                while True:
                    now = self._clock()
                    delay = self._delay_at(now)
                    budget = self._budget
                    if budget is not None:
                        if delay > budget.ahead:
                            if token is not None:  # paused (or new limits) before it left
                                budget.release(token)
                                token = None
                            delay -= budget.ahead  # then ask, that much before the room
                        elif token is None:
                            token, ready, refused = await self._shared_grant(budget, bulk)
                            if token is None:
                                await self._sleep(refused)
                            continue
                        else:
                            delay = max(delay, ready - now)
                    if delay <= 0:
                        break
                    await self._sleep(delay)
        except BaseException:
            if token is not None and self._budget is not None:
                self._budget.release(token)  # cancelled while it waited to leave
            raise
        finally:
            self._waiting -= 1
            self._waiting_bulk -= bulk
            if not self._waiting:
                self._drop_spare()  # the waiters it was granted for went away (cancelled)
        return max(0.0, now - start), token

    async def _shared_grant(
        self, budget: SharedBudget, bulk: bool
    ) -> tuple[uuid.UUID | None, float, float]:
        """A slot of the shared budget for the head waiter: one granted earlier for the queue
        (a spare) or the first of a group asked for now. (token, when it may leave on `clock`,
        0) or, refused, (None, 0, how long to wait before asking again)."""
        spare = self._take_spare(bulk)
        if spare is not None:
            return spare[0], spare[1], 0.0
        tokens = [uuid.uuid4() for _ in range(self._group(bulk))]
        answer = await budget.grant(self._account, tokens, bulk, self._hold)
        if not answer.granted:
            self._shared_pause(answer)
            return None, 0.0, min(max(answer.wait, 0.001), SHARED_POLL)
        now = self._clock()
        readies = [self._ready_at(answer, n, now) for n in range(answer.granted)]
        self._spare.extend(
            (t, bulk, r) for t, r in zip(tokens[1 : answer.granted], readies[1:], strict=True)
        )
        return tokens[0], readies[0], 0.0

    def _ready_at(self, answer: BudgetGrant, n: int, now: float) -> float:
        """When the `n`-th request granted by `answer` may leave, on `clock` (`now`: when the
        answer reached us). The database's `ready` counts from its own now, which was earlier:
        counted from `now` it is never too early, but late by the reply's way back. When the
        slot waited for was freed by an answer seen here, the request leaves a window after
        that answer, by this clock, exactly (and no sooner than its other windows allow)."""
        freed_by = answer.freed_by[n] if n < len(answer.freed_by) else None
        answered = self._answered.get(freed_by) if freed_by is not None else None
        lead = answer.freed_lead[n] if answered is not None else None
        if answered is None or lead is None:
            return now + answer.ready[n]
        return max(answered + lead, now + answer.ready_rest[n])

    def _remember(self, token: uuid.UUID, answered: float) -> None:
        """Keep when `token`'s request was answered for as long as a grant ahead may time a
        request from it: the longest window kept here, and the budget's `ahead`."""
        answers = self._answered
        answers[token] = answered
        ahead = self._budget.ahead if self._budget is not None else 0.0
        horizon = answered - self._longest_window() - ahead
        while True:
            oldest, when = next(iter(answers.items()))
            if when > horizon:
                break
            del answers[oldest]

    def _take_spare(self, bulk: bool) -> tuple[uuid.UUID, float] | None:
        for index, (token, granted_bulk, ready) in enumerate(self._spare):
            if granted_bulk or not bulk:
                del self._spare[index]
                return token, ready
        return None

    def _group(self, bulk: bool) -> int:
        """How many slots to ask the shared budget for: one for each waiter here that could use
        them (live work may use a bulk slot, bulk work no live one), as many as the windows kept
        here have room for within the budget's `ahead`; one alone for the probe after a pause."""
        if self._probing:
            return 1
        ahead = self._budget.ahead if self._budget is not None else 0.0
        wanting = self._waiting if bulk else self._waiting - self._waiting_bulk
        room = min(
            (
                limit.requests
                - self.used(limit.per_seconds + self._margin - ahead)
                - len(self._spare)
                for limit in self._local
            ),
            default=SHARED_GROUP,
        )
        return max(1, min(wanting, room, SHARED_GROUP))

    def _drop_spare(self) -> None:
        """Give back the slots granted for waiters that will not use them."""
        while self._spare:
            token, _, _ = self._spare.popleft()
            if self._budget is not None:
                self._budget.release(token)

    @property
    def holding_back(self) -> bool:
        """Whether the head of the queue sleeps for room now: whoever waits here waits for the
        rate limit (or a pause), not for a moment's bookkeeping."""
        return self._wakeup is not None

    def _shared_pause(self, answer: BudgetGrant) -> None:
        """Another instance paused the account: pause here too (without telling it back)."""
        if answer.paused_until is None:
            return
        until = answer.paused_until - self._wall_clock() + self._clock()
        if until > self._paused_until:
            self._paused_until = until
            self._pause_reason = answer.reason
            self._pauses += 1
            self._probing = True
            self._drop_spare()

    def try_acquire(self) -> bool:
        """Take a slot for an instant request only if one is free now and nobody is queued
        ahead (never waits)."""
        if self._waiting:
            return False
        now = self._clock()
        if self._delay_at(now) > 0:
            return False
        self._record(now)
        return True

    def delay(self) -> float:
        """Seconds until a slot is free in every window and any pause has ended (0.0: now;
        inf: not before a request in flight comes back).

        Queued waiters are not counted: this is when the head of the queue will be served.
        """
        return self._delay_at(self._clock())

    def _delay_at(self, now: float) -> float:
        ready = self._paused_until
        if self._probing and self._in_flight and now >= ready:
            return math.inf  # the probe after a pause is out: wait for its answer
        history = self._history
        for limit in self._local:
            room = limit.requests - self._in_flight  # what finished requests may still hold
            if room <= 0:
                return math.inf  # every slot is out: the next answer frees one
            if len(history) >= room:
                # The `room`-th most recent request must have left the window.
                ready = max(ready, history[-room] + limit.per_seconds + self._margin)
        return max(0.0, ready - now)

    def _record(self, now: float) -> None:
        """A request is over at `now`: from here on only the window's length holds it."""
        # Never record one before an earlier one, even if an injected clock steps back.
        stamp = max(now, self._history[-1]) if self._history else now
        self._history.append(stamp)
        horizon = now - self._longest_window()
        while self._history[0] <= horizon:
            self._history.popleft()

    async def _sleep(self, delay: float) -> None:
        """Sleep until the next slot, or until `_wake` says the rules changed."""
        loop = asyncio.get_running_loop()
        wakeup: asyncio.Future[None] = loop.create_future()
        self._wakeup = wakeup
        timer = None if math.isinf(delay) else loop.call_later(delay, _resolve, wakeup)
        try:
            await wakeup
        finally:
            if timer is not None:
                timer.cancel()
            self._wakeup = None

    def _wake(self) -> None:
        """Make the head waiter look again (limits changed, pause ended, history loaded)."""
        if self._wakeup is not None:
            _resolve(self._wakeup)

    def _longest_window(self) -> float:
        return max((limit.per_seconds for limit in self._local), default=0.0) + self._margin

    def _kept_here(self, limits: tuple[RateLimit, ...]) -> tuple[RateLimit, ...]:
        """The windows this process keeps a history for: all, or with a shared budget the short
        ones (the database holds every window; these spare it the requests it would refuse)."""
        if self._budget is None:
            return limits
        return tuple(lim for lim in limits if lim.per_seconds <= LOCAL_HORIZON)

    # -- restart, pause, reload -------------------------------------------------------------------

    def preload(self, timestamps: Iterable[float]) -> None:
        """Seed the windows with earlier send times (epoch seconds), e.g. after a restart.

        Without this a restarted daemon would believe the day's budget untouched. Times older than
        the longest window are dropped; times in the future (another host's clock) count as now.
        """
        now = self._clock()
        offset = now - self._wall_clock()
        horizon = now - self._longest_window()
        loaded = (min(float(ts) + offset, now) for ts in timestamps)
        self._history = deque(sorted([*self._history, *(t for t in loaded if t > horizon)]))
        self._wake()

    def pause(self, seconds: float, reason: str) -> None:
        """Hold every acquire for `seconds` (the CRM said 429: the whole account is over budget).

        A pause that ends later extends the current one; one that ends sooner changes nothing.
        When it ends, one request goes out alone first (a probe); the rest follow once it has
        come back without a new pause.
        """
        until = self._clock() + seconds
        self._pauses += 1
        self._probing = True
        self._drop_spare()  # granted before the CRM said stop: not to be sent now
        if until > self._paused_until:
            self._paused_until = until
            self._pause_reason = reason
        if self._budget is not None:
            self._budget.pause(self._account, seconds, reason)
        self._wake()  # a head granted ahead gives its grant back now, not when it would leave

    def resume(self) -> None:
        """End a pause now (no probe first)."""
        self._paused_until = -math.inf
        self._pause_reason = None
        self._probing = False
        self._wake()

    def reconfigure(self, limits: Iterable[LimitSpec], *, margin: float | None = None) -> None:
        """Swap the limits (config reload), keeping the grant history so no window is exceeded.

        Waiters are woken so the new limits apply at once. Invalid limits raise ValueError and
        leave the old ones in place.
        """
        new_limits = _normalise(limits)
        new_margin = self._margin if margin is None else _check_margin(margin)
        self._limits, self._margin = new_limits, new_margin
        self._local = self._kept_here(new_limits)
        self._wake()

    # -- introspection ----------------------------------------------------------------------------

    @property
    def limits(self) -> tuple[RateLimit, ...]:
        return self._limits

    @property
    def paused_until(self) -> float | None:
        """When the current pause ends, in epoch seconds; None when not paused."""
        now = self._clock()
        if self._paused_until <= now:
            return None
        return self._paused_until - now + self._wall_clock()

    @property
    def pause_reason(self) -> str | None:
        """Why the account is paused (e.g. the CRM's 429 message); None when not paused."""
        return self._pause_reason if self._paused_until > self._clock() else None

    def used(self, per_seconds: float) -> int:
        """Requests in flight plus those answered in (now - per_seconds, now], preloaded ones
        included, margin not. Only the longest configured window is remembered, so a longer
        `per_seconds` undercounts."""
        since = bisect.bisect_right(self._history, self._clock() - per_seconds)
        return self._in_flight + len(self._history) - since

    def recent_grants(self) -> list[float]:
        """When each request inside the longest window was over (on the limiter's clock), oldest
        first; requests in flight are not in it."""
        return list(self._history)


def max_in_window(times: Sequence[float], seconds: float) -> int:
    """The most timestamps that any window (t - seconds, t] holds; `times` sorted ascending.

    The same half-open window the limiter enforces, so `max_in_window(grants, per) <= requests`
    is the property that must hold for every configured limit.
    """
    best = 0
    start = 0
    for end, t in enumerate(times):
        if end and t < times[end - 1]:
            raise ValueError("times must be sorted ascending")
        while times[start] <= t - seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _normalise(limits: Iterable[LimitSpec]) -> tuple[RateLimit, ...]:
    result = []
    for index, limit in enumerate(limits):
        requests, per_seconds = (
            (limit.requests, limit.per_seconds) if isinstance(limit, RateLimit) else limit
        )
        if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
            raise ValueError(f"limits[{index}]: requests must be a positive integer: {requests!r}")
        if not (isinstance(per_seconds, int | float) and 0 < per_seconds < math.inf):
            raise ValueError(f"limits[{index}]: per_seconds must be positive: {per_seconds!r}")
        if isinstance(limit, RateLimit):
            result.append(limit)
        else:
            result.append(RateLimit(requests=requests, per_seconds=float(per_seconds)))
    if not result:
        raise ValueError("limits: at least one rate limit is needed")
    return tuple(result)


def _check_margin(margin: float) -> float:
    if not 0 <= margin < math.inf:
        raise ValueError(f"margin must be zero or a positive number of seconds: {margin!r}")
    return float(margin)
