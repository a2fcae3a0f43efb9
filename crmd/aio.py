"""Two asyncio helpers every long-running part uses: a growing pause, and waiting for the first
of several events with a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


class Backoff:
    """Pauses that double from `initial` up to `limit`, back to `initial` after a success."""

    def __init__(self, initial: float = 0.5, limit: float = 30.0) -> None:
        self.initial = initial
        self.limit = limit
        self.current = initial

    def next(self) -> float:
        """The pause to take now; the one after it is twice as long (up to the limit)."""
        pause = self.current
        self.current = min(self.current * 2, self.limit)
        return pause

    def reset(self) -> None:
        self.current = self.initial


async def wait_any(*waits: asyncio.Event | Awaitable[object], within: float | None = None) -> None:
    """Return when the first event is set or awaitable finishes, or after `within` seconds.

    The other waits are cancelled (an event is not changed; an awaitable is cancelled).
    """
    tasks = [asyncio.ensure_future(w.wait() if isinstance(w, asyncio.Event) else w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
