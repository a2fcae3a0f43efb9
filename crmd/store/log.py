"""`crm_sync_log` rows that no queue item settles: the lookups of `crmd plan --lookups`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from crmd.store.sql import queries


@dataclass(frozen=True, slots=True)
class Lookup:
    """One lookup sent to the CRM: about which record, what came back, what it cost."""

    conta: str
    loja_id: int
    entidade: str
    entidade_id: int
    ok: bool
    http_status: int | None
    mensagem: str
    external_id: str | None
    requests: int
    duration_ms: int


async def record_lookups(conn: asyncpg.Connection, lookups: Sequence[Lookup]) -> None:
    """One log row per lookup, in one statement."""
    if not lookups:
        return
    await conn.execute(
        queries["log_lookups"],
        [x.conta for x in lookups],
        [x.loja_id for x in lookups],
        [x.entidade for x in lookups],
        [x.entidade_id for x in lookups],
        ["sucesso" if x.ok else "erro" for x in lookups],
        [x.http_status for x in lookups],
        [x.mensagem for x in lookups],
        [x.external_id for x in lookups],
        [x.requests for x in lookups],
        [x.duration_ms for x in lookups],
    )
