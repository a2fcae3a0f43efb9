"""`crmd run`: the long-running service under systemd.

Owns the process-wide concerns around the engine: the event loop (uvloop), signals (SIGHUP
reload, SIGTERM/SIGINT drain, a second signal stops at once), systemd notifications and the
watchdog, the LISTEN wake-up, timers, the periodic summary and the admin endpoint. The engine
knows none of this; it is given a stop event and a wake event.
"""

from __future__ import annotations

import asyncio
import faulthandler
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
import uvloop

from crmd.config import ConfigError, Settings, effective, load_settings
from crmd.crm.accounts import Account, build_accounts, close_accounts, preload_budgets
from crmd.engine.loop import Engine
from crmd.service import logs
from crmd.service.listener import Listener, sleep_or_stop
from crmd.service.notify import Notifier
from crmd.service.timers import Action, Timers
from crmd.store import db, migrate
from crmd.store.sql import queries

log = structlog.get_logger("crmd.daemon")

EX_OK = 0
EX_UNAVAILABLE = 69
EX_CONFIG = 78


@dataclass
class ReloadInfo:
    count: int = 0
    last_ok: bool | None = None
    last_at: float | None = None
    last_error: str | None = None


@dataclass
class Summary:
    """What changed since the last summary line."""

    at: float = field(default_factory=time.monotonic)
    succeeded: int = 0
    failed: int = 0
    requests: int = 0


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (secrets are compared masked, so a changed secret shows
    as its *_file key or not at all: values are never logged)."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, path + ".")
        elif a != b:
            keys.append(path)
    return keys


class Daemon:
    def __init__(self, config_path: str | None, settings: Settings) -> None:
        self.config_path = config_path
        self.settings = settings
        self.notifier = Notifier.from_env()
        self.stop = asyncio.Event()
        self.wake = asyncio.Event()
        self.reloads = ReloadInfo()
        self.stopping = False
        self._force = False
        self._reloading: asyncio.Task[None] | None = None
        self.pool: asyncpg.Pool | None = None
        self.engine: Engine | None = None
        self.timers: Timers | None = None
        self.listener: Listener | None = None
        self.admin: Any = None
        self._summary = Summary()
        self._tasks: set[asyncio.Task[None]] = set()
        self._action_factory: Callable[[Daemon], dict[str, tuple[str, Action]]] = default_actions

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        self.notifier.status("connecting to the database")
        try:
            self.pool = await self._connect_until_ready()
        except _SchemaOutdated as exc:
            log.error("schema_outdated", error=str(exc))
            self.notifier.stopping(f"schema outdated: {exc}")
            return EX_CONFIG
        if self.pool is None:  # stopped while waiting for the database
            self.notifier.stopping()
            return EX_OK
        accounts = build_accounts(self.settings)
        async with self.pool.acquire() as conn:
            await preload_budgets(conn, accounts)
        self.engine = Engine(self.settings, self.pool, accounts)
        self.listener = Listener(self.settings.database, self.wake)
        self.timers = Timers(self.pool, self.settings.schedule.timezone)
        self.timers.configure(self.settings.schedule.timezone, self._action_factory(self))
        await self._start_admin()
        tasks = [
            asyncio.create_task(self.listener.run(self.stop), name="listener"),
            asyncio.create_task(self.engine.run(self.stop, self.wake), name="engine"),
            asyncio.create_task(self.timers.run(self.stop), name="timers"),
            asyncio.create_task(self._watchdog(), name="watchdog"),
            asyncio.create_task(self._report(), name="summary"),
        ]
        self.notifier.ready(self.status_line())
        log.info("started", accounts=sorted(accounts), batch_size=self.settings.queue.batch_size)
        await self.stop.wait()
        return await self._shutdown(tasks, accounts)

    async def _shutdown(self, tasks: list[asyncio.Task[None]], accounts: dict[str, Account]) -> int:
        assert self.engine is not None and self.pool is not None
        self.stopping = True
        self.notifier.stopping("stopping: finishing calls in flight")
        log.info("stopping", in_flight=self.engine.in_flight)
        engine_task = tasks[1]
        await asyncio.gather(engine_task, return_exceptions=True)  # the claim loop ends at stop
        timeout = 0.0 if self._force else self.settings.sync.shutdown_timeout_seconds
        drain = asyncio.create_task(self.engine.shutdown(timeout))
        while not drain.done():  # a second signal cuts the drain short
            await asyncio.wait([drain], timeout=0.05)
            if self._force and not drain.done():
                drain.cancel()
                await asyncio.gather(drain, return_exceptions=True)
                await self.engine.shutdown(0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.admin is not None:
            await self.admin.stop()
        await close_accounts(accounts)
        await self.pool.close()
        log.info("stopped", **self._totals())
        return EX_OK

    def _on_stop_signal(self, name: str) -> None:
        if self.stop.is_set():
            log.warning("stop_now", signal=name)
            self._force = True
            return
        log.info("stop_requested", signal=name)
        self.stop.set()

    def _on_reload_signal(self) -> None:
        if self.stop.is_set() or self.engine is None:
            log.warning("reload_ignored", reason="not running")
            return
        if self._reloading is not None and not self._reloading.done():
            log.warning("reload_ignored", reason="a reload is already in progress")
            return
        self._reloading = asyncio.create_task(self.reload())

    async def _connect_until_ready(self) -> asyncpg.Pool | None:
        """Wait (with growing pauses) for the database; refuse an outdated schema."""
        backoff = 0.5
        while not self.stop.is_set():
            try:
                pool = await db.create_pool(self.settings.database)
            except db.DatabaseUnavailable as exc:
                log.error("database_unreachable", error=str(exc), retry_in=backoff)
                self.notifier.status(f"waiting for the database: {exc}")
                await sleep_or_stop(self.stop, backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            async with pool.acquire() as conn:
                missing = await migrate.pending(conn)
            if missing:
                await pool.close()
                names = ", ".join(f"{m.conjunto}/{m.version:04d}_{m.name}" for m in missing)
                raise _SchemaOutdated(f"missing migrations {names}: run crmd migrate")
            return pool
        return None

    # --- reload -----------------------------------------------------------------------------

    async def reload(self) -> None:
        """Re-read and validate everything; apply all of it or none of it."""
        assert self.engine is not None and self.pool is not None and self.timers is not None
        self.notifier.reloading("reloading configuration")
        self.reloads.count += 1
        self.reloads.last_at = time.time()
        try:
            new, _ = load_settings(self.config_path)
            accounts = build_accounts(new)  # validates credentials before anything changes
        except (ConfigError, ValueError) as exc:
            self.reloads.last_ok, self.reloads.last_error = False, str(exc)
            log.error("reload_failed", error=str(exc), note="still running on the old config")
            self.notifier.ready(f"reload FAILED, old config kept: {exc}"[:200])
            return
        old = self.settings
        changed = changed_keys(effective(old), effective(new))
        changed += [f"crm.{s}" for s in _secret_changes(old, new)]
        await self._apply(old, new, accounts)
        self.reloads.last_ok, self.reloads.last_error = True, None
        log.info("reloaded", changed=changed or "nothing")
        self.notifier.ready(self.status_line())

    async def _apply(self, old: Settings, new: Settings, fresh: dict[str, Account]) -> None:
        assert self.engine is not None and self.pool is not None and self.timers is not None
        logs.configure(new.log.level, new.log.format)
        current = self.engine.accounts
        accounts: dict[str, Account] = {}
        retired: dict[str, Account] = {}
        for name, acct in fresh.items():
            before = current.get(name)
            if before is not None and _same_connection(before, acct):
                # Same CRM session: keep it (and the grant history); adjust limits and slots.
                before.limiter.reconfigure(
                    acct.settings.limits, margin=acct.settings.limit_margin_seconds
                )
                if before.settings.concurrency != acct.settings.concurrency:
                    before.slots = acct.slots
                before.settings = acct.settings
                accounts[name] = before
                retired[name] = acct
            else:
                if before is not None:
                    acct.limiter.preload(_epoch(before.limiter.recent_grants()))
                    retired[name] = before
                accounts[name] = acct
        for name, acct in current.items():
            if name not in accounts:
                retired[name] = acct
        if new.database.model_dump() != old.database.model_dump():
            await self._swap_pool(new)
        self.settings = new
        self.engine.apply(new, accounts)
        self.timers.configure(new.schedule.timezone, self._action_factory(self))
        if self.listener is not None:
            self.listener.retarget(new.database)
        self.wake.set()  # claim under the new settings (and from a new pool) at once
        # Old sessions close once their calls in flight are done.
        self._background(_close_later(retired, self.settings.sync.shutdown_timeout_seconds))

    async def _swap_pool(self, new: Settings) -> None:
        assert self.engine is not None and self.pool is not None and self.timers is not None
        pool = await db.create_pool(new.database)
        old, self.pool = self.pool, pool
        self.engine.pool = pool
        self.timers.pool = pool
        self._background(_close_pool_later(old))
        log.info("database_pool_replaced")

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    # --- watching ---------------------------------------------------------------------------

    async def _watchdog(self) -> None:
        """WATCHDOG=1 at half the interval systemd asked for, only while the claim loop turns."""
        interval = self.notifier.watchdog_interval()
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            assert self.engine is not None
            if time.monotonic() - self.engine.heartbeat < 2 * interval + 5.0:
                self.notifier.watchdog()
            else:
                log.error("watchdog_withheld", stalled_for=time.monotonic() - self.engine.heartbeat)

    async def _report(self) -> None:
        """The periodic summary line (as the old cron printed) and STATUS=."""
        while True:
            await asyncio.sleep(min(self.settings.log.summary_interval_seconds, 5.0))
            self.notifier.status(self.status_line())
            if time.monotonic() - self._summary.at >= self.settings.log.summary_interval_seconds:
                await self._log_summary()

    async def _log_summary(self) -> None:
        assert self.engine is not None and self.pool is not None
        stats, prev = self.engine.stats, self._summary
        elapsed = time.monotonic() - prev.at
        depth: int | None = None
        try:
            async with self.pool.acquire() as conn:
                depth = await conn.fetchval(queries["pending_count"])
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass
        done, failed = stats.succeeded - prev.succeeded, stats.failed - prev.failed
        requests = stats.requests - prev.requests
        log.info(
            "summary",
            processados=done,
            erros=failed,
            requisicoes=requests,
            taxa_por_minuto=round(requests * 60 / elapsed, 1) if elapsed else 0.0,
            fila=depth,
            em_andamento=self.engine.in_flight,
            contas_pausadas=[a.name for a in self.engine.accounts.values() if a.paused_for()],
            banco_ok=self.engine.db_ok,
        )
        self._summary = Summary(
            succeeded=stats.succeeded, failed=stats.failed, requests=stats.requests
        )

    def status_line(self) -> str:
        if self.engine is None:
            return "starting"
        s = self.engine.stats
        paused = [a.name for a in self.engine.accounts.values() if a.paused_for()]
        parts = [
            f"processados {s.succeeded}",
            f"erros {s.failed}",
            f"requisições {s.requests}",
            f"em andamento {self.engine.in_flight}",
        ]
        if paused:
            parts.append("PAUSADA: " + ", ".join(paused))
        if not self.engine.db_ok:
            parts.append("banco INACESSÍVEL")
        if self.reloads.last_ok is False:
            parts.append("último reload FALHOU")
        return "; ".join(parts)

    def _totals(self) -> dict[str, int]:
        assert self.engine is not None
        s = self.engine.stats
        return {"processados": s.succeeded, "erros": s.failed, "requisicoes": s.requests}

    async def _start_admin(self) -> None:
        """The admin HTTP endpoint, when the module that provides it is present."""
        try:
            from crmd.admin import server as admin
        except ImportError:
            return
        self.admin = await admin.start_for_daemon(self)


class _SchemaOutdated(Exception):
    pass


def default_actions(daemon: Daemon) -> dict[str, tuple[str, Action]]:
    """The cleanup and full-sync timers, bound to the daemon's current settings."""
    from crmd import ops

    schedule = daemon.settings.schedule

    async def cleanup(conn: asyncpg.Connection) -> str:
        result = await ops.cleanup(conn, daemon.settings.cleanup)
        return str(result)

    async def full_sync(conn: asyncpg.Connection) -> str:
        totals = []
        for entidade in daemon.settings.schedule.full_sync_entities:
            res = await ops.enqueue_entities(
                conn,
                entidade,
                lojas=None,
                since_days=None,
                priority=daemon.settings.schedule.full_sync_priority,
            )
            totals.append(f"{entidade} {res.total}")
        return "enfileirado: " + ", ".join(totals)

    return {"cleanup": (schedule.cleanup, cleanup), "full_sync": (schedule.full_sync, full_sync)}


def _same_connection(a: Account, b: Account) -> bool:
    """Whether an account's provider and session can stay as they are across a reload."""
    keys = (
        "venda_situacao_id",  # read by the provider when it is built
        "provider",
        "base_url",
        "access_token",
        "secret_access_token",
        "timeout_seconds",
        "connect_timeout_seconds",
    )
    return all(getattr(a.settings, k) == getattr(b.settings, k) for k in keys)


def _secret_changes(old: Settings, new: Settings) -> list[str]:
    """Names (never values) of CRM secrets that changed."""
    out = []
    for name in ("access_token", "secret_access_token"):
        if getattr(old.crm, name) != getattr(new.crm, name):
            out.append(name)
    return out


def _epoch(monotonic_times: list[float]) -> list[float]:
    """Limiter grant times (monotonic) as epoch seconds, for another limiter's preload."""
    offset = time.time() - time.monotonic()
    return [t + offset for t in monotonic_times]


async def _close_later(accounts: dict[str, Account], delay: float) -> None:
    if not accounts:
        return
    await asyncio.sleep(delay)
    await close_accounts(accounts)


async def _close_pool_later(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), 60)
    except TimeoutError:
        pool.terminate()


def main(config_path: str | None, settings: Settings) -> int:
    """Run the daemon on uvloop until it is told to stop; returns the exit code."""
    faulthandler.enable()  # a watchdog kill (SIGABRT) leaves the stuck stack in the journal

    async def go() -> int:
        try:
            return await Daemon(config_path, settings).run()
        except db.DatabaseUnavailable as exc:
            log.error("database_unreachable", error=str(exc))
            return EX_UNAVAILABLE

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(go())
