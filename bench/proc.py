"""Child processes under measurement: CPU and RSS sampled while they run, exact totals at exit.

Each child is reaped with `os.wait4`, whose rusage gives its exact total CPU time. While it runs,
a sampler records (time, CPU seconds, RSS, progress) and its peak RSS (VmHWM), so a scenario can
take the CPU spent between two moments (the first request and the last) and the RSS at a given
point of progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent  # the repository: `-m bench.peers.x` resolves here
# The children must not pick up a developer's crmd or systemd settings.
_DROPPED_ENV = ("CRMD_", "NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_STREAM", "LISTEN_")


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    cpu: float  # user + system seconds so far
    rss: int  # bytes
    progress: int  # whatever the scenario counts (requests received, rows done)


@dataclass
class Usage:
    """What wait4 reported at exit."""

    returncode: int
    cpu_seconds: float


@dataclass
class Child:
    argv: Sequence[str]
    log_path: Path
    samples: list[Sample] = field(default_factory=list)
    usage: Usage | None = None
    popen: subprocess.Popen[bytes] | None = None
    peak_rss: int = 0
    """VmHWM, the process's own peak RSS. (wait4's ru_maxrss is not used: Linux folds the
    parent's peak into it at exec, so a large parent makes every child look large.)"""

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds spent between two monotonic times, from the nearest samples."""
        before = [s for s in self.samples if s.at <= start]
        after = [s for s in self.samples if s.at >= end]
        first = before[-1] if before else self.samples[0]
        last = after[0] if after else self.samples[-1]
        return last.cpu - first.cpu

    def rss_at_progress(self, progress: int) -> int | None:
        """RSS at the first sample whose progress reached `progress`."""
        for s in self.samples:
            if s.progress >= progress:
                return s.rss
        return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV)}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]


@contextlib.asynccontextmanager
async def running(
    argv: Sequence[str],
    log_path: Path,
    *,
    progress: Callable[[], int] = lambda: 0,
    interval: float = 0.05,
) -> AsyncIterator[Child]:
    """Start `argv` (output to `log_path`), sample it, and make sure it is gone afterwards."""
    child = Child(argv, log_path)
    child.popen = _spawn(argv, log_path)
    reaper = asyncio.create_task(_reap(child))
    sampler = asyncio.create_task(_sample(child, progress, interval))
    try:
        yield child
    finally:
        if not reaper.done():
            await stop(child, reaper)
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await reaper


async def wait(child: Child, within: float) -> Usage:
    """Wait for the child to exit by itself."""
    deadline = time.monotonic() + within
    while child.usage is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{' '.join(child.argv[1:4])} still running after {within:g} s")
        await asyncio.sleep(0.02)
    return child.usage


async def terminate(child: Child, within: float = 30.0) -> Usage:
    """SIGTERM (a daemon's graceful stop), then wait for the exit."""
    if child.usage is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)
    return await wait(child, within)


async def stop(child: Child, reaper: asyncio.Task[None]) -> None:
    """SIGTERM, then SIGKILL after 10 s: no child outlives its scenario."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reaper), grace)
            return


def _spawn(argv: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    """A plain Popen, not asyncio's: the child is reaped with wait4 to get its rusage."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT
        )


async def _reap(child: Child) -> None:
    assert child.popen is not None
    _, status, rusage = await asyncio.to_thread(os.wait4, child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    child.popen.returncode = code  # reaped here; Popen must not wait for it again
    child.usage = Usage(code, rusage.ru_utime + rusage.ru_stime)


async def _sample(child: Child, progress: Callable[[], int], interval: float) -> None:
    proc = psutil.Process(child.pid)
    while True:
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                rss = proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            return
        cpu = times.user + times.system
        child.peak_rss = max(child.peak_rss, _peak_rss(child.pid) or rss)
        child.samples.append(Sample(time.monotonic(), cpu, rss, progress()))
        await asyncio.sleep(interval)


def _peak_rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None
