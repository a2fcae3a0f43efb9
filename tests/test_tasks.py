"""The daemon's supervised tasks: one that fails is logged and started again, never lost; stop
ends them all."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from crmd.service.tasks import Supervisor


def quick(stop: asyncio.Event) -> Supervisor:
    """Restart pauses of 1 s and more would make the tests slow, not different."""
    return Supervisor(stop, first_pause=0.01, max_pause=0.05)


async def test_a_failing_task_is_logged_and_started_again() -> None:
    stop = asyncio.Event()
    runs = 0
    healthy = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError(f"boom {runs}")
        healthy.set()
        await stop.wait()

    supervisor = quick(stop)
    with capture_logs() as logs:
        supervisor.start("listener", flaky)
        await asyncio.wait_for(healthy.wait(), 2)
        assert supervisor.failing == set()
        stop.set()
        await asyncio.wait_for(supervisor.wait("listener"), 2)
    failures = [e for e in logs if e["event"] == "task_failed"]
    assert [e["task"] for e in failures] == ["listener", "listener"]
    assert all(e["log_level"] == "error" and e.get("exc_info") for e in failures)
    assert runs == 3


async def test_a_task_that_ends_before_stop_is_started_again() -> None:
    stop = asyncio.Event()
    runs = 0

    async def quits() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            stop.set()

    supervisor = quick(stop)
    with capture_logs() as logs:
        supervisor.start("timers", quits)
        await asyncio.wait_for(supervisor.wait("timers"), 2)
    assert runs == 3
    assert [e["event"] for e in logs] == ["task_ended", "task_ended"]


async def test_failing_names_a_task_while_it_waits_to_restart() -> None:
    stop = asyncio.Event()

    async def broken() -> None:
        raise RuntimeError("always")

    supervisor = quick(stop)
    with capture_logs():
        supervisor.start("engine", broken)
        for _ in range(100):
            await asyncio.sleep(0.001)
            if supervisor.failing:
                break
        assert supervisor.failing == {"engine"}
        await supervisor.close()
