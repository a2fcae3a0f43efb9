"""The last day in numbers for the dashboard's chart: requests per minute per account against its
limit (from crm_sync_log), and the queue's depth (from the minute samples the daemon writes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg
from pydantic import BaseModel

from crmd.store import history, reports

DAY = 86_400.0


class AccountSeries(BaseModel):
    conta: str
    limit_per_minute: float | None
    points: list[tuple[int, int]]  # (minute as epoch seconds, requests); minutes without any: 0


class DepthPoint(BaseModel):
    at: int  # epoch seconds of the minute
    pendentes: int
    processando: int
    falhas: int


class Series(BaseModel):
    generated_at: str
    timezone: str
    since: int  # epoch seconds: the chart's left edge
    until: int
    requests: list[AccountSeries]
    depth: list[DepthPoint]


def minute_limit(limits: Sequence[tuple[int, float]]) -> float | None:
    """The most requests a minute can hold under limits of (requests, per_seconds): the
    tightest window of a minute or less, scaled to a minute (3/s holds 180, 100/min 100)."""
    short = [r * 60.0 / s for r, s in limits if s <= 60.0]
    every = short or [r * 60.0 / s for r, s in limits]
    return min(every) if every else None


async def series(
    conn: asyncpg.Connection,
    limits: Mapping[str, Sequence[tuple[int, float]]],
    *,
    timezone: str = "UTC",
    seconds: float = DAY,
) -> Series:
    """The chart's data over the last `seconds`; `limits`: each account's (requests,
    per_seconds), so an account that sent nothing still has its line at zero."""
    now = (await reports.log_rates(conn))["now"]
    per_account: dict[str, list[tuple[int, int]]] = {name: [] for name in limits}
    for r in await history.requests_per_minute(conn, seconds):
        per_account.setdefault(r["conta"], []).append((int(r["minuto"].timestamp()), int(r["n"])))
    depth = [
        DepthPoint(
            at=int(r["minuto"].timestamp()),
            pendentes=r["pendentes"],
            processando=r["processando"],
            falhas=r["falhas"],
        )
        for r in await history.depth_samples(conn, seconds)
    ]
    until = int(now.timestamp())
    return Series(
        generated_at=now.isoformat(),
        timezone=timezone,
        since=until - int(seconds),
        until=until,
        requests=[
            AccountSeries(
                conta=name,
                limit_per_minute=minute_limit(limits.get(name, ())),
                points=points,
            )
            for name, points in sorted(per_account.items())
        ],
        depth=depth,
    )
