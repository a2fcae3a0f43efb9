"""The status report: the queue at a glance (the old monitoring SQL in one call), the accounts'
budgets and pauses, the timers, and what the running daemon knows of itself.

One type, `StatusReport`, built here and nowhere else: `crmd status` prints it, `/api/status`
serves it as JSON and the dashboard renders it. A command run away from the daemon reads the
daemon's report over HTTP (`StatusReport.model_validate`), or builds one without the parts only
the daemon knows.
"""

from __future__ import annotations

import time
import zoneinfo
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
from pydantic import BaseModel

from crmd import ptbr
from crmd.crm.accounts import Account
from crmd.engine.work import Stats
from crmd.model import ENTITIES
from crmd.ops.schedule import TimerInfo
from crmd.store import budget, history, instances, mapping, reports

RECENT_ERRORS = 10
# An instance whose heartbeat (every 5 s) is older than this is shown as gone.
ALIVE_SECONDS = 15.0
STATES = ("pendente", "processando", "falhou", "ignorado")
PACE_WINDOW = 600.0
"""The recent past whose pace the estimate of when the queue is empty assumes goes on."""


class QueueReport(BaseModel):
    pending: dict[str, int]
    pending_total: int
    in_flight: dict[str, int]
    in_flight_total: int
    failed: dict[str, int]
    failed_total: int
    # Items of an entity the CRM has no resource for ("ignorado"), until the cleanup: not failed.
    ignored: dict[str, int] = {}
    ignored_total: int = 0
    oldest_pending_at: str | None
    oldest_pending_age_seconds: float | None


class DayReport(BaseModel):
    attempts: int
    succeeded: int
    errors: int
    success_rate: float | None
    ignored: int = 0  # not attempts: counted apart


class HourReport(BaseModel):
    attempts: int
    succeeded: int


class ErrorReport(BaseModel):
    id: int
    criado_em: str
    queue_id: int | None
    conta: str
    loja_id: int
    entidade: str
    entidade_id: int
    acao: str
    tentativa: int
    http_status: int | None
    mensagem: str | None


class UncertainReport(BaseModel):
    """A create whose outcome nobody knows and that has no key to be looked up by."""

    conta: str
    entidade: str
    entidade_id: int
    chave: str | None
    since: str


class LimitReport(BaseModel):
    requests: int
    per_seconds: float
    used: int


class AccountReport(BaseModel):
    name: str
    paused: bool
    paused_until: str | None
    reason: str | None
    limits: list[LimitReport]
    # The estimate "fila esvazia em ~3 h 20 min": the account's open items, its pace over the
    # last PACE_WINDOW and its budget. drain_seconds None: nothing was sent lately to tell.
    pending: int = 0
    requests_per_minute: float = 0.0
    drain_seconds: float | None = None


class TimerReport(BaseModel):
    name: str
    cron: str
    last_run: str | None
    next_run: str


class InstanceReport(BaseModel):
    """One crmd process on the database; `alive`: its heartbeat is recent."""

    id: str
    host: str
    pid: int
    version: str
    started_at: str
    seen_at: str
    alive: bool


class ReloadsReport(BaseModel):
    count: int
    last_ok: bool | None
    last_at: float | None


class StatsReport(BaseModel):
    succeeded: int
    failed: int
    retried: int
    released: int
    requests: int
    ignored: int = 0


class DaemonReport(BaseModel):
    ready: bool
    reloads: ReloadsReport
    stats: StatsReport | None
    token_configured: bool


class Reloads(Protocol):
    """How the daemon's reloads went (service.daemon.ReloadInfo)."""

    count: int
    last_ok: bool | None
    last_at: float | None


class StatusReport(BaseModel):
    generated_at: str
    timezone: str = "UTC"  # where people are: every time is shown in it, CLI and page alike
    queue: QueueReport
    last_24h: DayReport
    last_hour: HourReport
    processed_today: int = 0  # successes since midnight in `timezone`
    recent_errors: list[ErrorReport]
    # "Criação incerta": a person checks the CRM for these, then `crmd retry`.
    uncertain_creates: list[UncertainReport] = []
    # Known only where the daemon runs (None: not known here, not "none paused").
    accounts: list[AccountReport] | None = None
    timers: list[TimerReport] | None = None
    instances: list[InstanceReport] = []
    daemon: DaemonReport | None = None
    query_seconds: float = 0.0


async def report(
    conn: asyncpg.Connection,
    *,
    accounts: Mapping[str, Account] | None = None,
    timers: Sequence[TimerInfo] | None = None,
    daemon: DaemonReport | None = None,
    timezone: str = "UTC",
) -> StatusReport:
    """The report from the database, with what the caller knows of accounts, timers and the
    daemon. Reads only small partial indexes: milliseconds on a queue of millions of rows."""
    started = time.perf_counter()
    depth = {s: dict.fromkeys(ENTITIES, 0) for s in STATES}
    oldest: datetime | None = None
    for r in await reports.queue_depth(conn):
        depth[r["estado"]][r["entidade"]] = r["n"]
        if r["estado"] == "pendente" and (oldest is None or r["oldest"] < oldest):
            oldest = r["oldest"]
    rates = await reports.log_rates(conn)
    now: datetime = rates["now"]
    errors = await reports.last_errors(conn, RECENT_ERRORS)
    uncertain = await mapping.uncertain(conn, RECENT_ERRORS)
    attempts = rates["attempts_24h"]
    tz = zoneinfo.ZoneInfo(timezone)
    midnight = now.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    account_list = await shared_accounts(conn, accounts)
    if account_list is not None:
        open_total = sum(depth["pendente"].values()) + sum(depth["processando"].values())
        account_list = await _with_estimates(conn, account_list, open_total)
    return StatusReport(
        generated_at=now.isoformat(),
        timezone=timezone,
        processed_today=await history.succeeded_since(conn, midnight),
        queue=QueueReport(
            pending=depth["pendente"],
            pending_total=sum(depth["pendente"].values()),
            in_flight=depth["processando"],
            in_flight_total=sum(depth["processando"].values()),
            failed=depth["falhou"],
            failed_total=sum(depth["falhou"].values()),
            ignored=depth["ignorado"],
            ignored_total=sum(depth["ignorado"].values()),
            oldest_pending_at=_iso(oldest),
            oldest_pending_age_seconds=(
                None if oldest is None else max((now - oldest).total_seconds(), 0.0)
            ),
        ),
        last_24h=DayReport(
            attempts=attempts,
            succeeded=rates["succeeded_24h"],
            errors=attempts - rates["succeeded_24h"],
            success_rate=None if not attempts else rates["succeeded_24h"] / attempts,
            ignored=rates["ignored_24h"],
        ),
        last_hour=HourReport(attempts=rates["attempts_1h"], succeeded=rates["succeeded_1h"]),
        recent_errors=[
            ErrorReport(**{**dict(r), "criado_em": r["criado_em"].isoformat()}) for r in errors
        ],
        uncertain_creates=[
            UncertainReport(
                conta=r["conta"],
                entidade=r["entidade"],
                entidade_id=r["entidade_id"],
                chave=r["chave"],
                since=r["sincronizado_em"].isoformat(),
            )
            for r in uncertain
        ],
        accounts=account_list,
        instances=instance_reports(await instances.listed(conn)),
        timers=None if timers is None else [_timer(t) for t in timers],
        daemon=daemon,
        query_seconds=round(time.perf_counter() - started, 4),
    )


async def shared_accounts(
    conn: asyncpg.Connection, accounts: Mapping[str, Account] | None
) -> list[AccountReport] | None:
    """Each CRM account's pause, its reason and each window's use right now, as every instance
    sees them (the shared budget in the database), merged with what this process knows of its
    own accounts (a pause it has not written yet). None when neither knows any account."""
    windows: dict[str, list[LimitReport]] = {}
    for r in await budget.usage(conn):
        windows.setdefault(r["conta"], []).append(
            LimitReport(requests=r["requests"], per_seconds=r["per_seconds"], used=r["used"])
        )
    pauses = {r["conta"]: (r["pausada_ate"], r["motivo"]) for r in await budget.paused(conn)}
    names = set(windows) | set(pauses) | set(accounts or ())
    if not names:
        return None if accounts is None else []
    result = []
    for name in sorted(names):
        until, reason = pauses.get(name, (None, None))
        local = (accounts or {}).get(name)
        limits = windows.get(name, [])
        if local is not None:
            limiter = local.limiter
            mine = limiter.paused_until
            if mine is not None and (until is None or mine > until.timestamp()):
                until, reason = datetime.fromtimestamp(mine, UTC), limiter.pause_reason
            if not limits:
                limits = [
                    LimitReport(
                        requests=lim.requests,
                        per_seconds=lim.per_seconds,
                        used=limiter.used(lim.per_seconds),
                    )
                    for lim in limiter.limits
                ]
        result.append(
            AccountReport(
                name=name,
                paused=until is not None,
                paused_until=_iso(until),
                reason=reason,
                limits=limits,
            )
        )
    return result


def instance_reports(rows: Sequence[asyncpg.Record]) -> list[InstanceReport]:
    return [
        InstanceReport(
            id=str(r["id"]),
            host=r["host"],
            pid=r["pid"],
            version=r["versao"],
            started_at=r["iniciado_em"].isoformat(),
            seen_at=r["visto_em"].isoformat(),
            alive=r["silent_seconds"] < ALIVE_SECONDS,
        )
        for r in rows
    ]


async def _with_estimates(
    conn: asyncpg.Connection, items: list[AccountReport], open_total: int
) -> list[AccountReport]:
    """Each account's share of the backlog (by loja, when lojas have accounts of their own),
    its recent pace and when its share will have been sent."""
    pace = await history.recent_pace(conn, PACE_WINDOW)
    if len(items) == 1:
        shares = {items[0].name: open_total}
    else:
        shares = {}
        names = {a.name for a in items}
        for loja, n in (await history.open_by_loja(conn)).items():
            name = f"loja-{loja}" if f"loja-{loja}" in names else "default"
            shares[name] = shares.get(name, 0) + n
    for a in items:
        requests, succeeded, span = pace.get(a.name, (0, 0, 0.0))
        seconds = max(min(span, PACE_WINDOW), 60.0)
        a.pending = shares.get(a.name, 0)
        a.requests_per_minute = round(requests * 60 / seconds, 1)
        a.drain_seconds = drain_estimate(
            a.pending,
            requests / seconds,
            requests / succeeded if succeeded else 1.0,
            [(lim.requests, lim.per_seconds, lim.used) for lim in a.limits],
        )
    return items


def drain_estimate(
    pending: int,
    requests_per_second: float,
    requests_per_item: float,
    limits: Sequence[tuple[int, float, int]],
) -> float | None:
    """Seconds until `pending` items are sent at the recent pace, within the budget: a limit
    whose window is longer than the pace's (the daily one) and whose room runs out slows what is
    left to that limit's average rate. `limits`: (requests, per_seconds, used now). None when
    nothing was sent lately, so there is no pace to go by."""
    if pending <= 0:
        return 0.0
    if requests_per_second <= 0:
        return None
    needed = pending * max(requests_per_item, 1.0)
    seconds = needed / requests_per_second
    for requests, per_seconds, used in limits:
        if per_seconds <= PACE_WINDOW:
            continue  # already in the pace
        room = max(requests - used, 0)
        if needed > room:
            rest = (needed - room) / (requests / per_seconds)
            seconds = max(seconds, room / requests_per_second + rest)
    return seconds


def drain_text(seconds: float | None, pending: int) -> str:
    """ "fila esvazia em ~3 h 20 min" (the dashboard's script says the same)."""
    if pending <= 0:
        return "fila vazia"
    if seconds is None:
        return "sem envios nos últimos 10 min para estimar"
    return f"fila esvazia em ~{ptbr.duration(seconds)}"


def daemon_report(
    *, ready: bool, reloads: Reloads, stats: Stats | None, token_configured: bool
) -> DaemonReport:
    """What the running daemon says of itself."""
    return DaemonReport(
        ready=ready,
        reloads=ReloadsReport(
            count=reloads.count, last_ok=reloads.last_ok, last_at=reloads.last_at
        ),
        stats=None
        if stats is None
        else StatsReport(
            succeeded=stats.succeeded,
            failed=stats.failed,
            retried=stats.retried,
            released=stats.released,
            requests=stats.requests,
            ignored=stats.ignored,
        ),
        token_configured=token_configured,
    )


def _timer(t: TimerInfo) -> TimerReport:
    return TimerReport(
        name=t.name, cron=t.cron, last_run=_iso(t.last_run), next_run=t.next_run.isoformat()
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def format_age(seconds: float) -> str:
    """A duration for people: 45 s, 12 min, 3 h 20 min, 2 dias 4 h."""
    return ptbr.duration(seconds)
