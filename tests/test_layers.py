"""The package's shape: imports go down the layers only, and no module imports itself back.

Read from the source with `ast` (nothing is imported), counting every import, also those inside
functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "crmd"

# Lowest first. A module may import its own layer and those below, never one above; the two
# layers of rank 2 (the store and the CRM side) know nothing of each other.
LAYERS: dict[str, int] = {
    "crmd": 0,
    "crmd.model": 0,
    "crmd.aio": 0,
    "crmd.dsn": 0,
    "crmd.ptbr": 0,
    "crmd.config": 1,
    "crmd.store": 2,
    "crmd.crm": 2,
    "crmd.engine": 3,
    "crmd.ops": 4,
    "crmd.service": 5,
    "crmd.admin": 6,
    "crmd.dev": 7,
    "crmd.cli": 8,
    "crmd.__main__": 9,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The crmd modules `path` imports (`from crmd.x import y` counts crmd.x.y when y is one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("crmd"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("crmd"):
            assert node.level == 0, f"{path}: use absolute imports"
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, known) - {name} for name, path in mods.items()}


def layer(module: str) -> tuple[str, int]:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return best, LAYERS[best]


def test_every_module_belongs_to_a_layer() -> None:
    for name in modules():
        assert layer(name)[0] != "crmd" or name == "crmd", f"{name} is in no layer"


def test_imports_only_go_down_the_layers() -> None:
    wrong = []
    for name, deps in graph().items():
        home, rank = layer(name)
        for dep in deps:
            dep_home, dep_rank = layer(dep)
            if dep_rank > rank or (dep_rank == rank and dep_home != home and dep_home != "crmd"):
                wrong.append(f"{name} -> {dep}")
    assert not wrong, "imports up (or across) the layers:\n" + "\n".join(sorted(wrong))


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    "call", [".fetch(", ".fetchrow(", ".fetchval(", ".execute(", ".executemany(", ".copy_"]
)
def test_only_the_store_and_the_dev_tools_run_sql(call: str) -> None:
    runs = [
        name
        for name, path in modules().items()
        if layer(name)[0] not in ("crmd.store", "crmd.dev")
        and call in path.read_text(encoding="utf-8")
    ]
    assert not runs, f"{call} outside crmd/store: {runs}"
