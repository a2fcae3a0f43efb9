"""GestãoClick: payloads for clientes, produtos and vendas, and the API's conventions.

The API's quirks that matter here (see DESIGN.md): ids and money travel as strings; nested lists
wrap each element (`enderecos: [{"endereco": {...}}]`, a venda's `produtos: [{"produto": ...}]`);
an empty list may come back as the string "Não há dados!"; and validation failures come back as
HTTP 404 with `data.erro`, told apart from a missing record by that body, not by the status.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from crmd.config import CrmAccountSettings
from crmd.crm.errors import CrmError, ErrorKind
from crmd.crm.limiter import RateLimiter
from crmd.crm.providers.base import Dependencies, Payload, Prepared, Row
from crmd.crm.transport import Response, Transport

SUPPORTED = ("clientes", "produtos", "vendas")
# Where each entity's natural key is searched: list filter name and the record field it matches.
_FINDERS = {
    "clientes": ("cpf_cnpj", ("cpf", "cnpj")),
    "produtos": ("codigo", ("codigo_interno",)),
    "vendas": ("codigo", ("codigo",)),
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Endereco(_Model):
    cep: str | None = None
    logradouro: str | None = None
    numero: str | None = None
    complemento: str | None = None
    bairro: str | None = None
    nome_cidade: str | None = None
    estado: str | None = None


class Cliente(_Model):
    tipo_pessoa: Literal["PF", "PJ", "ES"]
    nome: str
    razao_social: str | None = None
    cpf: str | None = None
    cnpj: str | None = None
    email: str | None = None
    telefone: str | None = None
    celular: str | None = None
    data_nascimento: str | None = None
    ativo: Literal["0", "1"] = "1"
    enderecos: list[dict[Literal["endereco"], Endereco]] | None = None


class Produto(_Model):
    nome: str
    codigo_interno: str
    valor_custo: str
    valor_venda: str | None = None
    estoque: str | None = None
    descricao: str | None = None
    ativo: Literal["0", "1"] = "1"


class ItemVenda(_Model):
    produto_id: str
    quantidade: str
    valor_venda: str


class Venda(_Model):
    codigo: str
    cliente_id: str
    data: str
    situacao_id: str
    observacoes: str | None = None
    produtos: list[dict[Literal["produto"], ItemVenda]]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    text = str(value).strip()
    return text or None


def _money(value: Any) -> str:
    return f"{Decimal(str(value or 0)):.2f}"


def _number(value: Any) -> str:
    return format(Decimal(str(value or 0)).normalize(), "f")


def _flag(value: Any) -> Literal["0", "1"]:
    return "0" if value is False or value in (0, "0", "f", "false") else "1"


def digits(value: str | None) -> str:
    return re.sub(r"\D", "", value or "")


class GestaoClick:
    name = "gestaoclick"

    def __init__(self, account: str, settings: CrmAccountSettings, limiter: RateLimiter) -> None:
        if settings.access_token is None or settings.secret_access_token is None:
            raise ValueError(
                f"CRM account {account!r}: GestãoClick needs access_token and secret_access_token"
            )
        headers = {
            "access-token": settings.access_token.get_secret_value(),
            "secret-access-token": settings.secret_access_token.get_secret_value(),
        }
        self.transport = Transport(account, settings, limiter, headers)
        self.venda_situacao_id = settings.venda_situacao_id

    def supports(self, entidade: str) -> bool:
        return entidade in SUPPORTED

    # --- payloads -------------------------------------------------------------------------

    def dependencies(self, entidade: str, row: Row) -> Dependencies:
        if entidade != "vendas":
            return Dependencies()
        needs = [("clientes", int(row["cliente_id"]))]
        needs += sorted({("produtos", int(i["produto_id"])) for i in row.get("itens") or []})
        return Dependencies(tuple(needs))

    def build(self, entidade: str, row: Row, resolved: Mapping[tuple[str, int], str]) -> Prepared:
        try:
            if entidade == "clientes":
                return self._cliente(row)
            if entidade == "produtos":
                return self._produto(row)
            if entidade == "vendas":
                return self._venda(row, resolved)
        except (KeyError, ValueError, ArithmeticError) as exc:
            raise CrmError(
                ErrorKind.PERMANENT, f"linha do ERP não pode ser enviada: {exc}"
            ) from None
        raise CrmError(ErrorKind.UNSUPPORTED, f"{entidade} não é suportado pelo GestãoClick")

    def _cliente(self, row: Row) -> Prepared:
        endereco = Endereco(
            cep=_text(row.get("cep")),
            logradouro=_text(row.get("logradouro")),
            numero=_text(row.get("numero")),
            complemento=_text(row.get("complemento")),
            bairro=_text(row.get("bairro")),
            nome_cidade=_text(row.get("cidade")),
            estado=_text(row.get("uf")),
        )
        cliente = Cliente(
            tipo_pessoa=row.get("tipo_pessoa") or "PF",
            nome=_text(row["nome"]) or "",
            razao_social=_text(row.get("razao_social")),
            cpf=_text(row.get("cpf")),
            cnpj=_text(row.get("cnpj")),
            email=_text(row.get("email")),
            telefone=_text(row.get("telefone")),
            celular=_text(row.get("celular")),
            data_nascimento=_text(row.get("data_nascimento")),
            ativo=_flag(row.get("ativo", True)),
            enderecos=[{"endereco": endereco}] if endereco.model_dump(exclude_none=True) else None,
        )
        key = digits(cliente.cpf) or digits(cliente.cnpj) or None
        return Prepared(cliente.model_dump(exclude_none=True), key)

    def _produto(self, row: Row) -> Prepared:
        produto = Produto(
            nome=_text(row["nome"]) or "",
            codigo_interno=_text(row["codigo_interno"]) or "",
            valor_custo=_money(row.get("valor_custo")),
            valor_venda=_money(row.get("valor_venda")),
            estoque=_number(row.get("estoque")),
            descricao=_text(row.get("descricao")),
            ativo=_flag(row.get("ativo", True)),
        )
        return Prepared(produto.model_dump(exclude_none=True), produto.codigo_interno or None)

    def _venda(self, row: Row, resolved: Mapping[tuple[str, int], str]) -> Prepared:
        itens = [
            {
                "produto": ItemVenda(
                    produto_id=resolved[("produtos", int(i["produto_id"]))],
                    quantidade=_number(i["quantidade"]),
                    valor_venda=_money(i["valor_venda"]),
                )
            }
            for i in row.get("itens") or []
        ]
        situacao = _text(row.get("situacao_id")) or self.venda_situacao_id
        venda = Venda(
            codigo=str(row["id"]),
            cliente_id=resolved[("clientes", int(row["cliente_id"]))],
            data=_text(row["data"]) or "",
            situacao_id=situacao,
            observacoes=_text(row.get("observacoes")),
            produtos=itens,
        )
        return Prepared(venda.model_dump(exclude_none=True), venda.codigo)

    # --- operations -----------------------------------------------------------------------

    async def create(self, entidade: str, payload: Payload) -> str:
        data = _data(await self.transport.request("POST", f"/{entidade}", body=payload))
        if not isinstance(data, dict) or not data.get("id"):
            raise CrmError(ErrorKind.PERMANENT, "o CRM criou o registro mas não devolveu o id")
        return str(data["id"])

    async def update(self, entidade: str, external_id: str, payload: Payload) -> None:
        _data(await self.transport.request("PUT", f"/{entidade}/{external_id}", body=payload))

    async def delete(self, entidade: str, external_id: str) -> None:
        _data(await self.transport.request("DELETE", f"/{entidade}/{external_id}"))

    async def find(self, entidade: str, natural_key: str) -> str | None:
        param, fields = _FINDERS[entidade]
        resp = await self.transport.request("GET", f"/{entidade}", params={param: natural_key})
        data = _data(resp)
        if not isinstance(data, list):  # "Não há dados!" is how it says: none
            return None
        compare = digits if entidade == "clientes" else str
        for record in data:
            if isinstance(record, dict) and any(
                record.get(f) and compare(str(record[f])) == natural_key for f in fields
            ):
                return str(record["id"])
        return None


def _message(body: Any) -> str:
    if isinstance(body, dict):
        data = body.get("data")
        if isinstance(data, dict) and data.get("mensagem"):
            return str(data["mensagem"])
        if isinstance(body.get("mensagem"), str):
            return str(body["mensagem"])
    text = body if isinstance(body, str) else repr(body)
    return text[:300]


def _data(resp: Response) -> Any:
    """The envelope's `data`, or the CrmError its status and body stand for."""
    status, body = resp.status, resp.body
    if 200 <= status < 300:
        if not isinstance(body, dict):
            raise CrmError(
                ErrorKind.RETRYABLE, f"resposta não é JSON: {_message(body)}", http_status=status
            )
        if body.get("status") == "error":
            raise CrmError(ErrorKind.PERMANENT, _message(body), http_status=status)
        return body.get("data")
    message = _message(body)
    if status in (401, 403):
        raise CrmError(ErrorKind.AUTH, message, http_status=status)
    if status == 429:
        raise CrmError(
            ErrorKind.RATE_LIMITED,
            message,
            http_status=status,
            retry_after=_retry_after(resp.headers.get("Retry-After")),
        )
    if status == 404:
        data = body.get("data") if isinstance(body, dict) else None
        kind = (
            ErrorKind.PERMANENT
            if isinstance(data, dict) and "erro" in data
            else (ErrorKind.NOT_FOUND)
        )
        raise CrmError(kind, message, http_status=status)
    if status == 408 or status >= 500:
        raise CrmError(ErrorKind.RETRYABLE, message, http_status=status)
    raise CrmError(ErrorKind.PERMANENT, message, http_status=status)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None  # an HTTP date: rare enough to fall back to our own pause
