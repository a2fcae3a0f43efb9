"""The record of every API request the development CRM received, and what it answered.

Tests and benchmarks read it to check a client's behaviour on the wire: how many requests it sent,
in what order, what came back, and whether it ever went over the CRM's rate limits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LedgerEntry:
    """One request. `monotonic` and `wall` are its arrival times (`time.monotonic()`,
    `time.time()`); `status` is None when the connection was dropped without an answer.

    `counted` says whether the request used up rate-limit budget: False for every 429 (GestãoClick
    does not count them) and for requests turned away before the limiter (dropped connections,
    outage 503s, 401s); True for everything else, including injected 5xx errors.
    """

    index: int
    wall: float
    monotonic: float
    method: str
    path: str
    query: str
    status: int | None
    counted: bool
    created_id: str | None = None
    fault: str | None = None
    """Which injected fault decided the answer: drop, outage, auth, burst, error; else None."""
    token: str | None = None
    """Which company (account) sent it: a digest of its access token (`server.token_id`)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def max_in_window(
    entries: Iterable[LedgerEntry], seconds: float, *, all_requests: bool = False
) -> int:
    """The most counted requests whose arrivals fall within any `seconds`-long window.

    Two arrivals share a window when they are less than `seconds` apart, the same rule the server's
    limiter applies, so against a limit of (n, seconds) this never exceeds n. With `all_requests`
    every request is counted, 429s included: how hard the client pushed, not what the CRM let in.
    """
    times = sorted(e.monotonic for e in entries if all_requests or e.counted)
    best = 0
    start = 0
    for end, t in enumerate(times):
        while t - times[start] >= seconds:
            start += 1
        best = max(best, end - start + 1)
    return best
