"""One chaos scenario's result: a line of figures, and whether every invariant held."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    name: str
    line: str
    holds: bool
    detail: Any = None
    seconds: float = 0.0
