"""Every statement crmd runs, by name: the `-- name: x` blocks of the .sql files beside this
module, loaded once.

A reader finds each query in one place, with the comment that explains it; names are unique
across the files, so `queries["claim"]` needs no file name.
"""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _load() -> dict[str, str]:
    found: dict[str, str] = {}
    folder = resources.files("crmd.store.sql")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        parts = _NAME.split(entry.read_text(encoding="utf-8"))
        # parts = [preamble, name1, body1, name2, body2, ...]
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in found:
                raise RuntimeError(f"query {name!r} is defined twice (sql/{entry.name})")
            found[name] = body.strip()
    return found


queries: dict[str, str] = _load()
