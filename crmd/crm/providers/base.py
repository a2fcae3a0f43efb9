"""What a CRM provider does for crmd.

A provider turns an ERP row into the CRM's payload and performs five operations per entity:
create, update, delete, inactivate, and find by natural key (the key that identifies a record
without its CRM id: a cliente's CPF/CNPJ, a produto's code). The engine decides which to call;
the provider knows the CRM's paths, shapes and error conventions. Adding a CRM means one new
module.

Beside the flow, a provider answers the questions an operator asks before and while syncing
(`crmd check-config`, `crmd doctor`): which source columns it cannot send, whether the account's
own ids in the config exist, and whether a base URL answers with the account's tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
    """A record ready to send: its payload, and the natural key it can be found by.

    `scope` narrows a lookup by that key to where the record lives in the CRM (GestãoClick: its
    loja); pass it to `find` with the key.
    """

    payload: Payload
    natural_key: str | None
    scope: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Probe:
    """Whether a base URL answers as the CRM's API, and whether it took the account's tokens."""

    base_url: str
    answers: bool
    accepted: bool
    status: int | None
    message: str


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

    async def inactivate(self, entidade: str, external_id: str) -> None:
        """Keep the record but mark it inactive (`[sync] on_delete = "inactivate"`, the record
        deleted in the ERP). Raises CrmError(NOT_FOUND) when it is gone, PERMANENT when the
        config lacks what it takes (a venda's cancel situação)."""
        ...

    async def find(
        self, entidade: str, natural_key: str, scope: Mapping[str, str] | None = None
    ) -> str | None:
        """The CRM id of the record with this natural key (within `scope`, the `Prepared`'s),
        if the CRM has one that provably is that record; None otherwise."""
        ...

    def check_columns(self, entidade: str, columns: Iterable[str]) -> list[str]:
        """Problems with a source query's columns (those the CRM has no field for), as
        messages naming each column; [] when every column can be sent."""
        ...

    async def check_account(self) -> list[str]:
        """Problems with the CRM ids in the account's config (ids the account does not have),
        as messages naming each config key; [] when all of them exist. Costs a few requests."""
        ...

    async def probe(self, base_url: str | None = None) -> Probe:
        """Ask `base_url` (the configured one by default) one cheap question with the
        account's tokens. Costs one request of the account's budget."""
        ...
