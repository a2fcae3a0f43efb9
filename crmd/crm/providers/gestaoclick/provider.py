"""The GestãoClick provider: operations, verified lookups, the account's lists and a probe.

How a record already in the CRM is recognised (see the package's docstring for why): a lookup
filters by the natural key and the record's loja, then checks the key on every candidate it gets
back, following `meta.proxima_pagina`, and links only a candidate whose key equals ours (a CPF or
CNPJ as digits, a `codigo_interno` or a venda's `codigo` exactly).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crmd.config import CrmAccountSettings
from crmd.crm.errors import CrmError, ErrorKind
from crmd.crm.limiter import RateLimiter
from crmd.crm.providers.base import Dependencies, Payload, Prepared, Probe, Row
from crmd.crm.providers.gestaoclick import answers, fields
from crmd.crm.providers.gestaoclick.payloads import Payloads, digits
from crmd.crm.transport import Transport

SUPPORTED = ("clientes", "produtos", "vendas")
KNOWN_BASE_URLS = (
    "https://api.gestaoclick.com",
    "https://api.gestaoclick.com/api",
    "https://api.beteltecnologia.com",
    "https://api.beteltecnologia.com/api",
)
"""Where GestãoClick's API has been documented to live: its API description names the first,
working integrations and its own ERP documentation the third; both take `/api` or not."""
MAX_LOOKUP_PAGES = 10
"""Candidates pages a lookup reads (20 each) before it gives up instead of guessing."""
_MAX_LIST_PAGES = 50
_FILTERS = {"clientes": "cpf_cnpj", "produtos": "codigo", "vendas": "codigo"}
"""The list filter each natural key is searched with (not the field's own name)."""
_PUT_REQUIRED = {
    "clientes": ("tipo_pessoa", "nome"),
    "produtos": ("nome", "codigo_interno", "valor_custo"),
    "vendas": ("cliente_id", "data", "situacao_id"),
}
"""What a PUT must carry, as a POST does (GestãoClick's documentation)."""


@dataclass(frozen=True)
class Situacao:
    """A situação de venda of the account; `tipo_lancamento` says what it moves (stock, money)."""

    id: str
    nome: str
    tipo_lancamento: str


@dataclass(frozen=True)
class Loja:
    id: str
    nome: str


class GestaoClick:
    name = "gestaoclick"

    def __init__(self, account: str, settings: CrmAccountSettings, limiter: RateLimiter) -> None:
        if settings.access_token is None or settings.secret_access_token is None:
            raise ValueError(
                f"CRM account {account!r}: GestãoClick needs access_token and secret_access_token"
            )
        self._headers = {
            "access-token": settings.access_token.get_secret_value(),
            "secret-access-token": settings.secret_access_token.get_secret_value(),
        }
        self.account = account
        self.settings = settings
        self.transport = Transport(account, settings, limiter, self._headers)
        loja = account.removeprefix("loja-")
        self.section = "crm" if account == "default" else f"crm.lojas.{loja}"
        """The config section of this account, for messages that name a key."""
        self.payloads = Payloads(self.section, settings)

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
                return self.payloads.cliente(row)
            if entidade == "produtos":
                return self.payloads.produto(row)
            if entidade == "vendas":
                return self.payloads.venda(row, resolved)
        except (KeyError, ValueError, ArithmeticError) as exc:
            raise CrmError(
                ErrorKind.PERMANENT, f"linha do ERP não pode ser enviada: {exc}"
            ) from None
        raise CrmError(ErrorKind.UNSUPPORTED, f"{entidade} não é suportado pelo GestãoClick")

    def check_columns(self, entidade: str, columns: Iterable[str]) -> list[str]:
        if entidade not in SUPPORTED:
            return []
        accepted = ", ".join(sorted(fields.EXTRA[entidade]))
        return [
            f"[sources] {entidade}: a coluna {column!r} não é mapeada pelo crmd nem é um campo do "
            f"GestãoClick que ele possa enviar (campos documentados aceitos: {accepted})"
            for column in fields.unknown_columns(entidade, columns)
        ]

    # --- operations -----------------------------------------------------------------------

    async def create(self, entidade: str, payload: Payload) -> str:
        data = answers.data(await self.transport.request("POST", f"/{entidade}", body=payload))
        if not isinstance(data, dict) or not data.get("id"):
            raise CrmError(ErrorKind.PERMANENT, "o CRM criou o registro mas não devolveu o id")
        return str(data["id"])

    async def update(self, entidade: str, external_id: str, payload: Payload) -> None:
        path = f"/{entidade}/{external_id}"
        answers.data(await self.transport.request("PUT", path, body=payload))

    async def delete(self, entidade: str, external_id: str) -> None:
        answers.data(await self.transport.request("DELETE", f"/{entidade}/{external_id}"))

    async def inactivate(self, entidade: str, external_id: str) -> None:
        """GET the record, then PUT back the fields a PUT requires, as the CRM holds them, with
        its loja and `ativo` "0" (a venda: the cancel situação). A field left out keeps its
        value, so nothing else changes; the response's shapes (numbers where a request takes
        text) never go back. Already inactive: nothing is sent after the GET."""
        if entidade not in SUPPORTED:
            raise CrmError(ErrorKind.UNSUPPORTED, f"{entidade} não é suportado pelo GestãoClick")
        cancel = self.settings.venda_situacao_cancelada_id
        if entidade == "vendas" and not cancel:
            raise CrmError(
                ErrorKind.PERMANENT,
                f"venda excluída no ERP e sem situação de cancelamento: defina [{self.section}] "
                "venda_situacao_cancelada_id (um id de GET /situacoes_vendas), ou [sync] "
                'on_delete = "delete" ou "ignore"',
            )
        path = f"/{entidade}/{external_id}"
        record = answers.data(await self.transport.request("GET", path))
        if not isinstance(record, dict):
            raise CrmError(ErrorKind.RETRYABLE, f"GET {path}: a resposta não traz o registro")
        if entidade == "vendas":
            field, value = "situacao_id", cancel
        else:
            field, value = "ativo", "0"
        if str(record.get(field) or "") == value:
            return
        body = {name: _text(record.get(name)) for name in _PUT_REQUIRED[entidade]}
        if record.get("loja_id") not in (None, ""):
            body["loja_id"] = str(record["loja_id"])
        body[field] = value
        answers.data(await self.transport.request("PUT", path, body=body))

    async def find(
        self, entidade: str, natural_key: str, scope: Mapping[str, str] | None = None
    ) -> str | None:
        if entidade not in _FILTERS or not natural_key:
            return None
        if entidade == "vendas" and natural_key.isdigit():
            return None  # the account's own numbering: whatever has it is not provably ours
        scope = dict(scope or {})
        params = {_FILTERS[entidade]: natural_key, **scope}
        page = 1
        for _ in range(MAX_LOOKUP_PAGES):
            query = params if page == 1 else {**params, "pagina": str(page)}
            resp = await self.transport.request("GET", f"/{entidade}", params=query)
            records, following = answers.page(resp)
            for record in records:
                if _is_ours(entidade, natural_key, scope, record):
                    return str(record["id"])
            if following is None or following <= page:
                return None
            page = following
        raise CrmError(
            ErrorKind.PERMANENT,
            f"a busca de {entidade} por {natural_key!r} trouxe mais de {MAX_LOOKUP_PAGES} "
            "páginas de candidatos sem o registro (o filtro parece ignorado); nada foi vinculado "
            "nem criado",
        )

    # --- the account's lists --------------------------------------------------------------

    async def situacoes(self) -> list[Situacao]:
        """The account's situações de venda (GET /situacoes_vendas)."""
        return [
            Situacao(str(r["id"]), str(r.get("nome") or ""), str(r.get("tipo_lancamento") or ""))
            for r in await self._list_all("/situacoes_vendas")
        ]

    async def lojas(self) -> list[Loja]:
        """The company's lojas (GET /lojas)."""
        listed = await self._list_all("/lojas")
        return [Loja(str(r["id"]), str(r.get("nome") or "")) for r in listed]

    def situacao_problems(self, listed: Sequence[Situacao]) -> list[str]:
        """What in the config's situações the account does not have, as messages naming keys."""
        known = {s.id for s in listed}
        have = "; ".join(f"{s.id} {s.nome}" for s in listed) or "nenhuma"
        problems = []
        default = self.settings.venda_situacao_id
        if not default:
            problems.append(
                f"[{self.section}] venda_situacao_id está vazio: uma venda cuja linha não traz "
                f"situação mapeada em [{self.section}.situacoes] vai falhar (situações: {have})"
            )
        elif default not in known:
            problems.append(
                f"[{self.section}] venda_situacao_id = {default!r}: a conta não tem essa situação "
                f"(situações: {have})"
            )
        cancel = self.settings.venda_situacao_cancelada_id
        if cancel and cancel not in known:
            problems.append(
                f"[{self.section}] venda_situacao_cancelada_id = {cancel!r}: a conta não tem essa "
                f"situação (situações: {have})"
            )
        for erp, crm_id in self.settings.situacoes.items():
            if crm_id not in known:
                problems.append(
                    f"[{self.section}.situacoes] {erp!r} = {crm_id!r}: a conta não tem essa "
                    f"situação (situações: {have})"
                )
        return problems

    def loja_problems(self, listed: Sequence[Loja]) -> list[str]:
        """What in the config's lojas the company does not have, as messages naming keys."""
        known = {loja.id for loja in listed}
        have = "; ".join(f"{loja.id} {loja.nome}" for loja in listed) or "nenhuma"
        return [
            f"[{self.section}.lojas_crm] {erp} = {crm_id!r}: a empresa não tem essa loja "
            f"(lojas: {have})"
            for erp, crm_id in self.settings.lojas_crm.items()
            if crm_id not in known
        ]

    async def check_account(self) -> list[str]:
        problems = self.situacao_problems(await self.situacoes())
        if self.settings.lojas_crm:
            problems += self.loja_problems(await self.lojas())
        return problems

    async def probe(self, base_url: str | None = None) -> Probe:
        url = (base_url or self.transport.base_url).rstrip("/")
        transport = self.transport
        if url != transport.base_url:
            settings = self.settings.model_copy(update={"base_url": url})
            transport = Transport(self.account, settings, transport.limiter, self._headers)
        try:
            resp = await transport.request("GET", "/lojas")
        except CrmError as exc:
            return Probe(url, answers=False, accepted=False, status=None, message=exc.message)
        finally:
            if transport is not self.transport:
                await transport.close()
        body = resp.body
        enveloped = isinstance(body, dict) and body.get("status") in ("success", "error")
        accepted = enveloped and 200 <= resp.status < 300 and body.get("status") == "success"
        if accepted:
            message = "responde e aceita os tokens"
        elif not enveloped:
            message = f"HTTP {resp.status} sem o envelope JSON do GestãoClick: não é a sua API"
        elif resp.status in (401, 403):
            message = f"responde mas recusa os tokens ({resp.status}: {answers.message(body)})"
        else:
            message = f"responde {resp.status}: {answers.message(body)}"
        return Probe(url, enveloped, accepted, resp.status, message)

    async def _list_all(self, path: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        page = 1
        for _ in range(_MAX_LIST_PAGES):
            params = {"pagina": str(page)} if page > 1 else None
            records, following = answers.page(
                await self.transport.request("GET", path, params=params)
            )
            rows += [r for r in records if r.get("id") not in (None, "")]
            if following is None or following <= page:
                break
            page = following
        return rows


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _is_ours(entidade: str, key: str, scope: Mapping[str, str], record: Mapping[str, Any]) -> bool:
    """Whether a lookup's candidate really is the record with this key (and in this loja)."""
    if record.get("id") in (None, ""):
        return False
    loja = scope.get("loja_id")
    if loja and str(record.get("loja_id") or loja) != loja:
        return False
    if entidade == "clientes":
        wanted = digits(key)
        return bool(wanted) and wanted in (
            digits(str(record.get("cpf") or "")),
            digits(str(record.get("cnpj") or "")),
        )
    field = "codigo_interno" if entidade == "produtos" else "codigo"
    return str(record.get(field) or "") == key
