"""The timers' schedule: cron arithmetic in the configured zone, and each timer's last and next
run as the database records them (shared by every instance)."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from croniter import croniter

from crmd.config import ScheduleSettings
from crmd.store import timers

TIMER_LABELS = {"cleanup": "Limpeza", "full_sync": "Sincronização completa"}
"""Each timer's name for people (CLI, dashboard); the keys stay identifiers."""


@dataclass(frozen=True)
class TimerInfo:
    name: str
    cron: str
    last_run: datetime | None  # when it really ran; None if never
    next_run: datetime


def crons(schedule: ScheduleSettings) -> dict[str, str]:
    """The daemon's timers by name, with their cron expressions."""
    return {"cleanup": schedule.cleanup, "full_sync": schedule.full_sync}


def last_due(cron: str, tz: zoneinfo.ZoneInfo, since: datetime, now: datetime) -> datetime | None:
    """The latest scheduled time after `since` and not after `now`, or None if there is none."""
    it = croniter(cron, since.astimezone(tz))
    due = None
    while True:
        nxt: datetime = it.get_next(datetime)
        if nxt > now:
            return due
        due = nxt


def next_after(cron: str, tz: zoneinfo.ZoneInfo, moment: datetime) -> datetime:
    result: datetime = croniter(cron, moment.astimezone(tz)).get_next(datetime)
    return result


async def timers_info(
    conn: asyncpg.Connection, named: dict[str, str], tz: zoneinfo.ZoneInfo, now: datetime
) -> list[TimerInfo]:
    """Each timer of `named` (name -> cron) with its last run and its next one."""
    rows = {r["nome"]: r for r in await timers.runs(conn)}
    result = []
    for name, cron in sorted(named.items()):
        row = rows.get(name)
        # The schedule counts from the last scheduled time (or from when the timer was first
        # seen); "last run" is when it really ran.
        upcoming = next_after(cron, tz, row["ultima_execucao"] if row else now)
        upcoming = max(upcoming, now)  # overdue: runs at the next check
        result.append(TimerInfo(name, cron, row["executado_em"] if row else None, upcoming))
    return result
