"""Named SQL blocks (`-- name: x`) from the files in `crmd/sql/`, loaded once.

`queries` holds every query crmd runs against its own tables; `sources` the default queries that
read ERP records. A reader finds every statement in those two files.
"""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load(filename: str) -> dict[str, str]:
    text = resources.files("crmd.store").joinpath("sql", filename).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


queries: dict[str, str] = load("queries.sql")
sources: dict[str, str] = load("sources.sql")
