"""In-memory clientes, produtos and vendas, validated and shaped the way GestãoClick answers.

Records are normalised once, on write, into the response shape (ids and foreign keys as strings,
money as strings with 4 decimals, `ativo` as "1"/"0", a produto's `estoque` as a number, a venda
item's `produto_id` as a number), so every read answers the same quirks a client must handle.
Fields the store does not know are kept and echoed back, as the real CRM does with most of them.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

JsonObject = dict[str, Any]

RESOURCES = ("clientes", "produtos", "vendas")
TIPOS_PESSOA = ("PF", "PJ", "ES")
_SERVER_FIELDS = ("id", "cadastrado_em", "modificado_em")
_CLIENTE_TEXT = ("cpf", "cnpj", "email", "telefone", "celular", "razao_social")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class ValidationFailed(Exception):
    """The payload was refused; `mensagem` says why, in Portuguese, as GestãoClick would."""

    def __init__(self, mensagem: str) -> None:
        super().__init__(mensagem)
        self.mensagem = mensagem


class RecordNotFound(Exception):
    """No record with that id in that resource."""


class Store:
    """Records per resource, keyed by integer id; ids start at 1 and are never reused."""

    def __init__(self) -> None:
        self._records: dict[str, dict[int, JsonObject]] = {r: {} for r in RESOURCES}
        self._last_id: dict[str, int] = dict.fromkeys(RESOURCES, 0)

    def clear(self) -> None:
        """Forget every record and start ids at 1 again."""
        for resource in RESOURCES:
            self._records[resource].clear()
            self._last_id[resource] = 0

    def create(self, resource: str, body: object) -> JsonObject:
        record = self._normalise(resource, _object(body))
        self._last_id[resource] += 1
        record_id = self._last_id[resource]
        stamp = _timestamp()
        record = {"id": str(record_id), **record, "cadastrado_em": stamp, "modificado_em": stamp}
        self._records[resource][record_id] = record
        return copy.deepcopy(record)

    def update(self, resource: str, record_id: str, body: object) -> JsonObject:
        """Merge the given fields into the record (fields not sent keep their values)."""
        key = self._key(resource, record_id)
        old = self._records[resource][key]
        record = self._normalise(resource, {**old, **_object(body)})
        record = {"id": old["id"], **record}
        record["cadastrado_em"] = old["cadastrado_em"]
        record["modificado_em"] = _timestamp()
        self._records[resource][key] = record
        return copy.deepcopy(record)

    def delete(self, resource: str, record_id: str) -> None:
        del self._records[resource][self._key(resource, record_id)]

    def get(self, resource: str, record_id: str) -> JsonObject:
        return copy.deepcopy(self._records[resource][self._key(resource, record_id)])

    def find(self, resource: str, filters: Mapping[str, str]) -> list[JsonObject]:
        """Records in id order that match the list filters GestãoClick offers for `resource`."""
        matches: list[Callable[[JsonObject], bool]] = []
        if resource == "clientes" and "cpf_cnpj" in filters:
            wanted = _digits(filters["cpf_cnpj"])
            matches.append(
                lambda r: bool(wanted) and wanted in (_digits(r["cpf"]), _digits(r["cnpj"]))
            )
        if resource == "clientes" and "situacao" in filters:
            matches.append(lambda r: r["ativo"] == filters["situacao"])
        if resource == "produtos" and "codigo" in filters:
            matches.append(lambda r: r["codigo_interno"] == filters["codigo"])
        if resource == "vendas" and "codigo" in filters:
            matches.append(lambda r: str(r.get("codigo", "")) == filters["codigo"])
        return [
            copy.deepcopy(r)
            for _, r in sorted(self._records[resource].items())
            if all(m(r) for m in matches)
        ]

    def _key(self, resource: str, record_id: str) -> int:
        key = int(record_id) if record_id.isdigit() else -1
        if key not in self._records[resource]:
            raise RecordNotFound(f"{resource}/{record_id}")
        return key

    def _normalise(self, resource: str, body: JsonObject) -> JsonObject:
        fields = {k: v for k, v in body.items() if k not in _SERVER_FIELDS}
        if resource == "clientes":
            return _cliente(fields)
        if resource == "produtos":
            return _produto(fields)
        return _venda(fields, self._records)


# --- per-resource rules -----------------------------------------------------------------------


def _cliente(body: JsonObject) -> JsonObject:
    tipo = body.get("tipo_pessoa")
    if not tipo:
        raise ValidationFailed("O campo tipo_pessoa é obrigatório")
    if tipo not in TIPOS_PESSOA:
        raise ValidationFailed(f"Tipo de pessoa inválido: {tipo!r}. Use PF, PJ ou ES")
    out: JsonObject = {"tipo_pessoa": tipo, "nome": _required_text(body, "nome")}
    for name in _CLIENTE_TEXT:
        out[name] = _text(body, name)
    birth = body.get("data_nascimento") or None
    out["data_nascimento"] = None if birth is None else _date(birth, "data_nascimento")
    out["ativo"] = _flag(body, "ativo")
    out["contatos"] = _wrapped_list(body, "contatos", "contato")
    out["enderecos"] = _wrapped_list(body, "enderecos", "endereco")
    return {**body, **out}


def _produto(body: JsonObject) -> JsonObject:
    out: JsonObject = {
        "nome": _required_text(body, "nome"),
        "codigo_interno": _required_text(body, "codigo_interno"),
    }
    if body.get("valor_custo") in (None, ""):
        raise ValidationFailed("O campo valor_custo é obrigatório")
    out["valor_custo"] = _money(body["valor_custo"], "valor_custo")
    out["valor_venda"] = _money(body.get("valor_venda") or "0", "valor_venda")
    out["estoque"] = _stock(body.get("estoque") or "0")
    out["ativo"] = _flag(body, "ativo")
    out["descricao"] = _text(body, "descricao")
    return {**body, **out}


def _venda(body: JsonObject, records: Mapping[str, Mapping[int, JsonObject]]) -> JsonObject:
    cliente_id = _required_text(body, "cliente_id")
    cliente = records["clientes"].get(int(cliente_id) if cliente_id.isdigit() else -1)
    if cliente is None:
        raise ValidationFailed(f"Cliente não encontrado (cliente_id {cliente_id})")
    data = body.get("data")
    if not data:
        raise ValidationFailed("O campo data é obrigatório")
    out: JsonObject = {
        "cliente_id": cliente_id,
        "nome_cliente": cliente["nome"],
        "data": _date(data, "data"),
        "situacao_id": _required_text(body, "situacao_id"),
    }
    items = [_venda_item(item, records["produtos"]) for item in _list(body, "produtos")]
    total = sum((Decimal(i["produto"]["valor_total"]) for i in items), Decimal(0))
    out["produtos"] = items
    out["valor_total"] = f"{total:.4f}"
    return {**body, **out}


def _venda_item(item: object, produtos: Mapping[int, JsonObject]) -> JsonObject:
    inner = item.get("produto") if isinstance(item, dict) else None
    if not isinstance(inner, dict):
        raise ValidationFailed('Cada item de produtos deve ser {"produto": {...}}')
    produto_id = str(inner.get("produto_id") or "")
    if not produto_id:
        raise ValidationFailed("O campo produto_id é obrigatório em cada produto da venda")
    produto = produtos.get(int(produto_id) if produto_id.isdigit() else -1)
    if produto is None:
        raise ValidationFailed(f"Produto não encontrado (produto_id {produto_id})")
    quantity = _decimal(inner.get("quantidade"), "quantidade")
    if quantity <= 0:
        raise ValidationFailed("O campo quantidade deve ser maior que zero")
    price = inner.get("valor_venda")
    price = produto["valor_venda"] if price in (None, "") else _money(price, "valor_venda")
    out = {
        "produto_id": int(produto_id),
        "nome_produto": produto["nome"],
        "quantidade": f"{quantity:.2f}",
        "valor_venda": price,
        "valor_total": f"{quantity * Decimal(price):.4f}",
    }
    return {"produto": {**inner, **out}}


# --- field helpers ----------------------------------------------------------------------------


def _object(body: object) -> JsonObject:
    if not isinstance(body, dict):
        raise ValidationFailed("O corpo da requisição deve ser um objeto JSON")
    return body


def _required_text(body: JsonObject, name: str) -> str:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise ValidationFailed(f"O campo {name} é obrigatório")
    return str(value)


def _text(body: JsonObject, name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationFailed(f"O campo {name} deve ser texto")
    return value


def _flag(body: JsonObject, name: str) -> str:
    value = body.get(name, "1")
    if value in ("1", 1, True):
        return "1"
    if value in ("0", 0, False):
        return "0"
    raise ValidationFailed(f"O campo {name} deve ser 1 ou 0")


def _date(value: object, name: str) -> str:
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            pass
        else:
            return value
    raise ValidationFailed(f"O campo {name} deve ser uma data no formato AAAA-MM-DD")


def _decimal(value: object, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValidationFailed(f"O campo {name} deve ser numérico")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValidationFailed(f"O campo {name} deve ser numérico") from None
    if not number.is_finite():
        raise ValidationFailed(f"O campo {name} deve ser numérico")
    return number


def _money(value: object, name: str) -> str:
    number = _decimal(value, name)
    if number < 0:
        raise ValidationFailed(f"O campo {name} não pode ser negativo")
    return f"{number:.4f}"


def _stock(value: object) -> int | float:
    number = _decimal(value, "estoque")
    return int(number) if number == number.to_integral_value() else float(number)


def _list(body: JsonObject, name: str) -> list[Any]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationFailed(f"O campo {name} deve ser uma lista")
    return value


def _wrapped_list(body: JsonObject, name: str, wrapper: str) -> list[Any]:
    items = _list(body, name)
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get(wrapper), dict):
            raise ValidationFailed(f'Cada item de {name} deve ser {{"{wrapper}": {{...}}}}')
    return items


def _digits(value: object) -> str:
    return re.sub(r"\D", "", value) if isinstance(value, str) else ""


def _timestamp() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
