"""Admin HTTP inside the daemon: health, metrics, status, the sync and retry API, the dashboard.

Read-only endpoints are open (they listen on 127.0.0.1 by default); endpoints that change the
queue need `Authorization: Bearer <[admin] token>`, and are switched off (403) while no token is
configured. Errors are JSON with a message for a person and nothing else: no stack trace, no
secret, no SQL.

    GET  /healthz            the process answers
    GET  /readyz             the database answers and the daemon is not shutting down (else 503)
    GET  /metrics            Prometheus text format
    GET  /api/status         the JSON of `crmd status --json`, with accounts and timers
    POST /api/sync/{ent}     `crmd enqueue`: {"lojas": [1], "since_days": 30, "priority": 3}
    POST /api/retry          `crmd retry`: {"ids": [..]} | {"entidade": ".."} | {"all_failed": true}
    GET  /                   the dashboard
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from crmd import ops
from crmd.admin.metrics import Metrics, Reloads
from crmd.admin.web import asset, render_page
from crmd.config import Settings
from crmd.crm.accounts import Account
from crmd.engine.loop import Stats
from crmd.service.timers import TimerInfo, for_display

if TYPE_CHECKING:
    from crmd.service.daemon import Daemon

__all__ = ["AdminContext", "AdminServer", "TimerInfo", "start_admin", "start_for_daemon"]

log = structlog.get_logger("crmd.admin")

DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)
SYNC_KEYS = frozenset({"lojas", "since_days", "priority"})
RETRY_KEYS = frozenset({"ids", "entidade", "all_failed"})
CHANGES_DISABLED = (
    "changing endpoints are disabled: set [admin] token or [admin] token_file in the "
    "configuration (or CRMD_ADMIN__TOKEN) and reload"
)


async def _no_timers() -> list[TimerInfo]:
    return []


@dataclass
class AdminContext:
    """What the endpoints read, as callables so a reload's new settings and accounts show at once.

    `pool` is a callable too: a reload that changes [database] swaps the daemon's pool.
    """

    pool: Callable[[], asyncpg.Pool]
    settings: Callable[[], Settings]
    accounts: Callable[[], Mapping[str, Account]]
    stats: Callable[[], Stats | None]
    ready: Callable[[], bool]
    reloads: Reloads
    timers: Callable[[], Awaitable[list[TimerInfo]]] = _no_timers


CONTEXT = web.AppKey("context", AdminContext)
METRICS = web.AppKey("metrics", Metrics)


class AdminServer:
    def __init__(self, runner: web.AppRunner, metrics: Metrics) -> None:
        self._runner = runner
        self._metrics = metrics

    @property
    def url(self) -> str:
        """Where it listens (the real port when asked for port 0)."""
        host, port = self._runner.addresses[0][:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    async def stop(self) -> None:
        self._metrics.uninstall()
        await self._runner.cleanup()


def build_app(ctx: AdminContext) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024)
    metrics = Metrics(ctx)
    app[CONTEXT] = ctx
    app[METRICS] = metrics
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/api/status", api_status)
    app.router.add_post("/api/sync/{entidade}", api_sync)
    app.router.add_post("/api/retry", api_retry)
    app.router.add_get("/", dashboard)
    app.router.add_get("/static/{name}", static)
    app.on_response_prepare.append(_headers)
    return app


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


async def start_admin(ctx: AdminContext, listen: str) -> AdminServer | None:
    """Serve on `listen` (HOST:PORT; "" switches the endpoint off and returns None).

    Raises OSError when the address cannot be bound (in use, not local).
    """
    if not listen:
        return None
    app = build_app(ctx)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = _split_listen(listen)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    metrics = app[METRICS]
    metrics.install()
    server = AdminServer(runner, metrics)
    log.info("admin_listening", url=server.url)
    return server


async def start_for_daemon(daemon: Daemon) -> AdminServer | None:
    """The daemon's admin endpoint. A port that cannot be bound is logged, not fatal: syncing
    matters more than the dashboard."""

    def pool() -> asyncpg.Pool:
        assert daemon.pool is not None
        return daemon.pool

    def ready() -> bool:
        return not daemon.stopping and daemon.engine is not None and daemon.engine.db_ok

    ctx = AdminContext(
        pool=pool,
        settings=lambda: daemon.settings,
        accounts=lambda: daemon.engine.accounts if daemon.engine else {},
        stats=lambda: daemon.engine.stats if daemon.engine else None,
        ready=ready,
        reloads=daemon.reloads,
        timers=daemon.timers.info if daemon.timers else _no_timers,
    )
    listen = daemon.settings.admin.listen
    try:
        return await start_admin(ctx, listen)
    except OSError as exc:
        log.error("admin_listen_failed", listen=listen, error=str(exc) or type(exc).__name__)
        return None


# --- plumbing ---------------------------------------------------------------------------------


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure becomes a short JSON message; the details go to the log only."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except ops.InvalidRequest as exc:
        return _error(400, str(exc))
    except DB_ERRORS as exc:
        log.error("admin_database_error", path=request.path, error=str(exc) or type(exc).__name__)
        return _error(503, "database unavailable; see the daemon's log")
    except Exception:
        log.exception("admin_error", path=request.path, method=request.method)
        return _error(500, "internal error; see the daemon's log")


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "crmd"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    if response.content_type == "text/html":
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
        )


def _authorize(request: web.Request) -> web.Response | None:
    """None when the request carries the configured token; else the response to send."""
    token = request.app[CONTEXT].settings().admin.token
    if token is None:
        return _error(403, CHANGES_DISABLED)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        return _error(
            401,
            "missing or wrong admin token (Authorization: Bearer <token>)",
            **{"WWW-Authenticate": 'Bearer realm="crmd"'},
        )
    return None


async def _json_body(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    """The request's JSON object (empty body: {}); unknown keys are named and refused."""
    raw = await request.text()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ops.InvalidRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ops.InvalidRequest("the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ops.InvalidRequest(
            f"unknown field {', '.join(unknown)}; expected {', '.join(sorted(allowed))}"
        )
    return body


def _int_list(name: str, value: object) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ops.InvalidRequest(f"{name} must be a list of integers, not {value!r}")
    return value


# --- endpoints --------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    if not ctx.ready():
        return web.json_response({"ready": False, "reason": "not ready"}, status=503)
    try:
        async with ctx.pool().acquire(timeout=2) as conn:
            await conn.fetchval(ops.ops["ping"], timeout=2)
    except (*DB_ERRORS, asyncpg.PostgresError):
        return web.json_response({"ready": False, "reason": "database unavailable"}, status=503)
    return web.json_response({"ready": True})


async def metrics_endpoint(request: web.Request) -> web.Response:
    ctx, metrics = request.app[CONTEXT], request.app[METRICS]
    await metrics.refresh(ctx.pool())
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def full_status(ctx: AdminContext) -> dict[str, Any]:
    """`crmd status --json`, plus what only the daemon knows: accounts, timers, reloads."""
    async with ctx.pool().acquire() as conn:
        report = await ops.status(conn, ops.accounts_info(ctx.accounts()))
    try:
        timers = await ctx.timers()
    except DB_ERRORS:
        timers = []
    report["timers"] = [
        {
            "name": t.name,
            "cron": t.cron,
            "last_run": t.last_run.isoformat() if t.last_run else None,
            "next_run": t.next_run.isoformat(),
        }
        for t in timers
    ]
    stats = ctx.stats()
    report["daemon"] = {
        "ready": ctx.ready(),
        "reloads": {
            "count": ctx.reloads.count,
            "last_ok": ctx.reloads.last_ok,
            "last_at": ctx.reloads.last_at,
        },
        "stats": None
        if stats is None
        else {
            "succeeded": stats.succeeded,
            "failed": stats.failed,
            "retried": stats.retried,
            "released": stats.released,
            "requests": stats.requests,
        },
        "token_configured": ctx.settings().admin.token is not None,
    }
    return report


async def api_status(request: web.Request) -> web.Response:
    report = await full_status(request.app[CONTEXT])
    return web.json_response(report, dumps=_dumps)


async def api_sync(request: web.Request) -> web.Response:
    denied = _authorize(request)
    if denied is not None:
        return denied
    entidade = ops.check_entity(request.match_info["entidade"])
    body = await _json_body(request, SYNC_KEYS)
    async with request.app[CONTEXT].pool().acquire() as conn:
        result = await ops.enqueue_entities(
            conn,
            entidade,
            lojas=_int_list("lojas", body.get("lojas")),
            since_days=body.get("since_days"),
            priority=body.get("priority"),
        )
    log.info("admin_sync", entidade=entidade, total=result.total, created=result.created)
    return web.json_response(result.as_dict())


async def api_retry(request: web.Request) -> web.Response:
    denied = _authorize(request)
    if denied is not None:
        return denied
    body = await _json_body(request, RETRY_KEYS)
    all_failed = body.get("all_failed", False)
    if not isinstance(all_failed, bool):
        raise ops.InvalidRequest(f"all_failed must be true or false, not {all_failed!r}")
    entidade = body.get("entidade")
    if entidade is not None and not isinstance(entidade, str):
        raise ops.InvalidRequest(f"entidade must be a string, not {entidade!r}")
    async with request.app[CONTEXT].pool().acquire() as conn:
        count = await ops.retry(
            conn, ids=_int_list("ids", body.get("ids")), entidade=entidade, all_failed=all_failed
        )
    return web.json_response({"retried": count})


async def dashboard(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    try:
        report: dict[str, Any] | None = await full_status(ctx)
    except DB_ERRORS:
        report = None
    return web.Response(text=render_page(report), content_type="text/html")


async def static(request: web.Request) -> web.Response:
    found = asset(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    body, content_type = found
    return web.Response(body=body, content_type=content_type, charset="utf-8")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# --- standalone -------------------------------------------------------------------------------


async def _serve_standalone(config: str | None) -> int:
    """The admin endpoint without the sync engine, for manual checks (accounts idle)."""
    from crmd.cli import EX_CONFIG, print_config_error
    from crmd.config import ConfigError, load_settings
    from crmd.crm.accounts import build_accounts, close_accounts
    from crmd.service.daemon import ReloadInfo
    from crmd.store import db

    try:
        settings, _ = load_settings(config)
    except ConfigError as exc:
        print_config_error(exc)
        return EX_CONFIG
    pool = await db.create_pool(settings.database)
    accounts = build_accounts(settings)
    timers = for_display(pool, settings.schedule)
    ctx = AdminContext(
        pool=lambda: pool,
        settings=lambda: settings,
        accounts=lambda: accounts,
        stats=lambda: None,
        ready=lambda: True,
        reloads=ReloadInfo(),
        timers=timers.info,
    )
    server = await start_admin(ctx, settings.admin.listen or "127.0.0.1:9464")
    assert server is not None
    print(f"crmd admin (standalone) on {server.url}; Ctrl-C stops")
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
        await close_accounts(accounts)
        await pool.close()
    return 0


def main() -> None:
    from crmd.cli import run_async
    from crmd.service.logs import configure

    parser = argparse.ArgumentParser(
        prog="python -m crmd.admin",
        description="Serve the admin endpoint and dashboard without syncing (for manual checks); "
        "`crmd run` serves the same endpoint itself.",
    )
    parser.add_argument("--config", metavar="PATH", help="configuration file")
    args = parser.parse_args()
    configure("info", "console")
    try:
        raise SystemExit(run_async(_serve_standalone(args.config)))
    except KeyboardInterrupt:
        raise SystemExit(0) from None


if __name__ == "__main__":
    main()
