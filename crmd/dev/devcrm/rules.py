"""What GestãoClick accepts for each resource, and the shape it answers with.

A body is validated and normalised once, on write, into the response shape: ids and foreign keys
as strings, money as strings with 4 decimals ("80.0000"), `ativo` as "1"/"0", a produto's
`estoque` as a number, a venda item's `produto_id` as a number, wrapped lists checked
(`contatos: [{"contato": {...}}]`), unwrapped ones too (a produto's `valores`). Fields these rules
do not know are kept and echoed back, as the real CRM does with most of them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

JsonObject = dict[str, Any]

TIPOS_PESSOA = ("PF", "PJ", "ES")
REQUIRED = {
    "clientes": ("tipo_pessoa", "nome"),
    "produtos": ("nome", "codigo_interno", "valor_custo"),
    "vendas": ("cliente_id", "data", "situacao_id"),
}
"""Required on POST and, as GestãoClick documents, on PUT too."""

_CLIENTE_TEXT = ("cpf", "cnpj", "email", "telefone", "celular", "razao_social")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class ValidationFailed(Exception):
    """The payload was refused; `mensagem` says why, in Portuguese, as GestãoClick would."""

    def __init__(self, mensagem: str) -> None:
        super().__init__(mensagem)
        self.mensagem = mensagem


@dataclass(frozen=True)
class Account:
    """What the rules need to know of the account: its situações, lojas and price type."""

    situacoes: Mapping[str, JsonObject]
    lojas: Mapping[str, JsonObject]
    matriz: str
    """The loja a record without `loja_id` belongs to."""
    tipo_valor: JsonObject
    """The price type a produto's `valor_venda` is when it comes without `valores`."""


def check_required(resource: str, body: JsonObject) -> None:
    for name in REQUIRED[resource]:
        value = body.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValidationFailed(f"O campo {name} é obrigatório")


def loja(body: JsonObject, old: JsonObject | None, account: Account) -> str:
    """The record's loja: the one sent, else the one it had, else the matriz."""
    value = body.get("loja_id")
    if value in (None, ""):
        return str(old["loja_id"]) if old else account.matriz
    loja_id = str(value)
    if loja_id not in account.lojas:
        raise ValidationFailed(f"Loja não encontrada (loja_id {loja_id})")
    return loja_id


def cliente(body: JsonObject) -> JsonObject:
    tipo = body.get("tipo_pessoa")
    if tipo not in TIPOS_PESSOA:
        raise ValidationFailed(f"Tipo de pessoa inválido: {tipo!r}. Use PF, PJ ou ES")
    out: JsonObject = {"tipo_pessoa": tipo, "nome": required_text(body, "nome")}
    for name in _CLIENTE_TEXT:
        out[name] = text(body, name)
    birth = body.get("data_nascimento") or None
    out["data_nascimento"] = None if birth is None else date(birth, "data_nascimento")
    out["ativo"] = flag(body, "ativo")
    out["contatos"] = wrapped_list(body, "contatos", "contato")
    out["enderecos"] = wrapped_list(body, "enderecos", "endereco")
    return {**body, **out}


def produto(body: JsonObject, old: JsonObject | None, account: Account) -> JsonObject:
    """Prices come from `valores`; without it a new produto takes `valor_venda` for the
    account's default price type and an edited one keeps the prices it had."""
    out: JsonObject = {
        "nome": required_text(body, "nome"),
        "codigo_interno": required_text(body, "codigo_interno"),
        "valor_custo": money(body["valor_custo"], "valor_custo"),
    }
    if body.get("valores") is not None:
        out["valores"] = _valores(body["valores"], account)
    elif old is not None:
        out["valores"] = old["valores"]
    else:
        price = money(body.get("valor_venda") or "0", "valor_venda")
        out["valores"] = [{**account.tipo_valor, "valor_venda": price}]
    out["valor_venda"] = out["valores"][0]["valor_venda"] if out["valores"] else "0.0000"
    out["estoque"] = stock(body.get("estoque") or "0")
    out["ativo"] = flag(body, "ativo")
    out["descricao"] = text(body, "descricao")
    out["codigo_barra"] = text(body, "codigo_barra")
    out["variacoes"] = wrapped_list(body, "variacoes", "variacao")
    out["fornecedores"] = plain_list(body, "fornecedores")
    fiscal = body.get("fiscal", {})
    if not isinstance(fiscal, dict):
        raise ValidationFailed("O campo fiscal deve ser um objeto")
    out["fiscal"] = fiscal
    return {**body, **out}


def _valores(value: object, account: Account) -> list[JsonObject]:
    if not isinstance(value, list):
        raise ValidationFailed("O campo valores deve ser uma lista")
    out = []
    for item in value:
        if not isinstance(item, dict) or "valor_venda" not in item:
            raise ValidationFailed(
                'Cada item de valores deve ser {"tipo_id": ..., "valor_venda": ...}'
            )
        tipo = str(item.get("tipo_id") or account.tipo_valor["tipo_id"])
        entry = {**item, "tipo_id": tipo, "valor_venda": money(item["valor_venda"], "valor_venda")}
        if tipo == account.tipo_valor["tipo_id"]:
            entry.setdefault("nome_tipo", account.tipo_valor["nome_tipo"])
        out.append(entry)
    return out


def venda(
    body: JsonObject, records: Mapping[str, Mapping[int, JsonObject]], account: Account
) -> JsonObject:
    cliente_id = required_text(body, "cliente_id")
    found = records["clientes"].get(int(cliente_id) if cliente_id.isdigit() else -1)
    if found is None:
        raise ValidationFailed(f"Cliente não encontrado (cliente_id {cliente_id})")
    situacao_id = required_text(body, "situacao_id")
    situacao = account.situacoes.get(situacao_id)
    if situacao is None:
        raise ValidationFailed(f"Situação não encontrada (situacao_id {situacao_id})")
    out: JsonObject = {
        "cliente_id": cliente_id,
        "nome_cliente": found["nome"],
        "data": date(body.get("data"), "data"),
        "situacao_id": situacao_id,
        "nome_situacao": situacao["nome"],
        "observacoes": text(body, "observacoes"),
    }
    items = [_venda_item(item, records["produtos"]) for item in plain_list(body, "produtos")]
    total = sum((Decimal(i["produto"]["valor_total"]) for i in items), Decimal(0))
    frete = money(body.get("valor_frete") or "0", "valor_frete")
    out["produtos"] = items
    out["servicos"] = wrapped_list(body, "servicos", "servico")
    out["pagamentos"] = wrapped_list(body, "pagamentos", "pagamento")
    out["valor_frete"] = frete
    out["valor_total"] = f"{total + Decimal(frete):.4f}"
    return {**body, **out}


def _venda_item(item: object, produtos: Mapping[int, JsonObject]) -> JsonObject:
    inner = item.get("produto") if isinstance(item, dict) else None
    if not isinstance(inner, dict):
        raise ValidationFailed('Cada item de produtos deve ser {"produto": {...}}')
    produto_id = str(inner.get("produto_id") or "")
    if not produto_id:
        raise ValidationFailed("O campo produto_id é obrigatório em cada produto da venda")
    found = produtos.get(int(produto_id) if produto_id.isdigit() else -1)
    if found is None:
        raise ValidationFailed(f"Produto não encontrado (produto_id {produto_id})")
    quantity = decimal(inner.get("quantidade"), "quantidade")
    if quantity <= 0:
        raise ValidationFailed("O campo quantidade deve ser maior que zero")
    price = inner.get("valor_venda")
    price = found["valor_venda"] if price in (None, "") else money(price, "valor_venda")
    out = {
        "produto_id": int(produto_id),
        "nome_produto": found["nome"],
        "quantidade": f"{quantity:.2f}",
        "valor_venda": price,
        "valor_total": f"{quantity * Decimal(price):.4f}",
    }
    return {"produto": {**inner, **out}}


# --- field helpers ----------------------------------------------------------------------------


def required_text(body: JsonObject, name: str) -> str:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise ValidationFailed(f"O campo {name} é obrigatório")
    return str(value)


def text(body: JsonObject, name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationFailed(f"O campo {name} deve ser texto")
    return value


def flag(body: JsonObject, name: str) -> str:
    value = body.get(name, "1")
    if value in ("1", 1, True):
        return "1"
    if value in ("0", 0, False):
        return "0"
    raise ValidationFailed(f"O campo {name} deve ser 1 ou 0")


def date(value: object, name: str) -> str:
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            pass
        else:
            return value
    raise ValidationFailed(f"O campo {name} deve ser uma data no formato AAAA-MM-DD")


def decimal(value: object, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValidationFailed(f"O campo {name} deve ser numérico")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValidationFailed(f"O campo {name} deve ser numérico") from None
    if not number.is_finite():
        raise ValidationFailed(f"O campo {name} deve ser numérico")
    return number


def money(value: object, name: str) -> str:
    number = decimal(value, name)
    if number < 0:
        raise ValidationFailed(f"O campo {name} não pode ser negativo")
    return f"{number:.4f}"


def stock(value: object) -> int | float:
    number = decimal(value, "estoque")
    return int(number) if number == number.to_integral_value() else float(number)


def plain_list(body: JsonObject, name: str) -> list[Any]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationFailed(f"O campo {name} deve ser uma lista")
    return value


def wrapped_list(body: JsonObject, name: str, wrapper: str) -> list[Any]:
    items = plain_list(body, name)
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get(wrapper), dict):
            raise ValidationFailed(f'Cada item de {name} deve ser {{"{wrapper}": {{...}}}}')
    return items


def digits(value: object) -> str:
    return re.sub(r"\D", "", value) if isinstance(value, str) else ""


def timestamp() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
