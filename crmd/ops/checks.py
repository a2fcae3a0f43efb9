"""Checking an operator's request before anything runs; the message names the bad input."""

from __future__ import annotations

from crmd.model import ENTITIES


class InvalidRequest(ValueError):
    """An operator's request that cannot be carried out as asked; the message says why."""


def check_entity(entidade: str) -> str:
    if entidade not in ENTITIES:
        raise InvalidRequest(
            f"entidade desconhecida {entidade!r}; as entidades são {', '.join(ENTITIES)}"
        )
    return entidade


def check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{name} deve ser um inteiro de {low} a {high}, não {value!r}")
    return value
