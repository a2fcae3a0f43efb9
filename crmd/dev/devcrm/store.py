"""In-memory records of one GestãoClick account: clientes, produtos, vendas, and its catalogue.

The catalogue is what an account has before anyone syncs to it: its situações de venda (ids of
its own, each with a `tipo_lancamento`), its lojas (the first is the matriz, where a record sent
without `loja_id` goes) and optionally vendas of its own, numbered 1..N by the account, as a real
account that has been in use for a while holds. How each resource is validated and shaped is in
`crmd.dev.devcrm.rules`.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from crmd.dev.devcrm import rules
from crmd.dev.devcrm.rules import ValidationFailed

JsonObject = dict[str, Any]

RESOURCES = ("clientes", "produtos", "vendas")
CATALOGUES = ("situacoes_vendas", "lojas")
"""Read-only lists of the account: GET only."""

SITUACOES: tuple[tuple[str, str, str], ...] = (
    ("3150", "Em aberto", "0"),
    ("3151", "Concretizada", "1"),
    ("3152", "Cancelada", "0"),
)
"""(id, nome, tipo_lancamento): ids are the account's own, so "1" is not one of them. Here
tipo_lancamento "1" stands for a situação that moves stock and money, "0" for one that does not."""
LOJAS: tuple[tuple[str, str], ...] = (("7201", "Matriz"), ("7202", "Filial Centro"))
"""(id, nome); the first is the matriz."""
TIPO_VALOR = {"tipo_id": "90858", "nome_tipo": "Varejo"}
"""The account's default price type, which `valor_venda` is when a produto has no `valores`."""

_SERVER_FIELDS = ("id", "cadastrado_em", "modificado_em")


class RecordNotFound(Exception):
    """No record with that id in that resource."""


class Store:
    """Records per resource, keyed by integer id; ids start at 1 and are never reused."""

    def __init__(
        self,
        situacoes: Sequence[tuple[str, str, str]] = SITUACOES,
        lojas: Sequence[tuple[str, str]] = LOJAS,
        existing_vendas: int = 0,
    ) -> None:
        if not situacoes or not lojas:
            raise ValueError("the account needs at least one situação and one loja")
        self.account = rules.Account(
            situacoes={i: {"id": i, "nome": n, "tipo_lancamento": t} for i, n, t in situacoes},
            lojas={i: {"id": i, "nome": n} for i, n in lojas},
            matriz=lojas[0][0],
            tipo_valor=dict(TIPO_VALOR),
        )
        self.existing_vendas = existing_vendas
        self._records: dict[str, dict[int, JsonObject]] = {r: {} for r in RESOURCES}
        self._last_id: dict[str, int] = dict.fromkeys(RESOURCES, 0)
        self._last_codigo = 0
        self.clear()

    def clear(self) -> None:
        """Forget every record and start ids at 1 again (then the account's own vendas)."""
        for resource in RESOURCES:
            self._records[resource].clear()
            self._last_id[resource] = 0
        self._last_codigo = 0
        if self.existing_vendas:
            self.seed_vendas(self.existing_vendas)

    def dump(self) -> JsonObject:
        """The records and counters, as JSON data (`crmd dev crm --state`)."""
        return {
            "records": {r: list(self._records[r].values()) for r in RESOURCES},
            "last_id": dict(self._last_id),
            "last_codigo": self._last_codigo,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Back to what `dump` saved: the same records under the same ids, so a crmd whose
        crm_sync_map points at them finds them again after a restart."""
        for resource in RESOURCES:
            rows = state["records"].get(resource, [])
            self._records[resource] = {int(r["id"]): r for r in rows}
            self._last_id[resource] = int(state["last_id"].get(resource, 0))
        self._last_codigo = int(state.get("last_codigo", 0))

    def seed_vendas(self, count: int) -> list[JsonObject]:
        """Vendas the account made itself, numbered by it, of a cliente crmd never sent."""
        other = self.create(
            "clientes", {"tipo_pessoa": "PF", "nome": "Cliente de outra origem", "ativo": "1"}
        )
        situacao = next(iter(self.account.situacoes))
        today = dt.date.today().isoformat()
        body = {"cliente_id": other["id"], "data": today, "situacao_id": situacao}
        return [self.create("vendas", body) for _ in range(count)]

    def create(self, resource: str, body: object) -> JsonObject:
        fields = _object(body)
        rules.check_required(resource, fields)
        record = self._normalise(resource, fields, None)
        if resource == "vendas":
            record["codigo"] = self._codigo(record.get("codigo"))
        self._last_id[resource] += 1
        record_id = self._last_id[resource]
        stamp = rules.timestamp()
        record = {"id": str(record_id), **record, "cadastrado_em": stamp, "modificado_em": stamp}
        self._records[resource][record_id] = record
        return copy.deepcopy(record)

    def update(self, resource: str, record_id: str, body: object) -> JsonObject:
        """Every required field must be sent again; optional fields not sent keep their
        values (a field sent as "" is cleared)."""
        key = self._key(resource, record_id)
        fields = _object(body)
        rules.check_required(resource, fields)
        old = self._records[resource][key]
        record = self._normalise(resource, {**old, **fields}, old)
        if resource == "vendas":
            record["codigo"] = str(record.get("codigo") or old["codigo"])
        record = {"id": old["id"], **record}
        record["cadastrado_em"] = old["cadastrado_em"]
        record["modificado_em"] = rules.timestamp()
        self._records[resource][key] = record
        return copy.deepcopy(record)

    def delete(self, resource: str, record_id: str) -> None:
        del self._records[resource][self._key(resource, record_id)]

    def get(self, resource: str, record_id: str) -> JsonObject:
        if resource in CATALOGUES:
            found = self._catalogue(resource).get(record_id)
            if found is None:
                raise RecordNotFound(f"{resource}/{record_id}")
            return copy.deepcopy(found)
        return copy.deepcopy(self._records[resource][self._key(resource, record_id)])

    def all(self, resource: str) -> list[JsonObject]:
        """Every record of `resource` in id order, whatever its loja."""
        if resource in CATALOGUES:
            return copy.deepcopy(list(self._catalogue(resource).values()))
        return [copy.deepcopy(r) for _, r in sorted(self._records[resource].items())]

    def find(
        self, resource: str, filters: Mapping[str, str], *, loose: bool = False
    ) -> list[JsonObject]:
        """Records in id order that match the list filters GestãoClick offers for `resource`.

        A list is of one loja: `loja_id`, else the matriz. With `loose`, text filters match any
        value that contains them, as some list filters have been seen to.
        """
        if resource in CATALOGUES:
            return self.all(resource)

        def same(wanted: str, value: object) -> bool:
            value = "" if value is None else str(value)
            return bool(wanted) and (wanted in value if loose else wanted == value)

        loja_id = filters.get("loja_id") or self.account.matriz
        matches: list[Callable[[JsonObject], bool]] = [lambda r: r["loja_id"] == loja_id]
        if resource == "clientes" and "cpf_cnpj" in filters:
            wanted = rules.digits(filters["cpf_cnpj"])
            matches.append(lambda r: any(same(wanted, rules.digits(r[f])) for f in ("cpf", "cnpj")))
        if resource == "clientes" and "situacao" in filters:
            matches.append(lambda r: r["ativo"] == filters["situacao"])
        if resource == "produtos" and "codigo" in filters:
            matches.append(lambda r: same(filters["codigo"], r["codigo_interno"]))
        if resource == "vendas" and "codigo" in filters:
            matches.append(lambda r: same(filters["codigo"], r["codigo"]))
        return [r for r in self.all(resource) if all(m(r) for m in matches)]

    def _catalogue(self, resource: str) -> Mapping[str, JsonObject]:
        return self.account.situacoes if resource == "situacoes_vendas" else self.account.lojas

    def _codigo(self, sent: object) -> str:
        """The venda's number: the one sent, else the account's next one."""
        if sent in (None, ""):
            self._last_codigo += 1
            return str(self._last_codigo)
        codigo = str(sent)
        if codigo.isdigit():
            self._last_codigo = max(self._last_codigo, int(codigo))
        return codigo

    def _key(self, resource: str, record_id: str) -> int:
        key = int(record_id) if record_id.isdigit() else -1
        if key not in self._records[resource]:
            raise RecordNotFound(f"{resource}/{record_id}")
        return key

    def _normalise(self, resource: str, body: JsonObject, old: JsonObject | None) -> JsonObject:
        fields = {k: v for k, v in body.items() if k not in _SERVER_FIELDS}
        loja_id = rules.loja(fields, old, self.account)
        if resource == "clientes":
            record = rules.cliente(fields)
        elif resource == "produtos":
            record = rules.produto(fields, old, self.account)
        else:
            record = rules.venda(fields, self._records, self.account)
        return {**record, "loja_id": loja_id}


def _object(body: object) -> JsonObject:
    if not isinstance(body, dict):
        raise ValidationFailed("O corpo da requisição deve ser um objeto JSON")
    return body
