"""Admin HTTP inside the daemon: health, metrics, status, the sync and retry API, the dashboard.

Read-only endpoints are open (they listen on 127.0.0.1 by default); endpoints that change the
queue need `Authorization: Bearer <[admin] token>`, and are switched off (403) while no token is
configured. Errors are JSON with a message for a person and nothing else: no stack trace, no
secret, no SQL.

    GET  /healthz            the process answers
    GET  /readyz             the database answers and the daemon is not shutting down (else 503)
    GET  /metrics            Prometheus text format
    GET  /api/status         the JSON of `crmd status --json`, with accounts and timers
    GET  /api/series         the last 24 h: requests per minute per account, queue depth
    GET  /api/history/{ent}/{id}         `crmd history --json`
    POST /api/history/{ent}/{id}/resend  send the record again (its failed item, or a new one)
    POST /api/sync/{ent}     `crmd enqueue`: {"lojas": [1], "since_days": 30, "priority": 3}
    POST /api/retry          `crmd retry`: {"ids": [..]} | {"entidade": ".."} | {"all_failed": true}
    GET  /                   the dashboard; GET /grafico its chart (SVG), refreshed by the page
    GET  /registro/{ent}/{id}            a record's page: its attempts and what they sent
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from crmd.admin.metrics import Metrics
from crmd.admin.web import asset, chart, render_page, render_record
from crmd.config import split_hostport
from crmd.ops import enqueue, failures
from crmd.ops import history as record_history
from crmd.ops.checks import InvalidRequest, check_entity
from crmd.ops.series import Series, series
from crmd.ops.status import StatusReport, daemon_report, report
from crmd.service.view import DaemonView, Surface
from crmd.store import reports
from crmd.store.db import DB_ERRORS

log = structlog.get_logger("crmd.admin")

SYNC_KEYS = frozenset({"lojas", "since_days", "priority"})
RETRY_KEYS = frozenset({"ids", "entidade", "all_failed"})
CHANGES_DISABLED = (
    "as ações que mudam a fila estão desligadas: defina [admin] token ou [admin] token_file "
    "na configuração (ou CRMD_ADMIN__TOKEN) e reinicie o crmd"
)

VIEW = web.AppKey("view", DaemonView)
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


def build_app(view: DaemonView) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024)
    metrics = Metrics(view)
    app[VIEW] = view
    app[METRICS] = metrics
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/api/series", api_series)
    app.router.add_get("/api/history/{entidade}/{id}", api_history)
    app.router.add_post("/api/history/{entidade}/{id}/resend", api_resend)
    app.router.add_post("/api/sync/{entidade}", api_sync)
    app.router.add_post("/api/retry", api_retry)
    app.router.add_get("/", dashboard)
    app.router.add_get("/grafico", chart_fragment)
    app.router.add_get("/registro/{entidade}/{id}", record_page)
    app.router.add_get("/static/{name}", static)
    app.on_response_prepare.append(_headers)
    return app


async def start_admin(view: DaemonView, listen: str) -> AdminServer | None:
    """Serve on `listen` (HOST:PORT; "" switches the endpoint off and returns None).

    Raises OSError when the address cannot be bound (in use, not local).
    """
    if not listen:
        return None
    app = build_app(view)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = split_hostport(listen)
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


async def start_for_daemon(view: DaemonView) -> Surface | None:
    """The daemon's admin endpoint. A port that cannot be bound is logged, not fatal: syncing
    matters more than the dashboard."""
    listen = view.settings().admin.listen
    try:
        return await start_admin(view, listen)
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
    except InvalidRequest as exc:
        return _error(400, str(exc))
    except DB_ERRORS as exc:
        log.error("admin_database_error", path=request.path, error=str(exc) or type(exc).__name__)
        return _error(503, "banco de dados indisponível; veja o log do daemon")
    except Exception:
        log.exception("admin_error", path=request.path, method=request.method)
        return _error(500, "erro interno; veja o log do daemon")


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
    token = request.app[VIEW].settings().admin.token
    if token is None:
        return _error(403, CHANGES_DISABLED)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        return _error(
            401,
            "token de administração ausente ou errado (Authorization: Bearer <token>)",
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
        raise InvalidRequest(f"o corpo não é JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("o corpo deve ser um objeto JSON")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidRequest(
            f"campo desconhecido {', '.join(unknown)}; os campos são {', '.join(sorted(allowed))}"
        )
    return body


def _int_list(name: str, value: object) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidRequest(f"{name} deve ser uma lista de inteiros, não {value!r}")
    return value


# --- endpoints --------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    view = request.app[VIEW]
    if not view.ready():
        return web.json_response({"ready": False, "reason": "não está pronto"}, status=503)
    try:
        async with asyncio.timeout(2), view.pool().acquire() as conn:
            await reports.ping(conn)
    except DB_ERRORS:
        return web.json_response(
            {"ready": False, "reason": "banco de dados indisponível"}, status=503
        )
    return web.json_response({"ready": True})


async def metrics_endpoint(request: web.Request) -> web.Response:
    view, metrics = request.app[VIEW], request.app[METRICS]
    await metrics.refresh(view.pool())
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def full_status(view: DaemonView) -> StatusReport:
    """The status report with what only the daemon knows: accounts, timers, itself."""
    try:
        timers = await view.timers()
    except DB_ERRORS:
        timers = []
    daemon = daemon_report(
        ready=view.ready(),
        reloads=view.reloads,
        stats=view.stats(),
        token_configured=view.settings().admin.token is not None,
    )
    async with view.pool().acquire() as conn:
        return await report(
            conn,
            accounts=view.accounts(),
            timers=timers,
            daemon=daemon,
            timezone=view.settings().schedule.timezone,
        )


async def api_status(request: web.Request) -> web.Response:
    status = await full_status(request.app[VIEW])
    return web.json_response(status.model_dump(mode="json"), dumps=_dumps)


async def api_sync(request: web.Request) -> web.Response:
    denied = _authorize(request)
    if denied is not None:
        return denied
    entidade = check_entity(request.match_info["entidade"])
    body = await _json_body(request, SYNC_KEYS)
    view = request.app[VIEW]
    async with view.pool().acquire() as conn:
        result = await enqueue.enqueue_entities(
            conn,
            entidade,
            view.settings().sources,
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
        raise InvalidRequest(f"all_failed deve ser true ou false, não {all_failed!r}")
    entidade = body.get("entidade")
    if entidade is not None and not isinstance(entidade, str):
        raise InvalidRequest(f"entidade deve ser um texto, não {entidade!r}")
    async with request.app[VIEW].pool().acquire() as conn:
        count = await failures.retry(
            conn, ids=_int_list("ids", body.get("ids")), entidade=entidade, all_failed=all_failed
        )
    return web.json_response({"retried": count})


async def last_day(view: DaemonView) -> Series:
    """The chart's data, with each running account's limits."""
    limits = {
        name: [(lim.requests, lim.per_seconds) for lim in account.limiter.limits]
        for name, account in view.accounts().items()
    }
    async with view.pool().acquire() as conn:
        return await series(conn, limits, timezone=view.settings().schedule.timezone)


async def api_series(request: web.Request) -> web.Response:
    data = await last_day(request.app[VIEW])
    return web.json_response(data.model_dump(mode="json"), dumps=_dumps)


def _record(request: web.Request) -> tuple[str, int]:
    entidade = check_entity(request.match_info["entidade"])
    raw = request.match_info["id"]
    if not raw.isdigit() or not 0 < int(raw) < 2**63:
        raise InvalidRequest(f"{raw!r} não é um id de registro (um número inteiro positivo)")
    return entidade, int(raw)


async def _history(request: web.Request) -> record_history.RecordHistory:
    view = request.app[VIEW]
    entidade, entidade_id = _record(request)
    settings = view.settings()
    async with view.pool().acquire() as conn:
        return await record_history.record_history(
            conn,
            entidade,
            entidade_id,
            contas=sorted(settings.crm.accounts()),
            timezone=settings.schedule.timezone,
        )


async def api_history(request: web.Request) -> web.Response:
    found = await _history(request)
    return web.json_response(found.model_dump(mode="json"), dumps=_dumps)


async def api_resend(request: web.Request) -> web.Response:
    denied = _authorize(request)
    if denied is not None:
        return denied
    entidade, entidade_id = _record(request)
    await _json_body(request, frozenset())
    async with request.app[VIEW].pool().acquire() as conn:
        message = await record_history.resend(conn, entidade, entidade_id)
    return web.json_response({"message": message})


async def record_page(request: web.Request) -> web.Response:
    return web.Response(text=render_record(await _history(request)), content_type="text/html")


async def _chart(view: DaemonView) -> str:
    try:
        return chart.render(await last_day(view))
    except DB_ERRORS:
        return '<p class="vazio">Banco de dados indisponível.</p>'


async def chart_fragment(request: web.Request) -> web.Response:
    return web.Response(text=await _chart(request.app[VIEW]), content_type="text/html")


async def dashboard(request: web.Request) -> web.Response:
    view = request.app[VIEW]
    try:
        status: StatusReport | None = await full_status(view)
    except DB_ERRORS:
        status = None
    page = render_page(status, await _chart(view) if status is not None else "")
    return web.Response(text=page, content_type="text/html")


async def static(request: web.Request) -> web.Response:
    found = asset(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    body, content_type = found
    return web.Response(body=body, content_type=content_type, charset="utf-8")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
