"""The daemon's long-running tasks, supervised: one that fails is logged with its traceback and
started again after a growing pause, never lost silently (procrastinate's `_monitor_side_tasks`,
PgQueuer's TaskManager)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from crmd.aio import Backoff, wait_any

log = structlog.get_logger("crmd.tasks")

# A task that ran this long before failing starts again after the shortest pause.
STABLE_SECONDS = 60.0


class Supervisor:
    def __init__(self, stop: asyncio.Event, first_pause: float = 1.0, max_pause: float = 60.0):
        self._stop = stop
        self._pauses = (first_pause, max_pause)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.failing: set[str] = set()  # tasks waiting to be started again

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run `run()` until the stop event is set, starting it again whenever it fails (or ends
        early: these tasks are meant to last until stop)."""
        self._tasks[name] = asyncio.create_task(self._keep(name, run), name=name)

    async def wait(self, name: str) -> None:
        """Until the task has ended for good (after stop)."""
        await asyncio.gather(self._tasks[name], return_exceptions=True)

    async def close(self) -> None:
        """Cancel whatever still runs and wait for it."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _keep(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        backoff = Backoff(*self._pauses)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await run()
                if self._stop.is_set():
                    return
                log.error("task_ended", task=name, note="it should run until stop: restarting")
            except Exception:
                log.exception("task_failed", task=name)
            if time.monotonic() - started > STABLE_SECONDS:
                backoff.reset()
            self.failing.add(name)
            await wait_any(self._stop, within=backoff.next())
            self.failing.discard(name)
