"""The GestãoClick fields a source query may add beside the columns crmd maps itself.

A real installation's query can carry documented fields crmd does not map (a cliente's `rg`,
several `enderecos`, a produto's `codigo_barra`, a venda's `pagamentos`...): each is coerced to
the type GestãoClick expects, and a column that names no such field is an error naming it, rather
than a value silently dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any


class Kind(Enum):
    TEXT = "texto"
    ID = "id numérico"
    MONEY = "valor"
    NUMBER = "número"
    FLAG = "0 ou 1"
    DATE = "data AAAA-MM-DD"
    OBJECT = "objeto JSON"
    LIST = "lista JSON de objetos"
    WRAPPED = "lista JSON de objetos (cada um embrulhado ou não)"


@dataclass(frozen=True)
class Spec:
    kind: Kind
    wrapper: str = ""
    """For WRAPPED lists: the key each element sits under (`contatos: [{"contato": {...}}]`)."""


_T, _ID, _M, _N, _F, _D = (Spec(k) for k in (Kind.TEXT, Kind.ID, Kind.MONEY, Kind.NUMBER,
                                              Kind.FLAG, Kind.DATE))  # fmt: skip


def _wrapped(wrapper: str) -> Spec:
    return Spec(Kind.WRAPPED, wrapper)


EXTRA: dict[str, dict[str, Spec]] = {
    "clientes": {
        "rg": _T,
        "inscricao_estadual": _T,
        "inscricao_municipal": _T,
        "fax": _T,
        "sexo": _T,
        "vendedor_id": _ID,
        "contatos": _wrapped("contato"),
        "enderecos": _wrapped("endereco"),
    },
    "produtos": {
        "codigo_barra": _T,
        "grupo_id": _ID,
        "possui_variacao": _F,
        "movimenta_estoque": _F,
        "peso": _N,
        "largura": _N,
        "altura": _N,
        "comprimento": _N,
        "valores": Spec(Kind.LIST),
        "fornecedores": Spec(Kind.LIST),
        "variacoes": _wrapped("variacao"),
        "fiscal": Spec(Kind.OBJECT),
    },
    "vendas": {
        "situacao_id": _ID,
        "vendedor_id": _ID,
        "tecnico_id": _ID,
        "transportadora_id": _ID,
        "centro_custo_id": _ID,
        "previsao_entrega": _D,
        "valor_frete": _M,
        "condicao_pagamento": _T,
        "forma_pagamento_id": _ID,
        "numero_parcelas": _N,
        "intervalo_dias": _N,
        "data_primeira_parcela": _D,
        "observacoes_interna": _T,
        "aos_cuidados_de": _T,
        "validade": _T,
        "introducao": _T,
        "pagamentos": _wrapped("pagamento"),
        "servicos": _wrapped("servico"),
    },
}
"""Documented fields per resource that crmd passes through as a source query gives them."""

MAPPED: dict[str, frozenset[str]] = {
    "clientes": frozenset(
        ("id", "loja_id", "tipo_pessoa", "nome", "razao_social", "cpf", "cnpj", "email",
         "telefone", "celular", "data_nascimento", "ativo", "cep", "logradouro", "numero",
         "complemento", "bairro", "cidade", "uf")
    ),
    "produtos": frozenset(
        ("id", "loja_id", "codigo_interno", "nome", "descricao", "valor_custo", "valor_venda",
         "estoque", "ativo")
    ),
    # valor_total is read but not sent: GestãoClick computes a venda's total from its items.
    "vendas": frozenset(
        ("id", "loja_id", "cliente_id", "data", "observacoes", "valor_total", "itens", "situacao")
    ),
}  # fmt: skip
"""Columns crmd maps itself (the reference schema's): see the payload builders."""

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class ColumnError(ValueError):
    """A source column that cannot be sent; the message names it."""


def unknown_columns(entidade: str, columns: Iterable[str]) -> list[str]:
    known = MAPPED[entidade] | EXTRA[entidade].keys()
    return [c for c in columns if c not in known]


def extras(entidade: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's documented extra fields, coerced; ColumnError for a column that is neither
    mapped nor documented, or whose value is not of its field's type."""
    unknown = unknown_columns(entidade, row)
    if unknown:
        raise ColumnError(
            f"coluna {unknown[0]!r} da consulta de {entidade} não é um campo do GestãoClick "
            f"(além das mapeadas, aceitas: {', '.join(sorted(EXTRA[entidade]))})"
        )
    out: dict[str, Any] = {}
    for name, spec in EXTRA[entidade].items():
        if name not in row:
            continue
        value = coerce(spec, row[name], name)
        if value is not None:
            out[name] = value
    return out


def coerce(spec: Spec, value: Any, name: str) -> Any:
    """The value as GestãoClick takes it; None when the field is to be left out. An empty
    scalar becomes "", which is how GestãoClick clears a value."""
    try:
        return _coerce(spec, value)
    except (ValueError, TypeError, ArithmeticError):
        raise ColumnError(f"coluna {name!r}: esperado {spec.kind.value}, veio {value!r}") from None


def _coerce(spec: Spec, value: Any) -> Any:
    kind = spec.kind
    if kind in (Kind.OBJECT, Kind.LIST, Kind.WRAPPED):
        if value is None:
            return None
        if isinstance(value, str):
            value = json.loads(value)
        if kind is Kind.OBJECT:
            if not isinstance(value, dict):
                raise TypeError
            return _strings(value)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise TypeError
        if kind is Kind.LIST:
            return [_strings(v) for v in value]
        return [_wrap(spec.wrapper, v) for v in value]
    if value is None or (isinstance(value, str) and not value.strip()):
        return "" if kind in (Kind.TEXT, Kind.ID, Kind.DATE) else None
    if kind is Kind.TEXT:
        if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal | date):
            raise TypeError
        return value.isoformat() if isinstance(value, date) else str(value).strip()
    if kind is Kind.ID:
        text = str(value).strip()
        if isinstance(value, bool) or not text.isdigit():
            raise ValueError
        return text
    if kind is Kind.DATE:
        if isinstance(value, datetime):
            return value.date().isoformat()
        if isinstance(value, date):
            return value.isoformat()
        if not isinstance(value, str) or not _DATE.fullmatch(value.strip()):
            raise ValueError
        return date.fromisoformat(value.strip()).isoformat()
    if kind is Kind.FLAG:
        return flag(value)
    number = decimal(value)
    return f"{number:.4f}" if kind is Kind.MONEY else format(number.normalize(), "f")


def decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise TypeError
    number = Decimal(str(value).strip())
    if not number.is_finite():
        raise InvalidOperation
    return number


def flag(value: Any) -> str:
    if value in (True, 1, "1", "t", "true", "S", "s"):
        return "1"
    if value in (False, 0, "0", "f", "false", "N", "n"):
        return "0"
    raise ValueError


def _wrap(wrapper: str, element: dict[str, Any]) -> dict[str, Any]:
    inner = element.get(wrapper) if len(element) == 1 else None
    return {wrapper: _strings(inner if isinstance(inner, dict) else element)}


def _strings(value: Any) -> Any:
    """JSON as GestãoClick writes it: numbers and flags as strings, nulls as ""."""
    if isinstance(value, dict):
        return {k: _strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strings(v) for v in value]
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float | Decimal):
        return str(value)
    return value
