"""GestãoClick's JSON envelopes, shared by the development server and crmd's CRM client.

Every answer is `{"code": <http status>, "status": "success"|"error", "data": ...}`. Two 404s
look alike by status and differ only in the body, and a client must tell them apart:

- validation failure (the record was refused; sending it again will not help)::

      {"code": 404, "status": "error", "data": {"erro": "Not Found", "mensagem": "..."}}

- missing record (GET, PUT or DELETE of an id the CRM does not know; recreate it)::

      {"code": 404, "status": "error", "data": {"mensagem": "Registro não encontrado"}}

Use `is_validation_error` / `is_missing_record` rather than the status alone. This module imports
nothing beyond the standard library so the client can use it without pulling in the server.
"""

from __future__ import annotations

from typing import Any

JsonObject = dict[str, Any]

VALIDATION_ERRO = "Not Found"
"""The `data.erro` value GestãoClick puts on validation failures; its presence is the marker."""

MISSING_RECORD_MESSAGE = "Registro não encontrado"
RATE_LIMIT_MESSAGE = "O limite de requisicoes foi atingido"
UNAUTHORIZED_MESSAGE = "Acesso negado: access-token ou secret-access-token inválido"
EMPTY_LIST_MESSAGE = "Não há dados!"
"""What GestãoClick has been seen to put in `data` instead of `[]` for an empty list."""


def success(data: Any, meta: JsonObject | None = None) -> JsonObject:
    body: JsonObject = {"code": 200, "status": "success"}
    if meta is not None:
        body["meta"] = meta
    body["data"] = data
    return body


def error(code: int, mensagem: str) -> JsonObject:
    return {"code": code, "status": "error", "data": {"mensagem": mensagem}}


def validation_error(mensagem: str) -> JsonObject:
    return {
        "code": 404,
        "status": "error",
        "data": {"erro": VALIDATION_ERRO, "mensagem": mensagem},
    }


def missing_record() -> JsonObject:
    return error(404, MISSING_RECORD_MESSAGE)


def _error_data(body: object) -> JsonObject | None:
    if not isinstance(body, dict) or body.get("status") != "error":
        return None
    data = body.get("data")
    return data if isinstance(data, dict) else None


def is_validation_error(body: object) -> bool:
    """True for GestãoClick's refusal of a payload: an error body whose data carries `erro`."""
    data = _error_data(body)
    return data is not None and "erro" in data


def is_missing_record(body: object) -> bool:
    """True for a real 404 of an unknown id: code 404, no `erro` key in data."""
    data = _error_data(body)
    return data is not None and body_code(body) == 404 and "erro" not in data


def error_message(body: object) -> str | None:
    """The CRM's own `data.mensagem`, for error reports; None when the body has none."""
    data = _error_data(body)
    message = data.get("mensagem") if data is not None else None
    return message if isinstance(message, str) else None


def body_code(body: object) -> int | None:
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) else None
