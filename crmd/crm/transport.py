"""HTTP to one CRM account: a keep-alive session, its rate limiter, and network errors named.

Every request waits for the account's limiter first, so no caller can bypass the budget. The
transport knows nothing of the CRM's resources or of the queue: providers build on it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from crmd import __version__
from crmd.config import CrmAccountSettings
from crmd.crm.errors import CrmError, ErrorKind
from crmd.crm.limiter import RateLimiter

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
            async with self.limiter.slot(bulk=count.bulk) as waited:
                granted = True
                count.queued -= 1
                count.sent += 1
                return await self._send(session, method, path, body, params, count, waited)
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
        waited: float,
    ) -> Response:
        status: int | None = None
        start = time.perf_counter()
        try:
            async with session.request(
                method, self.base_url + path, json=body, params=params
            ) as resp:
                text = await resp.text()
                status = resp.status
                count.statuses.append(resp.status)
                return Response(resp.status, _parse(text), resp.headers)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            reason = str(exc) or type(exc).__name__  # no connection: the CRM got nothing
            raise CrmError(
                ErrorKind.RETRYABLE, f"{method} {path}: {reason}", delivered=False
            ) from None
        except TimeoutError:
            raise CrmError(
                ErrorKind.RETRYABLE,
                f"{method} {path}: no answer within {self._timeout.total} s",
                delivered=True,
            ) from None
        except aiohttp.ClientError as exc:
            reason = str(exc) or type(exc).__name__
            raise CrmError(
                ErrorKind.RETRYABLE, f"{method} {path}: {reason}", delivered=True
            ) from None
        finally:
            event = RequestEvent(
                self.name, method, path, status, time.perf_counter() - start, waited
            )
            for observe in observers:
                observe(event)


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
