"""What the daemon shows of itself to the admin surface: a small typed view, not the daemon.

Every part is a callable, so a reload's new settings, accounts and pool show at once. The admin
HTTP server is started by whoever runs the daemon (`crmd run`) and handed this view; the daemon
itself knows nothing of HTTP.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from crmd.config import Settings
from crmd.crm.accounts import Account
from crmd.engine.work import Stats
from crmd.ops.schedule import TimerInfo


@dataclass
class ReloadInfo:
    count: int = 0
    last_ok: bool | None = None
    last_at: float | None = None
    last_error: str | None = None


async def no_timers() -> list[TimerInfo]:
    return []


@dataclass
class DaemonView:
    pool: Callable[[], asyncpg.Pool]
    settings: Callable[[], Settings]
    accounts: Callable[[], Mapping[str, Account]]
    stats: Callable[[], Stats | None]
    ready: Callable[[], bool]
    reloads: ReloadInfo
    timers: Callable[[], Awaitable[list[TimerInfo]]] = no_timers


class Surface(Protocol):
    """A side service started with the view (the admin endpoint), stopped at shutdown."""

    async def stop(self) -> None: ...


SurfaceStarter = Callable[[DaemonView], Awaitable[Surface | None]]
