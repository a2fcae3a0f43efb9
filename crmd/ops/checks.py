"""Checking an operator's request before anything runs; the message names the bad input."""

from __future__ import annotations

from crmd.model import ENTITIES


class InvalidRequest(ValueError):
    """An operator's request that cannot be carried out as asked; the message says why."""


def check_entity(entidade: str) -> str:
    if entidade not in ENTITIES:
        raise InvalidRequest(
            f"unknown entidade {entidade!r}; expected one of {', '.join(ENTITIES)}"
        )
    return entidade


def check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}, not {value!r}")
    return value
