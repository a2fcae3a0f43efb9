"""Prometheus metrics for `/metrics`, in a registry of their own (tests can build several).

Three kinds of source, each read the cheapest way:
- every CRM request, as it finishes (an observer in `crmd.crm.transport.observers`);
- the daemon's memory at scrape time (engine counters, account budgets and pauses, reloads);
- the database at scrape time (`refresh`): queue depth from a small partial index, timer runs.
"""

from __future__ import annotations

import asyncio
import platform
import time
from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from crmd import __version__
from crmd.crm import transport
from crmd.crm.transport import RequestEvent
from crmd.model import ENTITIES
from crmd.ops.status import AccountReport, LimitReport, instance_reports, shared_accounts
from crmd.service.view import DaemonView
from crmd.store import instances, reports, timers
from crmd.store.db import DB_ERRORS

STATES = ("pendente", "processando", "falhou", "ignorado")
REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WAIT_BUCKETS = (0.0, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0)


def status_class(status: int | None) -> str:
    return "error" if status is None else f"{status // 100}xx"


def entity_of(path: str) -> str:
    """`/clientes/9` or `/api/vendas?pagina=2` -> the resource; anything else -> "other"."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if parts and parts[0] == "api":
        parts = parts[1:]
    return parts[0] if parts and parts[0] in ENTITIES else "other"


class Metrics:
    def __init__(self, source: DaemonView) -> None:
        self.source = source
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "crmd_crm_requests",
            "CRM requests, by account, entity, method and status class (error: no answer)",
            ["account", "entidade", "method", "status_class"],
            registry=r,
        )
        self.duration = Histogram(
            "crmd_crm_request_duration_seconds",
            "CRM request duration (after the rate limiter let it go)",
            ["account", "method"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter(
            "crmd_crm_rate_limited", "HTTP 429 answers from the CRM", ["account"], registry=r
        )
        self.auth_failures = Counter(
            "crmd_crm_auth_failures",
            "HTTP 401 and 403 answers from the CRM (the account's tokens refused)",
            ["account"],
            registry=r,
        )
        self.build = Gauge(
            "crmd_build_info",
            "Always 1; the labels say which crmd runs (for dashboards and alerts across hosts)",
            ["version", "python"],
            registry=r,
        )
        self.build.labels(__version__, platform.python_version()).set(1)
        self.waits = Histogram(
            "crmd_rate_limit_wait_seconds",
            "Time each request waited for the account's rate limiter",
            ["account"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.depth = Gauge(
            "crmd_queue_depth",
            "Queue items by entity and state (done items are not counted)",
            ["entidade", "estado"],
            registry=r,
        )
        self.oldest = Gauge(
            "crmd_queue_oldest_pending_age_seconds",
            "Age of the oldest pending item (0 when none waits)",
            registry=r,
        )
        self.database_up = Gauge(
            "crmd_database_up", "Whether the last scrape could read the database", registry=r
        )
        self.timer_last_run = Gauge(
            "crmd_timer_last_run_timestamp_seconds",
            "When each timer last ran",
            ["timer"],
            registry=r,
        )
        self.timer_last_ok = Gauge(
            "crmd_timer_last_success_timestamp_seconds",
            "When each timer last ran without error (as far as this process has seen)",
            ["timer"],
            registry=r,
        )
        self.timer_next = Gauge(
            "crmd_timer_next_run_timestamp_seconds",
            "When each timer runs next",
            ["timer"],
            registry=r,
        )
        self.shared: list[AccountReport] | None = None  # the accounts as every instance sees them
        self.instances_alive = Gauge(
            "crmd_instances_alive",
            "crmd instances on the database with a recent heartbeat",
            registry=r,
        )
        r.register(_LiveCollector(source, self))
        self._installed = False

    # --- sources ----------------------------------------------------------------------------

    def observe(self, event: RequestEvent) -> None:
        """Called by the transport after every CRM request."""
        self.requests.labels(
            event.account, entity_of(event.path), event.method, status_class(event.status)
        ).inc()
        self.duration.labels(event.account, event.method).observe(event.seconds)
        self.waits.labels(event.account).observe(event.waited)
        if event.status == 429:
            self.rate_limited.labels(event.account).inc()
        if event.status in (401, 403):
            self.auth_failures.labels(event.account).inc()

    def install(self) -> None:
        if not self._installed:
            transport.observers.append(self.observe)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            transport.observers.remove(self.observe)
            self._installed = False

    async def refresh(self, pool: asyncpg.Pool) -> None:
        """Read what lives in the database; on failure report the database down, keep the rest."""
        try:
            async with asyncio.timeout(4), pool.acquire() as conn:
                depth = await reports.queue_depth(conn)
                runs = await timers.runs(conn)
                self.shared = await shared_accounts(conn, self.source.accounts())
                alive = instance_reports(await instances.listed(conn))
        except DB_ERRORS:
            self.database_up.set(0)
            return
        self.database_up.set(1)
        self.instances_alive.set(sum(1 for i in alive if i.alive))
        self._set_depth(depth)
        self._set_runs(runs)
        try:
            infos = await self.source.timers()
        except DB_ERRORS:
            return
        for info in infos:
            self.timer_next.labels(info.name).set(info.next_run.timestamp())

    def _set_depth(self, rows: Sequence[asyncpg.Record]) -> None:
        counts = {(e, s): 0 for e in ENTITIES for s in STATES}
        oldest_age = 0.0
        for row in rows:
            counts[(row["entidade"], row["estado"])] = row["n"]
            if row["estado"] == "pendente":
                oldest_age = max(oldest_age, row["oldest_age"])
        for (entidade, estado), n in counts.items():
            self.depth.labels(entidade, estado).set(n)
        self.oldest.set(oldest_age)

    def _set_runs(self, rows: Iterable[asyncpg.Record]) -> None:
        for row in rows:
            ran: datetime | None = row["executado_em"]
            if ran is None:
                continue
            self.timer_last_run.labels(row["nome"]).set(ran.timestamp())
            if not str(row["resultado"] or "").startswith("erro"):
                self.timer_last_ok.labels(row["nome"]).set(ran.timestamp())

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector:
    """Metrics read from the daemon's memory at each scrape (no bookkeeping in between)."""

    def __init__(self, source: DaemonView, metrics: Metrics) -> None:
        self.source = source
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        yield from self._stats()
        yield from self._accounts()
        yield from self._reloads()

    def _stats(self) -> Iterable[Metric]:
        stats = self.source.stats()
        done = CounterMetricFamily(
            "crmd_items_done", "Items sent successfully since start", labels=["entidade"]
        )
        failed = CounterMetricFamily(
            "crmd_items_failed", "Items that failed for good since start", labels=["entidade"]
        )
        ignored = CounterMetricFamily(
            "crmd_items_ignored",
            "Items of an entity the CRM has no resource for, ignored since start",
            labels=["entidade"],
        )
        retried = CounterMetricFamily("crmd_items_retried", "Failed attempts to be tried again")
        released = CounterMetricFamily(
            "crmd_items_released", "Items given back unsent (pause, dependency, shutdown)"
        )
        if stats is not None:
            for entidade in ENTITIES:
                done.add_metric([entidade], stats.by_entity.get(entidade, 0))
                failed.add_metric([entidade], stats.failed_by_entity.get(entidade, 0))
                ignored.add_metric([entidade], stats.ignored_by_entity.get(entidade, 0))
            retried.add_metric([], stats.retried)
            released.add_metric([], stats.released)
        ready = GaugeMetricFamily("crmd_ready", "Database reachable and not shutting down")
        ready.add_metric([], 1 if self.source.ready() else 0)
        return [done, failed, ignored, retried, released, ready]

    def _accounts(self) -> Iterable[Metric]:
        labels = ["account", "window_seconds"]
        used = GaugeMetricFamily(
            "crmd_rate_limit_used", "Requests granted in each limit's window", labels=labels
        )
        limit = GaugeMetricFamily(
            "crmd_rate_limit_limit", "Requests allowed in each limit's window", labels=labels
        )
        paused = GaugeMetricFamily(
            "crmd_account_paused",
            "1 while the account is paused (429, auth, failures)",
            labels=["account"],
        )
        remaining = GaugeMetricFamily(
            "crmd_account_pause_remaining_seconds",
            "Seconds until the pause ends",
            labels=["account"],
        )
        shared = self.metrics.shared  # refreshed at each scrape, from the database
        if shared is None:
            shared = [
                AccountReport(
                    name=name,
                    paused=account.paused_for() > 0,
                    paused_until=None,
                    reason=None,
                    limits=[
                        LimitReport(
                            requests=lim.requests,
                            per_seconds=lim.per_seconds,
                            used=account.limiter.used(lim.per_seconds),
                        )
                        for lim in account.limiter.limits
                    ],
                )
                for name, account in sorted(self.source.accounts().items())
            ]
        now = time.time()
        for acct in shared:
            for lim in acct.limits:
                window = f"{lim.per_seconds:g}"
                used.add_metric([acct.name, window], lim.used)
                limit.add_metric([acct.name, window], lim.requests)
            until = (
                datetime.fromisoformat(acct.paused_until).timestamp() if acct.paused_until else now
            )
            left = max(until - now, 0.0)
            paused.add_metric([acct.name], 1 if acct.paused and left > 0 else 0)
            remaining.add_metric([acct.name], left)
        return [used, limit, paused, remaining]

    def _reloads(self) -> Iterable[Metric]:
        info = self.source.reloads
        count = CounterMetricFamily("crmd_config_reloads", "Configuration reloads (SIGHUP)")
        count.add_metric([], info.count)
        ok = GaugeMetricFamily(
            "crmd_config_last_reload_success", "1 if the last reload applied (also before any)"
        )
        ok.add_metric([], 0 if info.last_ok is False else 1)
        at = GaugeMetricFamily(
            "crmd_config_last_reload_timestamp_seconds", "When the last reload was attempted"
        )
        at.add_metric([], info.last_at or 0)
        return [count, ok, at]
