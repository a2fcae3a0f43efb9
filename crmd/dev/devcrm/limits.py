"""Sliding-window rate limits as GestãoClick enforces them: n requests in any s seconds.

A fixed-window or token-bucket model would let a client pass here and fail against the real CRM
(or the reverse), so every admitted arrival time is kept and the window slides with each request.
Refused requests are not recorded: a 429 does not use up budget.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

Limit = tuple[int, float]
"""(requests, per_seconds)."""

DEFAULT_LIMITS: tuple[Limit, ...] = ((3, 1.0), (30_000, 86_400.0))


def check_limits(limits: Iterable[Limit]) -> tuple[Limit, ...]:
    """The limits as a tuple, or ValueError naming the bad one."""
    checked = []
    for requests, seconds in limits:
        if requests < 1 or seconds <= 0:
            raise ValueError(f"rate limit {requests}/{seconds}: need requests >= 1 and seconds > 0")
        checked.append((int(requests), float(seconds)))
    return tuple(checked)


class SlidingWindows:
    """All limits at once: a request is admitted only when every window has room for it."""

    def __init__(self, limits: Iterable[Limit]) -> None:
        self.limits = check_limits(limits)
        self._arrivals: list[deque[float]] = [deque() for _ in self.limits]

    def admit(self, now: float) -> bool:
        """Record `now` as an arrival and return True, or return False without recording it."""
        for (requests, seconds), arrivals in zip(self.limits, self._arrivals, strict=True):
            while arrivals and now - arrivals[0] >= seconds:
                arrivals.popleft()
            if len(arrivals) >= requests:
                return False
        for arrivals in self._arrivals:
            arrivals.append(now)
        return True

    def clear(self) -> None:
        for arrivals in self._arrivals:
            arrivals.clear()
