"""HTTP to one CRM account: a keep-alive session, its rate limiter, and network errors named.

Every request waits for the account's limiter first, so no caller can bypass the budget. The
transport knows nothing of the CRM's resources or of the queue: providers build on it. It keeps
each request and its answer for the attempt's log row (`RequestCount.exchanges`): bodies capped
at BODY_MAX_CHARS, secrets masked, headers (where the tokens travel) never kept.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from crmd import __version__
from crmd.config import CrmAccountSettings
from crmd.crm.errors import CrmError, ErrorKind
from crmd.crm.limiter import Held, RateLimiter
from crmd.model import Exchange

USER_AGENT = f"crmd/{__version__} (ERP-CRM sync daemon)"


@dataclass
class Response:
    status: int
    body: Any  # parsed JSON, or the text when the body was not JSON
    headers: Mapping[str, str]


@dataclass(frozen=True)
class RequestEvent:
    """One finished request, for observers such as metrics (status None: no answer)."""

    account: str
    method: str
    path: str
    status: int | None
    seconds: float
    waited: float  # time spent waiting for the rate limiter first


Observer = Callable[[RequestEvent], None]
observers: list[Observer] = []  # called for every request of every account


@dataclass
class RequestCount:
    """Requests sent on behalf of one queue item; set per task with `counting()`."""

    sent: int = 0
    statuses: list[int] = field(default_factory=list)
    queued: int = 0  # requests in the rate limiter's queue, not yet granted
    bulk: bool = False  # bulk work (the full sync): only its share of the shared budget
    exchanges: list[Exchange] = field(default_factory=list)  # what was sent and answered
    # Called once, when the first request is let out by the limiter (the item's attempt is
    # spent then, not while it waits for its turn).
    on_first_send: Callable[[], None] | None = None


_current: ContextVar[RequestCount | None] = ContextVar("crmd_request_count", default=None)


def counting() -> RequestCount:
    """Count the requests this task sends from now on (each item runs in its own task)."""
    count = RequestCount()
    _current.set(count)
    return count


class Transport:
    def __init__(
        self,
        name: str,
        settings: CrmAccountSettings,
        limiter: RateLimiter,
        headers: Mapping[str, str],
    ) -> None:
        self.name = name
        self.base_url = settings.base_url
        self.limiter = limiter
        self._timeout = aiohttp.ClientTimeout(
            total=settings.timeout_seconds, connect=settings.connect_timeout_seconds
        )
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **headers}
        self._concurrency = settings.concurrency
        self._session: aiohttp.ClientSession | None = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._concurrency * 2, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers=self._headers,
                raise_for_status=False,
            )
            # aiohttp sends an idempotent request (GET, PUT, DELETE) a second time, on its own,
            # when a reused connection breaks: the CRM may have counted the first one, and the
            # second would go out without a grant. Every request on the wire holds its own
            # grant, so a failure is ours to retry. (aiohttp's own test client does the same.)
            self._session._retry_connection = False
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Response:
        """Send one request under the account's limits; network failures become CrmError."""
        session = self._ensure_session()
        count = _current.get() or RequestCount()
        count.queued += 1
        granted = False
        try:
            async with self.limiter.slot(bulk=count.bulk) as held:
                granted = True
                count.queued -= 1
                if not count.sent and count.on_first_send is not None:
                    count.on_first_send()
                count.sent += 1
                return await self._send(session, method, path, body, params, count, held)
        finally:
            if not granted:  # cancelled (or failed) while waiting for the limiter
                count.queued -= 1

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        body: Any,
        params: Mapping[str, str] | None,
        count: RequestCount,
        held: Held,
    ) -> Response:
        status: int | None = None
        received: str | None = None
        start = time.perf_counter()
        try:
            async with session.request(
                method, self.base_url + path, json=body, params=params
            ) as resp:
                held.answered()  # the status line came: the CRM had the request
                text = await resp.text()
                status = resp.status
                count.statuses.append(resp.status)
                received = text
                return Response(resp.status, _parse(text), resp.headers)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            reason = str(exc) or type(exc).__name__  # no connection: the CRM got nothing
            received = f"(sem conexão: {reason})"
            raise CrmError(
                ErrorKind.RETRYABLE, f"{method} {path}: {reason}", delivered=False
            ) from None
        except TimeoutError:
            received = f"(sem resposta em {self._timeout.total} s)"
            raise CrmError(
                ErrorKind.RETRYABLE,
                f"{method} {path}: sem resposta em {self._timeout.total} s",
                delivered=True,
            ) from None
        except aiohttp.ClientError as exc:
            reason = str(exc) or type(exc).__name__
            received = f"(conexão interrompida: {reason})"
            raise CrmError(
                ErrorKind.RETRYABLE, f"{method} {path}: {reason}", delivered=True
            ) from None
        finally:
            seconds = time.perf_counter() - start
            count.exchanges.append(exchange(method, path, params, status, seconds, body, received))
            event = RequestEvent(self.name, method, path, status, seconds, held.waited)
            for observe in observers:
                observe(event)


BODY_MAX_CHARS = 4000
"""Longest body kept in the log, each way: a venda's payload fits; a megabyte of error page
does not fill the log."""
_SECRET_WORDS = ("token", "secret", "senha", "password", "passwd", "authorization")
_SECRET_NAME = re.compile("|".join(_SECRET_WORDS), re.I)
_SECRET_TEXT = re.compile(
    r'("(?:[^"]*(?:' + "|".join(_SECRET_WORDS) + r')[^"]*)"\s*:\s*)"[^"]*"', re.I
)


def _may_hold_secret(text: str) -> bool:
    """Whether `text` names a secret anywhere: a tenth of the regexes' cost, so the usual body
    (which names none) skips them. casefold() matches at least what re.I does."""
    folded = text.casefold()
    return any(word in folded for word in _SECRET_WORDS)


def exchange(
    method: str,
    path: str,
    params: Mapping[str, str] | None,
    status: int | None,
    seconds: float,
    sent: Any,
    received: str | None,
) -> Exchange:
    """The log's copy of one request: secrets masked, bodies capped."""
    if params:
        shown = "&".join(f"{k}={'***' if _SECRET_NAME.search(k) else v}" for k, v in params.items())
        path = f"{path}?{shown}"
    sent_text = None if sent is None else json.dumps(sent, ensure_ascii=False)
    if sent_text is not None and _may_hold_secret(sent_text):
        sent_text = json.dumps(_masked(sent), ensure_ascii=False)
    received_text = received
    if received_text is not None and _may_hold_secret(received_text):
        received_text = _SECRET_TEXT.sub(r'\1"***"', received_text)
    return Exchange(
        method, path, status, int(seconds * 1000), _capped(sent_text), _capped(received_text)
    )


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "***" if _SECRET_NAME.search(str(k)) else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _capped(text: str | None) -> str | None:
    if text is None or len(text) <= BODY_MAX_CHARS:
        return text
    return f"{text[:BODY_MAX_CHARS]}… (+{len(text) - BODY_MAX_CHARS} caracteres)"


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
