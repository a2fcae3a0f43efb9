"""What every scenario receives (`Context`) and returns (`Outcome`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.pg import PgServer


@dataclass(frozen=True)
class Context:
    pg: PgServer
    tmp: Path  # a scratch directory for configs and child logs, removed at the end
    quick: bool
    shared: dict[str, Any] = field(default_factory=dict)
    """Figures one scenario leaves for a later one (crmd's peak RSS during throughput)."""


@dataclass(frozen=True)
class Goal:
    text: str
    met: bool
    measured: str


@dataclass
class Outcome:
    name: str
    title: str
    rows: list[tuple[str, ...]] = field(default_factory=list)
    """A small table: the first row is the header."""
    figures: dict[str, Any] = field(default_factory=dict)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def goal(self, text: str, met: bool, measured: str) -> None:
        self.goals.append(Goal(text, met, measured))

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "seconds": round(self.seconds, 1),
            "figures": self.figures,
            "goals": [{"goal": g.text, "met": g.met, "measured": g.measured} for g in self.goals],
            "notes": self.notes,
        }


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")
