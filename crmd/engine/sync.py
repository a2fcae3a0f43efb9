"""The per-item protocol: what one claimed item costs at the CRM, ending in an Outcome.

    upsert: known CRM id -> PUT (gone -> create again); unknown -> look up by natural key ->
            link and PUT, or create (the intent committed first, so a crash cannot duplicate)
    delete: DELETE (already gone counts as done)
    venda:  its cliente and produtos must have CRM ids first; missing ones are put ahead in the
            queue and the venda waits, without spending an attempt

CRM errors become outcomes here: a 429 or an authentication failure pauses the whole account
and gives the attempt back; a run of retryable failures opens the account's breaker.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
import structlog

from crmd.config import Settings
from crmd.crm.errors import CrmError, ErrorKind
from crmd.crm.providers.base import Prepared
from crmd.crm.transport import counting
from crmd.engine.work import Work
from crmd.model import NewItem, Outcome
from crmd.store import mapping, queue

log = structlog.get_logger("crmd.engine")


def payload_hash(payload: Mapping[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Syncer:
    """Sends one item at a time; `pool` and `settings` are read at each call (a reload swaps
    them)."""

    def __init__(self, pool: Callable[[], asyncpg.Pool], settings: Callable[[], Settings]) -> None:
        self._pool = pool
        self._settings = settings

    async def process(self, work: Work) -> Outcome:
        """The item's outcome, with the requests it sent and how long it took."""
        count = counting()
        start = time.perf_counter()
        try:
            outcome = await self._send(work)
        except CrmError as exc:
            outcome = self._on_error(work, exc)
        except Exception as exc:  # a bad row or a bug: this item fails, the engine goes on
            item = work.item
            log.exception(
                "item_error", queue_id=item.id, entidade=item.entidade, entidade_id=item.entidade_id
            )
            outcome = Outcome.failed(f"erro interno: {type(exc).__name__}: {exc}", retryable=True)
        if outcome.success:
            work.account.answered()
        outcome.requests = count.sent
        if outcome.http_status is None and count.statuses:
            outcome.http_status = count.statuses[-1]
        outcome.duration_ms = int((time.perf_counter() - start) * 1000)
        return outcome

    async def _send(self, work: Work) -> Outcome:
        item, account, provider = work.item, work.account, work.account.provider
        if not provider.supports(item.entidade):
            return Outcome.failed(
                f"{item.entidade} não é suportado pelo provedor {provider.name}", retryable=False
            )
        if item.acao == "delete" or work.row is None:
            return await self._delete(work)
        needs = provider.dependencies(item.entidade, work.row).items
        resolved = await self._resolve(account.name, needs) if needs else {}
        missing = [n for n in needs if n not in resolved]
        if missing:
            return await self._wait_for(work, missing)
        prepared = provider.build(item.entidade, work.row, resolved)
        digest = payload_hash(prepared.payload)
        unchanged = work.external_id and work.payload_hash == digest
        if unchanged and self._settings().sync.skip_unchanged:
            assert work.external_id is not None
            return Outcome.synced(work.external_id, digest, "sem alterações desde o último envio")
        return await self._upsert(work, prepared, digest)

    async def _upsert(self, work: Work, prepared: Prepared, digest: str) -> Outcome:
        entidade, provider = work.item.entidade, work.account.provider
        if work.external_id:
            try:
                await provider.update(entidade, work.external_id, prepared.payload)
                return Outcome.synced(work.external_id, digest, "atualizado")
            except CrmError as exc:
                if exc.kind is not ErrorKind.NOT_FOUND:
                    raise
            new_id = await self._create(work, prepared)
            return Outcome.synced(
                new_id, digest, f"recriado (o registro {work.external_id} sumiu do CRM)"
            )
        # Unknown to us: the CRM may still have it (created by hand, or by an attempt that died
        # before storing the id). Look it up by its natural key before creating a second one.
        lookup = work.create_unsure or self._settings().sync.lookup_unknown
        if prepared.natural_key and lookup:
            found = await provider.find(entidade, prepared.natural_key, prepared.scope)
            if found:
                await provider.update(entidade, found, prepared.payload)
                return Outcome.synced(found, digest, "vinculado a registro existente e atualizado")
        new_id = await self._create(work, prepared)
        return Outcome.synced(new_id, digest, "criado")

    async def _create(self, work: Work, prepared: Prepared) -> str:
        item = work.item
        async with self._pool().acquire() as conn:
            await mapping.mark_creating(conn, work.account.name, item.entidade, item.entidade_id)
        return await work.account.provider.create(item.entidade, prepared.payload)

    async def _delete(self, work: Work) -> Outcome:
        if not work.external_id:
            return Outcome.removed("não existe no CRM; nada a remover")
        try:
            await work.account.provider.delete(work.item.entidade, work.external_id)
        except CrmError as exc:
            if exc.kind is not ErrorKind.NOT_FOUND:
                raise
            return Outcome.removed("já não existia no CRM")
        return Outcome.removed("removido")

    async def _resolve(
        self, conta: str, needs: tuple[tuple[str, int], ...]
    ) -> dict[tuple[str, int], str]:
        async with self._pool().acquire() as conn:
            return await mapping.resolve(conn, conta, needs)

    async def _wait_for(self, work: Work, missing: list[tuple[str, int]]) -> Outcome:
        """Put the records this one needs ahead in the queue and try it again shortly, without
        spending its attempts; a bounded number of times, so a broken dependency cannot hold it
        forever."""
        item, sync = work.item, self._settings().sync
        names = ", ".join(f"{e} {i}" for e, i in missing)
        if item.adiamentos >= sync.max_dependency_waits:
            return Outcome.failed(
                f"dependências não sincronizadas após {item.adiamentos} esperas: {names}",
                retryable=False,
            )
        async with self._pool().acquire() as conn:
            await queue.enqueue_many(
                conn,
                [NewItem(item.loja_id, e, i, prioridade=item.prioridade + 1) for e, i in missing],
            )
        log.info(
            "waiting_for_dependencies",
            queue_id=item.id,
            entidade=item.entidade,
            entidade_id=item.entidade_id,
            missing=names,
        )
        # Waits grow (2 s, 4 s, 8 s ... up to 5 min): under a tight rate limit a long backlog
        # may stand between the venda and its cliente.
        delay = min(sync.dependency_wait_seconds * 2**item.adiamentos, 300.0)
        return Outcome.deferred(f"aguardando {names}", delay)

    def _on_error(self, work: Work, exc: CrmError) -> Outcome:
        account, sync = work.account, self._settings().sync
        if exc.kind is ErrorKind.RATE_LIMITED:
            seconds = account.pause(
                1.0, sync.max_pause_seconds, f"429: {exc.message}", exact=exc.retry_after
            )
            return Outcome.postponed(
                f"limite do CRM (429): {exc.message}", seconds, http_status=exc.http_status
            )
        if exc.kind is ErrorKind.AUTH:
            seconds = account.pause(
                sync.auth_pause_seconds,
                sync.max_pause_seconds,
                f"autenticação recusada ({exc.http_status}): {exc.message}",
            )
            return Outcome.postponed(
                f"autenticação recusada: {exc.message}", seconds, http_status=exc.http_status
            )
        if exc.kind is ErrorKind.RETRYABLE:
            account.consecutive_failures += 1
            if account.consecutive_failures >= sync.breaker_threshold:
                account.consecutive_failures = 0
                account.pause(
                    sync.failure_pause_seconds,
                    sync.max_pause_seconds,
                    f"{sync.breaker_threshold} falhas seguidas: {exc.message}",
                )
            return Outcome.failed(exc.message, retryable=True, http_status=exc.http_status)
        account.answered()
        return Outcome.failed(exc.message, retryable=False, http_status=exc.http_status)
