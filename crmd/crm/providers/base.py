"""What a CRM provider does for crmd.

A provider turns an ERP row into the CRM's payload and performs four operations per entity:
create, update, delete, and find by natural key (the key that identifies a record without its CRM
id: a cliente's CPF/CNPJ, a produto's code). The engine decides which to call; the provider knows
the CRM's paths, shapes and error conventions. Adding a CRM means one new module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from crmd.crm.transport import Transport

Row = Mapping[str, Any]
Payload = dict[str, Any]


@dataclass(frozen=True)
class Dependencies:
    """Records that must exist in the CRM before this one can be sent (a venda's cliente)."""

    items: tuple[tuple[str, int], ...] = ()


@dataclass
class Prepared:
    """A record ready to send: its payload, and the natural key it can be found by."""

    payload: Payload
    natural_key: str | None


class Provider(Protocol):
    name: str
    transport: Transport

    def supports(self, entidade: str) -> bool: ...

    def dependencies(self, entidade: str, row: Row) -> Dependencies:
        """ERP records (entidade, id) whose CRM ids the payload of `row` needs."""
        ...

    def build(self, entidade: str, row: Row, resolved: Mapping[tuple[str, int], str]) -> Prepared:
        """The CRM payload for `row`; `resolved` maps each dependency to its CRM id.

        Raises CrmError(PERMANENT) when the row cannot be expressed in the CRM's terms.
        """
        ...

    async def create(self, entidade: str, payload: Payload) -> str:
        """Create the record; returns its CRM id."""
        ...

    async def update(self, entidade: str, external_id: str, payload: Payload) -> None:
        """Raises CrmError(NOT_FOUND) when the CRM no longer has the record."""
        ...

    async def delete(self, entidade: str, external_id: str) -> None:
        """Raises CrmError(NOT_FOUND) when the record is already gone."""
        ...

    async def find(self, entidade: str, natural_key: str) -> str | None:
        """The CRM id of the record with this natural key, if the CRM has one."""
        ...
