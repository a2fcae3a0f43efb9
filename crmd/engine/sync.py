"""The per-item protocol: what one claimed item costs at the CRM, ending in an Outcome.

    upsert: known CRM id -> PUT (gone -> create again); unknown -> look up by natural key ->
            link and PUT, or create (the intent committed first, so a crash cannot duplicate)
    delete: inactivate (GET, PUT), DELETE or nothing, as [sync] on_delete says (already gone
            counts as done)
    unsupported entity (atividades at GestãoClick): "ignorado", or failed if so configured
    venda:  its cliente and produtos must have CRM ids first; missing ones are put ahead in the
            queue and the venda waits, without spending an attempt

CRM errors become outcomes here: a 429 or an authentication failure pauses the whole account
and gives the attempt back; a run of retryable failures opens the account's breaker.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import asyncpg
import structlog

from crmd.config import Settings
from crmd.crm.errors import CrmError, ErrorKind
from crmd.crm.providers.base import Prepared, Row
from crmd.crm.transport import counting
from crmd.engine.markers import CreateMarkers
from crmd.engine.work import Work
from crmd.model import NewItem, Outcome
from crmd.store import erp, mapping, queue

log = structlog.get_logger("crmd.engine")

# Items at this priority or below are bulk work (the weekly full sync enqueues at 1): they may use
# only `[crm] bulk_share` of each window, so live traffic is never starved by them.
BULK_PRIORITY = 1


def payload_hash(payload: Mapping[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Syncer:
    """Sends one item at a time; `pool` and `settings` are read at each call (a reload swaps
    them)."""

    def __init__(self, pool: Callable[[], asyncpg.Pool], settings: Callable[[], Settings]) -> None:
        self._pool = pool
        self._settings = settings
        self._markers = CreateMarkers(pool)

    async def process(self, work: Work) -> Outcome:
        """The item's outcome, with the requests it sent and how long it took."""
        count = work.count = counting()
        count.bulk = work.item.prioridade <= BULK_PRIORITY
        count.on_first_send = work.on_send
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
        outcome.exchanges = count.exchanges
        if outcome.http_status is None and count.exchanges:
            # The last request's status: None when it got no answer (an earlier lookup's 200
            # says nothing of the create that failed after it).
            outcome.http_status = count.exchanges[-1].status
        outcome.duration_ms = int((time.perf_counter() - start) * 1000)
        return outcome

    async def _send(self, work: Work) -> Outcome:
        item, account, provider = work.item, work.account, work.account.provider
        if not provider.supports(item.entidade):
            unsupported = f"{item.entidade} não é suportado pelo provedor {provider.name}"
            if self._settings().sync.on_unsupported == "fail":
                return Outcome.failed(unsupported, retryable=False)
            return Outcome.ignored(f"{unsupported}: ignorado ([sync] on_unsupported)")
        if item.acao == "delete" or work.row is None:
            return await self._delete(work)
        unusable = check_row(work.row)
        if unusable:
            return Outcome.failed(unusable, retryable=False)
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
                twin = await self._owner(work, found)
                if twin is not None:
                    return Outcome.failed(
                        f"o registro {found} do CRM, com a mesma chave ({prepared.natural_key}), "
                        f"já está vinculado a {entidade} {twin} do ERP; "
                        f"{entidade} {work.item.entidade_id} não foi vinculado nem enviado",
                        retryable=False,
                    )
                await provider.update(entidade, found, prepared.payload)
                return Outcome.synced(found, digest, "vinculado a registro existente e atualizado")
        elif work.create_unsure:
            # A create whose outcome is unknown, and no key to look the record up by: sending it
            # again could make a second one. A person checks the CRM (then `crmd retry`).
            return Outcome.failed(
                "criação incerta: um envio anterior pode ter criado o registro no CRM, e ele não "
                "tem chave (CPF/CNPJ, código) para ser procurado; confira no CRM e use crmd retry",
                retryable=False,
            )
        new_id = await self._create(work, prepared)
        return Outcome.synced(new_id, digest, "criado")

    async def _owner(self, work: Work, external_id: str) -> int | None:
        """Another ERP record this CRM record is already linked to (a twin), if any."""
        item = work.item
        async with self._pool().acquire() as conn:
            owner = await mapping.owner(conn, work.account.name, item.entidade, external_id)
        return None if owner in (None, item.entidade_id) else owner

    async def _create(self, work: Work, prepared: Prepared) -> str:
        item, conta = work.item, work.account.name
        await self._markers.mark((conta, item.entidade, item.entidade_id, prepared.natural_key))
        try:
            return await work.account.provider.create(item.entidade, prepared.payload)
        except CrmError as exc:
            # An error answer, or no connection at all: certainly not created.
            if (exc.http_status is not None and exc.http_status >= 300) or not exc.delivered:
                async with self._pool().acquire() as conn:
                    await mapping.not_created(conn, conta, item.entidade, item.entidade_id)
            raise

    async def _delete(self, work: Work) -> Outcome:
        """The record is gone from the ERP: its CRM record is inactivated, deleted or left as it
        is (`[sync] on_delete`). Inactivated or left, it stays linked, so a record that comes
        back is updated, not created again."""
        on_delete = self._settings().sync.on_delete
        if on_delete == "ignore":
            return Outcome.kept(
                work.external_id, 'exclusão ignorada ([sync] on_delete = "ignore"): nada enviado'
            )
        external_id = work.external_id
        if not external_id and work.create_unsure and work.unsure_key:
            # A create in doubt: the CRM may hold the record after all. Find it to delete it.
            external_id = await work.account.provider.find(work.item.entidade, work.unsure_key)
            if external_id and await self._owner(work, external_id) is not None:
                external_id = None  # another ERP record's: not ours to delete
        if not external_id:
            if work.create_unsure and not work.unsure_key:
                return Outcome.failed(
                    "criação incerta: um envio anterior pode ter criado o registro no CRM, sem "
                    "chave para procurá-lo; confira no CRM se ele deve ser removido",
                    retryable=False,
                )
            return Outcome.removed("não existe no CRM; nada a remover")
        provider = work.account.provider
        try:
            if on_delete == "delete":
                await provider.delete(work.item.entidade, external_id)
            else:
                await provider.inactivate(work.item.entidade, external_id)
        except CrmError as exc:
            if exc.kind is not ErrorKind.NOT_FOUND:
                raise
            return Outcome.removed("já não existia no CRM")
        if on_delete == "delete":
            return Outcome.removed("removido")
        return Outcome.kept(external_id, "inativado no CRM (excluído no ERP)")

    async def _resolve(
        self, conta: str, needs: tuple[tuple[str, int], ...]
    ) -> dict[tuple[str, int], str]:
        async with self._pool().acquire() as conn:
            return await mapping.resolve(conn, conta, needs)

    async def _wait_for(self, work: Work, missing: list[tuple[str, int]]) -> Outcome:
        """Put the records this one needs ahead in the queue and try it again shortly, without
        spending its attempts; a bounded number of times, so a broken dependency cannot hold it
        forever. A dependency gone from the ERP, or failed for good, fails it at once."""
        item, settings = work.item, self._settings()
        sync = settings.sync
        names = ", ".join(f"{e} {i}" for e, i in missing)
        if item.adiamentos >= sync.max_dependency_waits:
            return Outcome.failed(
                f"dependências não sincronizadas após {item.adiamentos} esperas: {names}",
                retryable=False,
            )
        async with self._pool().acquire() as conn:
            gone = []
            for entidade in sorted({e for e, _ in missing}):
                ids = [i for e, i in missing if e == entidade]
                found = await erp.load(conn, entidade, ids, settings.sources)
                gone += [f"{entidade} {i}" for i in ids if i not in found]
            if gone:
                return Outcome.failed(
                    f"depende de {', '.join(gone)}, que não existe mais no ERP", retryable=False
                )
            failed = await queue.failed_records(conn, missing)
            if failed:
                reasons = "; ".join(f"{e} {i}: {why}" for (e, i), why in sorted(failed.items()))
                return Outcome.failed(f"uma dependência falhou: {reasons}", retryable=False)
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
            return self._transient(work, exc)
        account.answered()
        return Outcome.failed(exc.message, retryable=False, http_status=exc.http_status)

    def _transient(self, work: Work, exc: CrmError) -> Outcome:
        """A timeout, a refused connection or a 5xx: the record's problem, or the account's?

        A refused connection, 502, 503 or 504 is never the record's: the gateway or the
        service is away, so the attempt is given back (counted among the item's bounded waits;
        a flaky CRM answering 503 to one request in ten once failed records after three
        unlucky tries). For a 500 or a timeout, the first after an answer spends the item's
        attempt (a record the CRM chokes on fails after its attempts); a second one in a row
        means the CRM itself is in trouble and gives the attempt back. A run of
        `breaker_threshold` pauses the account, which then probes before sending again. So an
        outage of the CRM spends no record's attempts.
        """
        account, sync, item = work.account, self._settings().sync, work.item
        account.consecutive_failures += 1
        paused = 0.0
        if account.consecutive_failures >= sync.breaker_threshold:
            paused = account.pause(
                sync.failure_pause_seconds,
                sync.max_pause_seconds,
                f"{account.consecutive_failures} falhas seguidas: {exc.message}",
            )
        not_the_record = exc.http_status in UNAVAILABLE or not exc.delivered
        if (
            not_the_record or account.consecutive_failures > 1
        ) and item.adiamentos < sync.max_dependency_waits:
            return Outcome.postponed(
                f"CRM indisponível: {exc.message}",
                max(paused, account.paused_for(), sync.dependency_wait_seconds),
                http_status=exc.http_status,
                waited=True,
            )
        return Outcome.failed(exc.message, retryable=True, http_status=exc.http_status)


# Answers that say the service (or the gateway before it) is away, whatever the request.
UNAVAILABLE = frozenset({502, 503, 504})

# Longer text than this in one column is refused before it reaches the CRM: no CRM field holds
# it, and a request body of megabytes would only come back as an error.
MAX_TEXT = 65_535


def check_row(row: Row) -> str | None:
    """Why the row cannot be sent as it is, naming the column; None when it can."""
    for column, value in row.items():
        if (isinstance(value, Decimal) and not value.is_finite()) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            return f"coluna {column}: valor {value} não é um número finito"
        if isinstance(value, str) and len(value) > MAX_TEXT:
            size, limit = f"{len(value):,}".replace(",", "."), f"{MAX_TEXT:,}".replace(",", ".")
            return f"coluna {column}: texto de {size} caracteres (o máximo é {limit})"
    return None
