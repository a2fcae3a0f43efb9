"""The development CRM: GestãoClick's API on loopback, with its limits, a ledger and faults.

Each API request is judged once, at arrival, in this order, and then answered after the injected
latency (so decisions and the ledger use arrival times, as the real CRM's limiter does):

1. dropped connection (`drop_rate`): closed without an answer;
2. outage: 503;
3. authentication (`access-token`, `secret-access-token`; or the `auth_fail` fault): 401;
4. burst (`burst_429`): 429;
5. rate limits: 429 when any sliding window is full;
6. injected errors (`error_rate`): 500, 502 (an HTML page, as from a proxy) or 503;
7. the resource itself (`crmd.dev.devcrm.api`).

Steps 1-5 do not use up rate-limit budget; from step 5 on the request counts (see
`LedgerEntry.counted`). So injected errors happen after authentication and the limits, as a
failing backend behind the CRM's gateway would. Control endpoints under `/_dev/` skip all of this
and stay out of the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import pydantic
from aiohttp import web
from aiohttp.typedefs import Handler

from crmd.dev.devcrm import envelope
from crmd.dev.devcrm.api import CREATED_ID, Api, json_response
from crmd.dev.devcrm.faults import Faults, FaultsUpdate
from crmd.dev.devcrm.ledger import LedgerEntry
from crmd.dev.devcrm.limits import DEFAULT_LIMITS, Limit, SlidingWindows, check_limits
from crmd.dev.devcrm.store import LOJAS, RESOURCES, SITUACOES, Store

_BAD_GATEWAY_PAGE = "<html><body><h1>502 Bad Gateway</h1></body></html>"


@dataclass(frozen=True)
class DevCrmConfig:
    """How the server starts; `reset` returns the faults to these values."""

    access_token: str = "dev-access-token"  # noqa: S105 - a development default
    secret_access_token: str = "dev-secret-access-token"  # noqa: S105 - a development default
    limits: tuple[Limit, ...] = DEFAULT_LIMITS
    """(requests, per_seconds) sliding windows, all enforced at once; () for none."""
    latency: float = 0.0
    error_rate: float = 0.0
    drop_rate: float = 0.0
    retry_after: float | None = None
    """Seconds to put in a Retry-After header on 429s; None sends none (GestãoClick sends none)."""
    empty_list_as_string: bool = True
    """Answer an empty list with `"data": "Não há dados!"`, as GestãoClick does; False: `[]`."""
    seed: int | None = None
    """Seed for the random choices of error_rate and drop_rate, for repeatable runs."""
    loose_filters: bool = False
    """List filters match by substring (see `Faults.loose_filters`)."""
    situacoes: tuple[tuple[str, str, str], ...] = SITUACOES
    """The account's situações de venda: (id, nome, tipo_lancamento)."""
    lojas: tuple[tuple[str, str], ...] = LOJAS
    """The company's lojas: (id, nome), the matriz first."""
    other_tokens: tuple[tuple[str, str], ...] = ()
    """More (access-token, secret-access-token) pairs accepted: other companies' accounts."""
    limits_per_token: bool = False
    """Count the limits per access token (per company, as GestãoClick does), not for all."""
    existing_vendas: int = 0
    """Vendas the account already holds at start (and after a reset), numbered 1..N by it, of
    a cliente of its own: what a lookup by `codigo` can wrongly find on a real account."""
    state_file: str | None = None
    """A JSON file the records are kept in across restarts (read at start, written shortly
    after every change and at stop), so a crmd that remembers their ids still finds them."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "limits", check_limits(self.limits))
        self.initial_faults()  # validates the fault fields
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after must be >= 0 seconds")
        if self.existing_vendas < 0:
            raise ValueError("existing_vendas must be >= 0")
        if not self.situacoes or not self.lojas:
            raise ValueError("the account needs at least one situação and one loja")

    def initial_faults(self) -> Faults:
        faults = Faults()
        FaultsUpdate(
            latency=self.latency,
            error_rate=self.error_rate,
            drop_rate=self.drop_rate,
            empty_list_as_string=self.empty_list_as_string,
            loose_filters=self.loose_filters,
        ).apply(faults, time.monotonic())
        return faults


def token_id(access_token: str) -> str:
    """Which account sent a request, without keeping its secret: a short digest of the token."""
    return hashlib.sha256(access_token.encode()).hexdigest()[:12]


class _Verdict(NamedTuple):
    """What the edge decided at arrival: an answer of its own, or None to let the API answer."""

    answer: web.Response | None
    counted: bool
    fault: str | None = None


class DevCrm:
    """The server and its state, for `async with` in tests, benchmarks and the CLI."""

    def __init__(
        self, config: DevCrmConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or DevCrmConfig()
        self.host = host
        self.port = port
        self.store = Store(self.config.situacoes, self.config.lojas, self.config.existing_vendas)
        self.faults = self.config.initial_faults()
        self._ledger: list[LedgerEntry] = []
        self._limiter = SlidingWindows(self.config.limits)
        self._limiters: dict[str, SlidingWindows] = {}  # per access token, when asked to
        self._tokens = {self.config.access_token: self.config.secret_access_token}
        self._tokens.update(dict(self.config.other_tokens))
        self._random = random.Random(self.config.seed)
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._dirty = False
        self._saver: asyncio.Task[None] | None = None
        if self.config.state_file and Path(self.config.state_file).exists():
            state = json.loads(Path(self.config.state_file).read_text(encoding="utf-8"))
            self.store.restore(state)
        self.app = self._make_app()

    # --- in-process API -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """`http://host:port` with the real port, once started."""
        if self._url is None:
            raise RuntimeError("DevCrm is not started")
        return self._url

    @property
    def ledger(self) -> list[LedgerEntry]:
        """A copy of the ledger, oldest answer first."""
        return list(self._ledger)

    def records(self, resource: str) -> list[dict[str, Any]]:
        """Every stored record of `resource` (clientes, produtos, vendas) of every loja, as the
        API shows it."""
        if resource not in RESOURCES:
            raise ValueError(f"unknown resource {resource!r}; expected one of {RESOURCES}")
        return self.store.all(resource)

    def set_faults(self, **changes: Any) -> Faults:
        """Change some faults (the fields of `FaultsUpdate`); pydantic.ValidationError if bad."""
        FaultsUpdate(**changes).apply(self.faults, time.monotonic())
        return self.faults

    def reset(self) -> None:
        """Forget records (the account's own vendas come back), ledger and limit counters;
        faults go back to the configured ones."""
        self.store.clear()
        self._dirty = True
        self._ledger.clear()
        self._limiter.clear()
        self._limiters.clear()
        initial = self.config.initial_faults()
        for field in dataclasses.fields(Faults):
            setattr(self.faults, field.name, getattr(initial, field.name))

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        if self.config.state_file:
            self._saver = asyncio.create_task(self._save_changes())

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
            self._saver = None
            self.save()

    def save(self) -> None:
        """Write the records to `state_file` (atomically: a crash leaves the old file)."""
        if not self.config.state_file:
            return
        path = Path(self.config.state_file)
        part = path.with_suffix(path.suffix + ".part")
        part.write_text(json.dumps(self.store.dump(), ensure_ascii=False), encoding="utf-8")
        os.replace(part, path)
        self._dirty = False

    async def _save_changes(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self._dirty:
                self.save()

    async def __aenter__(self) -> DevCrm:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- the edge: ledger, faults, auth, limits -----------------------------------------------

    def _make_app(self) -> web.Application:
        @web.middleware
        async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._edge(request, handler)

        app = web.Application(middlewares=[edge])
        Api(self.store, lambda: self.faults).add_routes(app.router)
        app.router.add_get("/_dev/health", self._health)
        app.router.add_get("/_dev/ledger", self._get_ledger)
        app.router.add_get("/_dev/faults", self._get_faults)
        app.router.add_post("/_dev/faults", self._post_faults)
        app.router.add_post("/_dev/reset", self._reset)
        app.router.add_get("/_dev/records/{resource}", self._records)
        return app

    async def _edge(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_dev/"):
            return await handler(request)
        wall, arrival = time.time(), time.monotonic()
        verdict = self._judge(request, arrival)
        status: int | None = None
        CREATED_ID.set(None)
        try:
            if self.faults.latency > 0:
                await asyncio.sleep(self.faults.latency)
            if verdict.fault == "drop":
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=499)  # never sent: the connection is gone
            response = verdict.answer if verdict.answer is not None else await handler(request)
            status = response.status
            if request.method in ("POST", "PUT", "DELETE") and status < 300:
                self._dirty = True
            return response
        except web.HTTPException as exc:  # aiohttp's own 404/405 for unknown routes
            status = exc.status
            raise
        finally:
            self._ledger.append(
                LedgerEntry(
                    index=len(self._ledger),
                    wall=wall,
                    monotonic=arrival,
                    method=request.method,
                    path=request.path,
                    query=request.query_string,
                    status=status,
                    counted=verdict.counted,
                    created_id=CREATED_ID.get() if status == 200 else None,
                    fault=verdict.fault,
                    token=token_id(request.headers.get("access-token", "")),
                )
            )

    def _judge(self, request: web.Request, now: float) -> _Verdict:
        """Decide, without waiting, whether the edge answers this request itself (see above)."""
        faults = self.faults
        if faults.drop_rate and self._random.random() < faults.drop_rate:
            return _Verdict(None, counted=False, fault="drop")
        if faults.in_outage(now):
            body = envelope.error(503, "Serviço temporariamente indisponível")
            return _Verdict(json_response(body), counted=False, fault="outage")
        if faults.auth_fail or not self._authorized(request):
            body = envelope.error(401, envelope.UNAUTHORIZED_MESSAGE)
            return _Verdict(json_response(body), False, "auth" if faults.auth_fail else None)
        if faults.burst_429 > 0:
            faults.burst_429 -= 1
            return _Verdict(self._too_many(), counted=False, fault="burst")
        if not self._limiter_for(request).admit(now):
            return _Verdict(self._too_many(), counted=False)
        if faults.error_rate and self._random.random() < faults.error_rate:
            return _Verdict(self._injected_error(), counted=True, fault="error")
        return _Verdict(None, counted=True)

    def _authorized(self, request: web.Request) -> bool:
        headers = request.headers
        secret = self._tokens.get(headers.get("access-token", ""))
        return secret is not None and headers.get("secret-access-token") == secret

    def _limiter_for(self, request: web.Request) -> SlidingWindows:
        if not self.config.limits_per_token:
            return self._limiter
        token = request.headers.get("access-token", "")
        if token not in self._limiters:
            self._limiters[token] = SlidingWindows(self.config.limits)
        return self._limiters[token]

    def _too_many(self) -> web.Response:
        headers = None
        if self.config.retry_after is not None:
            headers = {"Retry-After": str(math.ceil(self.config.retry_after))}
        return json_response(envelope.error(429, envelope.RATE_LIMIT_MESSAGE), headers=headers)

    def _injected_error(self) -> web.Response:
        status = self._random.choice((500, 502, 503))
        if status == 502:
            return web.Response(status=502, text=_BAD_GATEWAY_PAGE, content_type="text/html")
        message = "Erro interno do servidor" if status == 500 else "Serviço indisponível"
        return json_response(envelope.error(status, message))

    # --- control endpoints --------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok", "requests": len(self._ledger)}, status=200)

    async def _get_ledger(self, request: web.Request) -> web.Response:
        since = request.query.get("since", "0")
        if not since.isdigit():
            return json_response({"error": "since must be a ledger index (>= 0)"}, status=400)
        entries = [e.to_json() for e in self._ledger[int(since) :]]
        return json_response(entries, status=200)

    async def _get_faults(self, request: web.Request) -> web.Response:
        return json_response(self.faults.to_json(time.monotonic()), status=200)

    async def _post_faults(self, request: web.Request) -> web.Response:
        try:
            update = FaultsUpdate.model_validate_json(await request.read())
        except pydantic.ValidationError as exc:
            problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            return json_response({"error": "invalid faults", "problems": problems}, status=400)
        update.apply(self.faults, time.monotonic())
        return await self._get_faults(request)

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return json_response({"status": "reset"}, status=200)

    async def _records(self, request: web.Request) -> web.Response:
        resource = request.match_info["resource"]
        if resource not in RESOURCES:
            return json_response({"error": f"unknown resource {resource!r}"}, status=404)
        return json_response(self.records(resource), status=200)
