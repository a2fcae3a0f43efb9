"""GestãoClick's answers read: the envelope's `data`, or the CrmError its status and body mean.

Validation failures come back as HTTP 404 with `data.erro`, told apart from a missing record by
that body, not by the status; an empty 2xx body (`DELETE /produtos/{id}`) is a success; an empty
list may come back as the string "Não há dados!", so a list's type is checked before reading it.
"""

from __future__ import annotations

from typing import Any

from crmd.crm.errors import CrmError, ErrorKind
from crmd.crm.transport import Response

JsonObject = dict[str, Any]


def data(resp: Response) -> Any:
    """The envelope's `data` (None for an empty body), or the CrmError the answer stands for."""
    status, body = resp.status, resp.body
    if 200 <= status < 300:
        if isinstance(body, str) and not body.strip():
            return None
        if not isinstance(body, dict):
            raise CrmError(
                ErrorKind.RETRYABLE, f"resposta não é JSON: {message(body)}", http_status=status
            )
        if body.get("status") == "error":
            raise CrmError(ErrorKind.PERMANENT, message(body), http_status=status)
        return body.get("data")
    text = message(body)
    if status in (401, 403):
        raise CrmError(ErrorKind.AUTH, text, http_status=status)
    if status == 429:
        raise CrmError(
            ErrorKind.RATE_LIMITED,
            text,
            http_status=status,
            retry_after=retry_after(resp.headers.get("Retry-After")),
        )
    if status == 404:
        inner = body.get("data") if isinstance(body, dict) else None
        refused = isinstance(inner, dict) and "erro" in inner
        raise CrmError(
            ErrorKind.PERMANENT if refused else ErrorKind.NOT_FOUND, text, http_status=status
        )
    if status == 408 or status >= 500:
        raise CrmError(ErrorKind.RETRYABLE, text, http_status=status)
    raise CrmError(ErrorKind.PERMANENT, text, http_status=status)


def page(resp: Response) -> tuple[list[JsonObject], int | None]:
    """A list page's records and the number of the next page (None on the last one)."""
    records = data(resp)
    meta = resp.body.get("meta") if isinstance(resp.body, dict) else None
    following = meta.get("proxima_pagina") if isinstance(meta, dict) else None
    rows = [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []
    try:
        return rows, int(following) if following not in (None, "") else None
    except (TypeError, ValueError):
        return rows, None


def message(body: Any) -> str:
    if isinstance(body, dict):
        inner = body.get("data")
        if isinstance(inner, dict) and inner.get("mensagem"):
            return str(inner["mensagem"])
        if isinstance(body.get("mensagem"), str):
            return str(body["mensagem"])
    text = body if isinstance(body, str) else repr(body)
    return text[:300]


def retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None  # an HTTP date: rare enough to fall back to our own pause
