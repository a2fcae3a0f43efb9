"""The GestãoClick resources themselves: list, get, create, update and delete over HTTP.

Routes answer both `/clientes` and `/api/clientes`, since GestãoClick documents the first and
links to the second in `proxima_url`. The account's situações and lojas are read-only lists. Each
answer has the documented shape of its resource: the `meta` keys of a list differ between
resources, `DELETE /clientes/{id}` answers a string message in `data` and `DELETE /produtos/{id}`
an empty body. Authentication, rate limits and faults are not handled here but in front of these
handlers (`crmd.dev.devcrm.server`).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from crmd.dev.devcrm import envelope
from crmd.dev.devcrm.faults import Faults
from crmd.dev.devcrm.rules import ValidationFailed
from crmd.dev.devcrm.store import CATALOGUES, RESOURCES, RecordNotFound, Store

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
DELETED_MESSAGE = {
    "clientes": "Cliente excluído com sucesso!",
    "vendas": "Venda excluída com sucesso!",
}
"""What `data` says after a delete; produtos answer an empty body instead."""
CREATED_ID: ContextVar[str | None] = ContextVar("devcrm_created_id", default=None)
"""Where a create handler leaves the new id, for the ledger; whoever reads it resets it first."""

_dumps = functools.partial(json.dumps, ensure_ascii=False)


def json_response(
    body: object, status: int | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """JSON with the status taken from the envelope's `code` unless given."""
    code = envelope.body_code(body) if status is None else status
    return web.json_response(body, status=code or 200, headers=headers, dumps=_dumps)


class Api:
    """Handlers over one store; the faults in force decide the shape of empty lists and how
    loosely list filters match."""

    def __init__(self, store: Store, faults: Callable[[], Faults]) -> None:
        self.store = store
        self.faults = faults

    def add_routes(self, router: web.UrlDispatcher) -> None:
        names, catalogues = "|".join(RESOURCES), "|".join(CATALOGUES)
        for prefix in ("", "/api"):
            collection = f"{prefix}/{{resource:{names}}}"
            item = f"{collection}/{{id}}"
            router.add_get(collection, self.list_records)
            router.add_post(collection, self.create)
            router.add_get(item, self.get)
            router.add_put(item, self.update)
            router.add_delete(item, self.delete)
            router.add_get(f"{prefix}/{{resource:{catalogues}}}", self.list_records)
            router.add_get(f"{prefix}/{{resource:{catalogues}}}/{{id}}", self.get)

    async def list_records(self, request: web.Request) -> web.Response:
        """A page of records; `pagina` (from 1) and `limite` (at most 100, default 20)."""
        resource = request.match_info["resource"]
        try:
            page = _positive_int(request.query, "pagina", 1)
            size = min(MAX_PAGE_SIZE, _positive_int(request.query, "limite", DEFAULT_PAGE_SIZE))
        except ValidationFailed as exc:
            return json_response(envelope.validation_error(exc.mensagem))
        records = self.store.find(resource, request.query, loose=self.faults().loose_filters)
        items = records[(page - 1) * size : page * size]
        meta = _meta(request, resource, page, size, total=len(records), on_page=len(items))
        data: object = items
        if not items and self.faults().empty_list_as_string:
            data = envelope.EMPTY_LIST_MESSAGE
        return json_response(envelope.success(data, meta))

    async def get(self, request: web.Request) -> web.Response:
        try:
            record = self.store.get(request.match_info["resource"], request.match_info["id"])
        except RecordNotFound:
            return json_response(envelope.missing_record())
        return json_response(envelope.success(record))

    async def create(self, request: web.Request) -> web.Response:
        try:
            record = self.store.create(request.match_info["resource"], await _body(request))
        except ValidationFailed as exc:
            return json_response(envelope.validation_error(exc.mensagem))
        CREATED_ID.set(record["id"])
        return json_response(envelope.success(record))

    async def update(self, request: web.Request) -> web.Response:
        resource, record_id = request.match_info["resource"], request.match_info["id"]
        try:
            body = await _body(request)
            record = self.store.update(resource, record_id, body)
        except RecordNotFound:
            return json_response(envelope.missing_record())
        except ValidationFailed as exc:
            return json_response(envelope.validation_error(exc.mensagem))
        return json_response(envelope.success(record))

    async def delete(self, request: web.Request) -> web.Response:
        resource = request.match_info["resource"]
        try:
            self.store.delete(resource, request.match_info["id"])
        except RecordNotFound:
            return json_response(envelope.missing_record())
        if resource == "produtos":
            return web.Response(status=200)
        return json_response(envelope.success(DELETED_MESSAGE[resource]))


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise ValidationFailed("O corpo da requisição não é um JSON válido") from None
    except ConnectionResetError:
        # The client went away mid-body (a crmd killed by the chaos suite): nothing to store
        # and no one to answer; without this aiohttp logs a traceback per such request.
        raise web.HTTPBadRequest(text="conexão perdida durante o corpo") from None


def _positive_int(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValidationFailed(f"O parâmetro {name} deve ser um número inteiro positivo")
    return int(raw)


def _meta(
    request: web.Request, resource: str, page: int, size: int, *, total: int, on_page: int
) -> dict[str, Any]:
    """GestãoClick's pagination block, whose keys differ by resource (produtos count pages and
    the records on this one, the others only the latter, under another name); its links point
    at `/api/<resource>`, as the real ones do."""
    pages = math.ceil(total / size)
    previous = page - 1 if page > 1 else None
    following = page + 1 if page < pages else None
    meta: dict[str, Any] = {"total_registros": total}
    if resource == "produtos":
        meta["total_paginas"] = pages
        meta["total_registros_pagina"] = on_page
    else:
        meta["total_da_pagina"] = on_page
    meta.update(
        pagina_atual=page,
        limite_por_pagina=size,
        pagina_anterior=previous,
        url_anterior=_page_url(request, resource, previous),
        proxima_pagina=following,
        proxima_url=_page_url(request, resource, following),
    )
    return meta


def _page_url(request: web.Request, resource: str, page: int | None) -> str | None:
    if page is None:
        return None
    query = {**request.query, "pagina": str(page)}
    return f"{request.scheme}://{request.host}/api/{resource}?{urlencode(query)}"
