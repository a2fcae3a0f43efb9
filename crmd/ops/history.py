"""One record's history: every attempt with its time, HTTP status, the CRM's message and the
requests it sent with their bodies; the record's open queue items and its CRM ids. `crmd
history`, `/api/history/...` and the record's page show this one type; "Enviar de novo" on the
page is `resend`.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import structlog
from pydantic import BaseModel

from crmd.model import NewItem
from crmd.ops.checks import InvalidRequest, check_entity, check_int
from crmd.store import history, queue

log = structlog.get_logger("crmd.ops")

MAX_ATTEMPTS_SHOWN = 500


class ExchangeReport(BaseModel):
    metodo: str
    caminho: str
    http_status: int | None
    duracao_ms: int | None
    enviado: str | None
    recebido: str | None


class AttemptReport(BaseModel):
    id: int
    criado_em: str
    queue_id: int | None
    conta: str
    loja_id: int
    acao: str
    tentativa: int
    status: str
    http_status: int | None
    mensagem: str | None
    external_id: str | None
    requisicoes: int
    duracao_ms: int | None
    trocas: list[ExchangeReport]


class OpenItemReport(BaseModel):
    id: int
    loja_id: int
    acao: str
    estado: str
    prioridade: int
    tentativas: int
    ultimo_erro: str | None
    criado_em: str
    proxima_tentativa: str


class LinkReport(BaseModel):
    conta: str
    external_id: str | None  # None: a create whose outcome nobody knows (criação incerta)
    chave: str | None
    sincronizado_em: str


class RecordHistory(BaseModel):
    entidade: str
    entidade_id: int
    timezone: str
    links: list[LinkReport]
    open_items: list[OpenItemReport]
    attempts: list[AttemptReport]


async def record_history(
    conn: asyncpg.Connection,
    entidade: str,
    entidade_id: int,
    *,
    contas: Sequence[str],
    timezone: str = "UTC",
    loja_id: int | None = None,
    limit: int = 50,
) -> RecordHistory:
    """What the log and the queue know of one ERP record, newest attempt first; `contas` are
    the configured accounts (where its CRM ids are looked for)."""
    check_entity(entidade)
    check_int("id", entidade_id, 1, 2**63 - 1)
    check_int("limit", limit, 1, MAX_ATTEMPTS_SHOWN)
    if loja_id is not None:
        check_int("loja", loja_id, 1, 2**31 - 1)
    rows = await history.attempts(conn, entidade, entidade_id, loja_id, limit)
    return RecordHistory(
        entidade=entidade,
        entidade_id=entidade_id,
        timezone=timezone,
        links=[
            LinkReport(
                conta=r["conta"],
                external_id=r["external_id"],
                chave=r["chave"],
                sincronizado_em=r["sincronizado_em"].isoformat(),
            )
            for r in await history.links(conn, entidade, entidade_id, contas)
        ],
        open_items=[
            OpenItemReport(
                **{
                    **dict(r),
                    "criado_em": r["criado_em"].isoformat(),
                    "proxima_tentativa": r["proxima_tentativa"].isoformat(),
                }
            )
            for r in await history.open_items(conn, entidade, entidade_id)
            if loja_id is None or r["loja_id"] == loja_id
        ],
        attempts=[
            AttemptReport(
                **{
                    **r,
                    "criado_em": r["criado_em"].isoformat(),
                    "trocas": [ExchangeReport(**t) for t in r["trocas"]],
                }
            )
            for r in rows
        ],
    )


async def resend(
    conn: asyncpg.Connection, entidade: str, entidade_id: int, loja_id: int | None = None
) -> str:
    """Send the record again: its failed item back to the queue with fresh attempts, or else a
    new item (coalesced with one that already waits). Returns what was done, for people."""
    check_entity(entidade)
    check_int("id", entidade_id, 1, 2**63 - 1)
    items = await history.open_items(conn, entidade, entidade_id)
    failed = [r["id"] for r in items if r["estado"] == "falhou"]
    if failed:
        revived, folded = await queue.retry_failed(conn, failed, None)
        log.info("resend", entidade=entidade, entidade_id=entidade_id, retried=revived + folded)
        return "o item com falha voltou para a fila"
    if loja_id is None:
        known = [r["loja_id"] for r in items]
        known += [
            r["loja_id"] for r in await history.attempts(conn, entidade, entidade_id, None, 1)
        ]
        if not known:
            raise InvalidRequest(
                f"{entidade} {entidade_id}: nenhuma tentativa nem item na fila diz a loja; "
                "informe a loja"
            )
        loja_id = known[0]
    created = await queue.enqueue_many(conn, [NewItem(loja_id, entidade, entidade_id)])
    log.info("resend", entidade=entidade, entidade_id=entidade_id, loja_id=loja_id)
    return "enfileirado" if created else "já estava na fila"
