"""ERP rows as GestãoClick payloads: clientes, produtos and vendas.

Every payload is complete, as a PUT must be (it requires the POST's fields): a field that is
empty in the ERP is sent as "", which is how GestãoClick clears a value, instead of being left
out, which would keep the old one. Money keeps the ERP's 4 decimals. A produto's sale price goes
in `valores` (a PUT without it leaves the price as it was). `loja_id` and `situacao_id` are the
account's own ids, mapped from the ERP's in the config; nothing is guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from crmd.config import CrmAccountSettings
from crmd.crm.errors import CrmError, ErrorKind
from crmd.crm.providers.base import Prepared, Row
from crmd.crm.providers.gestaoclick import fields

_ADDRESS = {
    "cep": "cep",
    "logradouro": "logradouro",
    "numero": "numero",
    "complemento": "complemento",
    "bairro": "bairro",
    "cidade": "nome_cidade",
    "uf": "estado",
}
"""Reference-schema column -> field of a cliente's endereco."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Endereco(_Model):
    cep: str = ""
    logradouro: str = ""
    numero: str = ""
    complemento: str = ""
    bairro: str = ""
    nome_cidade: str = ""
    estado: str = ""


class Cliente(_Model):
    tipo_pessoa: Literal["PF", "PJ", "ES"]
    nome: str
    razao_social: str = ""
    cpf: str = ""
    cnpj: str = ""
    email: str = ""
    telefone: str = ""
    celular: str = ""
    data_nascimento: str = ""
    ativo: Literal["0", "1"] = "1"
    loja_id: str | None = None
    enderecos: list[dict[Literal["endereco"], Endereco]] | None = None


class Valor(_Model):
    tipo_id: str | None = None
    valor_venda: str


class Produto(_Model):
    nome: str
    codigo_interno: str
    valor_custo: str
    valor_venda: str
    valores: list[Valor]
    estoque: str
    descricao: str = ""
    ativo: Literal["0", "1"] = "1"
    loja_id: str | None = None


class ItemVenda(_Model):
    produto_id: str
    quantidade: str
    valor_venda: str


class Venda(_Model):
    codigo: str | None = None
    cliente_id: str
    data: str
    situacao_id: str
    observacoes: str = ""
    loja_id: str | None = None
    produtos: list[dict[Literal["produto"], ItemVenda]]


def text(value: Any) -> str:
    """The value as GestãoClick text; "" for an empty one."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value).strip()


def money(value: Any) -> str:
    """4 decimals, as the ERP keeps and GestãoClick answers ("80.0000")."""
    return f"{fields.decimal(value if value not in (None, '') else 0):.4f}"


def number(value: Any) -> str:
    return format(fields.decimal(value if value not in (None, "") else 0).normalize(), "f")


def digits(value: str | None) -> str:
    return re.sub(r"\D", "", value or "")


class Payloads:
    """The builders, with the account's ids for the ERP's lojas and situações."""

    def __init__(self, section: str, settings: CrmAccountSettings) -> None:
        self.section = section
        self.situacoes = dict(settings.situacoes)
        self.situacao_padrao = settings.venda_situacao_id
        self.lojas = dict(settings.lojas_crm)
        self.codigo_prefix = settings.venda_codigo_prefix
        self.valor_tipo_id = settings.produto_valor_tipo_id or None

    def venda_codigo(self, venda_id: Any) -> str | None:
        """Our codigo for an ERP venda: in a namespace GestãoClick's own numbers (digits only)
        never enter, so a venda found with it is ours. None: no prefix, no codigo sent."""
        return f"{self.codigo_prefix}{venda_id}" if self.codigo_prefix else None

    def loja(self, row: Row) -> str | None:
        """The account's loja for the row's ERP loja; None (the matriz) when none are mapped."""
        if not self.lojas:
            return None
        erp = row.get("loja_id")
        try:
            return self.lojas[int(str(erp))]
        except (KeyError, TypeError, ValueError):
            raise CrmError(
                ErrorKind.PERMANENT,
                f"a loja {erp} do ERP não está em [{self.section}.lojas_crm]; sem ela o "
                "registro iria para a matriz",
            ) from None

    def cliente(self, row: Row) -> Prepared:
        extra = fields.extras("clientes", row)
        loja = self.loja(row)
        cliente = Cliente(
            tipo_pessoa=row.get("tipo_pessoa") or "PF",
            nome=text(row["nome"]),
            razao_social=text(row.get("razao_social")),
            cpf=text(row.get("cpf")),
            cnpj=text(row.get("cnpj")),
            email=text(row.get("email")),
            telefone=text(row.get("telefone")),
            celular=text(row.get("celular")),
            data_nascimento=text(row.get("data_nascimento")),
            ativo=fields.flag(row.get("ativo", True)),
            loja_id=loja,
            enderecos=self._endereco(row),
        )
        key = digits(cliente.cpf) or digits(cliente.cnpj) or None
        payload = {**cliente.model_dump(exclude_none=True), **extra}
        return Prepared(payload, key, _scope(loja))

    def _endereco(self, row: Row) -> list[dict[Literal["endereco"], Endereco]] | None:
        """One endereco from the reference schema's columns, when any of them holds a value."""
        values = {f: text(row.get(column)) for column, f in _ADDRESS.items()}
        if not any(values.values()):
            return None
        return [{"endereco": Endereco(**values)}]

    def produto(self, row: Row) -> Prepared:
        extra = fields.extras("produtos", row)
        loja = self.loja(row)
        price = money(row.get("valor_venda"))
        produto = Produto(
            nome=text(row["nome"]),
            codigo_interno=text(row["codigo_interno"]),
            valor_custo=money(row.get("valor_custo")),
            valor_venda=price,
            valores=[Valor(tipo_id=self.valor_tipo_id, valor_venda=price)],
            estoque=number(row.get("estoque")),
            descricao=text(row.get("descricao")),
            ativo=fields.flag(row.get("ativo", True)),
            loja_id=loja,
        )
        payload = {**produto.model_dump(exclude_none=True), **extra}
        return Prepared(payload, produto.codigo_interno or None, _scope(loja))

    def venda(self, row: Row, resolved: Mapping[tuple[str, int], str]) -> Prepared:
        extra = fields.extras("vendas", row)
        loja = self.loja(row)
        itens = [
            {
                "produto": ItemVenda(
                    produto_id=resolved[("produtos", int(i["produto_id"]))],
                    quantidade=number(i["quantidade"]),
                    valor_venda=money(i["valor_venda"]),
                )
            }
            for i in row.get("itens") or []
        ]
        venda = Venda(
            codigo=self.venda_codigo(row["id"]),
            cliente_id=resolved[("clientes", int(row["cliente_id"]))],
            data=text(row["data"]),
            situacao_id=extra.pop("situacao_id", "") or self._situacao(row),
            observacoes=text(row.get("observacoes")),
            loja_id=loja,
            produtos=itens,
        )
        payload = {**venda.model_dump(exclude_none=True), **extra}
        return Prepared(payload, venda.codigo, _scope(loja))

    def _situacao(self, row: Row) -> str:
        """The account's situação for the row's ERP situação, else the configured default."""
        erp = text(row.get("situacao"))
        if erp:
            if erp in self.situacoes:
                return self.situacoes[erp]
            raise CrmError(
                ErrorKind.PERMANENT,
                f"a situação {erp!r} do ERP não está em [{self.section}.situacoes]",
            )
        if self.situacao_padrao:
            return self.situacao_padrao
        raise CrmError(
            ErrorKind.PERMANENT,
            f"venda sem situação: defina [{self.section}] venda_situacao_id (um id de "
            "GET /situacoes_vendas) ou mapeie as situações do ERP em "
            f"[{self.section}.situacoes]",
        )


def _scope(loja: str | None) -> dict[str, str]:
    return {"loja_id": loja} if loja else {}
