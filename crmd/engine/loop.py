"""The sync engine: claimed queue items to the CRM, each outcome recorded in one transaction.

    claim (SKIP LOCKED) -> load ERP rows (one query per entity) -> build payload -> limiter ->
    CRM call -> outcome (external id, log row, queue state) in one transaction

A claimer keeps a small buffer of claimed, loaded items; workers take them in priority order and
send them under their account's concurrency and limits. The engine knows nothing of signals,
timers or systemd: `run()` takes a stop event and a wake event from whoever drives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from crmd.config import Settings
from crmd.crm.accounts import Account
from crmd.crm.providers.base import CrmError, ErrorKind, Prepared, Row
from crmd.crm.transport import counting
from crmd.engine.outcome import Entry, Outcome, Settled
from crmd.engine.recorder import Recorder
from crmd.store import queue
from crmd.store.queue import Item, NewItem, RetryPolicy
from crmd.store.sql import queries, sources

log = structlog.get_logger("crmd.engine")


@dataclass
class Work:
    """A claimed item with what the claimer loaded for it."""

    item: Item
    account: Account
    row: Row | None
    external_id: str | None
    payload_hash: str | None
    create_unsure: bool = False  # a previous create's outcome is unknown: look up first


@dataclass
class Stats:
    """Counters since start, for the summary line, status and metrics."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    requests: int = 0
    by_entity: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failed_by_entity: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def payload_hash(payload: Mapping[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Engine:
    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, accounts: dict[str, Account]
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.accounts = accounts
        self.stats = Stats()
        self._buffer: asyncio.PriorityQueue[tuple[int, int, Work]] = asyncio.PriorityQueue()
        self._busy: dict[int, Work] = {}  # being sent now, by queue id
        self._idle = asyncio.Event()  # set whenever nothing is being sent
        self._idle.set()
        self._workers: list[asyncio.Task[None]] = []
        self._recorder = Recorder(
            lambda: self.pool, lambda: RetryPolicy.from_settings(self.settings.queue), self._settled
        )
        self.heartbeat = time.monotonic()  # the claim loop's last turn, for the watchdog
        self.db_ok = True  # the last claim reached the database

    def apply(self, settings: Settings, accounts: dict[str, Account] | None = None) -> None:
        """New settings (and accounts) take effect for the next claim and item (SIGHUP)."""
        self.settings = settings
        if accounts is not None:
            self.accounts = accounts
        self._resize()

    # --- driving ----------------------------------------------------------------------------

    async def run_once(self) -> Stats:
        """Process what is due now (and what becomes due while doing so, within a grace period)
        and return when the queue has nothing more for us."""
        grace = self.settings.sync.dependency_wait_seconds + 1.0
        self._resize()
        try:
            while True:
                claimed = await self._claim()
                await self._buffer.join()
                await self._recorder.drain()
                if claimed:
                    continue
                async with self.pool.acquire() as conn:
                    due_in = await queue.next_due_in(conn)
                if due_in is None or due_in > grace:
                    break
                await asyncio.sleep(due_in + 0.05)
        finally:
            await self.shutdown(0)
        return self.stats

    async def run(self, stop: asyncio.Event, wake: asyncio.Event) -> None:
        """Process until `stop` is set; `wake` (NOTIFY) cuts an idle wait short. A database
        that cannot be reached is waited for with growing pauses; it never ends the loop.
        The caller then calls `shutdown()` to let in-flight calls finish."""
        self._resize()
        backoff = 0.5
        while not stop.is_set():
            self.heartbeat = time.monotonic()
            # Cleared before claiming: a NOTIFY that lands after this point cuts the wait.
            wake.clear()
            try:
                low_water = max(self.settings.queue.batch_size // 2, 1)
                if self._buffer.qsize() < low_water and await self._claim():
                    self._database_back()
                    backoff = 0.5
                    continue
                wait = await self._idle_wait()
                self._database_back()
                backoff = 0.5
            except (
                OSError,
                TimeoutError,
                asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError,
                asyncpg.CannotConnectNowError,
            ) as exc:
                if self.db_ok:
                    log.error("database_unreachable", error=str(exc) or type(exc).__name__)
                self.db_ok = False
                wait, backoff = backoff, min(backoff * 2, 30.0)
            await _wait_any((stop, wake), wait)

    def _database_back(self) -> None:
        if not self.db_ok:
            log.info("database_reachable")
        self.db_ok = True

    async def _idle_wait(self) -> float:
        """How long to sleep when nothing was claimed: until the next retry, at most a poll (and
        never long, so the watchdog sees the loop turn)."""
        poll = min(self.settings.queue.poll_interval_seconds, 5.0)
        if self._buffer.qsize():
            return 0.05  # workers are busy; look again soon so they never run dry
        async with self.pool.acquire() as conn:
            due_in = await queue.next_due_in(conn)
        return poll if due_in is None else min(max(due_in, 0.01), poll)

    def _resize(self) -> None:
        """One worker per unit of concurrency over all accounts (more after a reload)."""
        self._workers = [w for w in self._workers if not w.done()]
        wanted = sum(a.settings.concurrency for a in self.accounts.values())
        for _ in range(wanted - len(self._workers)):
            self._workers.append(asyncio.create_task(self._worker()))

    @property
    def in_flight(self) -> int:
        return len(self._busy)

    async def shutdown(self, grace_seconds: float) -> None:
        """Stop: give back what is claimed but unsent, let calls in flight finish for up to
        `grace_seconds`, then interrupt them and give their items back too (another instance
        may take them at once; the CRM lookup by natural key prevents a duplicate)."""
        unsent = []
        while not self._buffer.empty():
            unsent.append(self._buffer.get_nowait()[2])
            self._buffer.task_done()
        await self._give_back(unsent)
        if self._busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace_seconds)
        interrupted = list(self._busy.values())
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        await self._recorder.close()  # what finished is written before anything is given back
        if interrupted:
            log.warning("interrupted_in_flight", count=len(interrupted))
            await self._give_back(interrupted)
        self._busy.clear()

    async def _give_back(self, works: list[Work]) -> None:
        if not works:
            return
        try:
            async with self.pool.acquire() as conn:
                released = await queue.release_all(conn, [w.item for w in works])
            log.info("released", count=released)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            lease = self.settings.queue.lease_seconds
            log.error(
                "release_failed",
                count=len(works),
                error=str(exc),
                note=f"the items become claimable when their lease ends ({lease:g} s)",
            )

    # --- claiming and loading -----------------------------------------------------------------

    async def _claim(self) -> int:
        qs = self.settings.queue
        async with self.pool.acquire() as conn:
            items = await queue.claim(conn, qs.batch_size, qs.lease_seconds)
            if not items:
                return 0
            works = await self._load(conn, items)
        self.stats.claimed += len(items)
        for w in works:
            self._buffer.put_nowait((-w.item.prioridade, w.item.id, w))
        return len(items)

    async def _load(self, conn: asyncpg.Connection, items: list[Item]) -> list[Work]:
        """Rows and CRM mappings for a batch: one query per entity (and account), not per item."""
        by_entity: dict[str, list[int]] = defaultdict(list)
        for i in items:
            by_entity[i.entidade].append(i.entidade_id)
        rows: dict[tuple[str, int], Row] = {}
        for entidade, ids in by_entity.items():
            sql = self.settings.sources.query(entidade) or sources[entidade]
            for r in await conn.fetch(sql, ids):
                rows[(entidade, int(r["id"]))] = _decode(dict(r))
        mapped: dict[tuple[str, str, int], tuple[str | None, str | None]] = {}
        account_of = {i.id: self._account(i.loja_id) for i in items}
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i in items:
            groups[(account_of[i.id].name, i.entidade)].append(i.entidade_id)
        for (conta, entidade), ids in groups.items():
            for r in await conn.fetch(queries["map_for_batch"], conta, entidade, ids):
                mapped[(conta, entidade, r["entidade_id"])] = (r["external_id"], r["payload_hash"])
        works = []
        for i in items:
            account = account_of[i.id]
            key = (account.name, i.entidade, i.entidade_id)
            ext, digest = mapped.get(key, (None, None))
            row = rows.get((i.entidade, i.entidade_id))
            works.append(Work(i, account, row, ext, digest, key in mapped and ext is None))
        return works

    def _account(self, loja_id: int) -> Account:
        return self.accounts[self.settings.crm.account_name(loja_id)]

    # --- working ------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            _, _, work = await self._buffer.get()
            self._busy[work.item.id] = work
            self._idle.clear()
            try:
                async with work.account.slots:
                    await self._process(work)
            except Exception:  # a bug must not kill the worker; the lease brings the item back
                log.exception("worker_error", queue_id=work.item.id)
            finally:
                self._busy.pop(work.item.id, None)
                if not self._busy:
                    self._idle.set()
                self._buffer.task_done()

    async def _process(self, work: Work) -> None:
        item, account = work.item, work.account
        paused = account.paused_for()
        if paused > 0 or account.limiter.delay() > self.settings.queue.lease_seconds / 2:
            await self._release(
                work,
                max(paused, account.limiter.delay()),
                account.limiter.pause_reason or "orçamento de requisições",
            )
            return
        count = counting()
        start = time.perf_counter()
        outcome: Outcome
        try:
            outcome = await self._send(work)
        except CrmError as exc:
            outcome = await self._on_error(work, exc)
        except Exception as exc:  # a bad row or a bug: this item fails, the engine goes on
            log.exception(
                "item_error", queue_id=item.id, entidade=item.entidade, entidade_id=item.entidade_id
            )
            outcome = Outcome.error(f"erro interno: {type(exc).__name__}: {exc}", retryable=True)
        self.stats.requests += count.sent
        if outcome.deferred:
            return
        outcome.requests = count.sent
        outcome.http_status = count.statuses[-1] if count.statuses else None
        outcome.duration_ms = int((time.perf_counter() - start) * 1000)
        await self._record(work, outcome)

    async def _send(self, work: Work) -> Outcome:
        item, account, provider = work.item, work.account, work.account.provider
        if not provider.supports(item.entidade):
            return Outcome.error(
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
        if self.settings.sync.skip_unchanged and work.external_id and work.payload_hash == digest:
            return Outcome.ok(work.external_id, digest, "sem alterações desde o último envio")
        return await self._upsert(work, prepared, digest)

    async def _upsert(self, work: Work, prepared: Prepared, digest: str) -> Outcome:
        entidade, provider = work.item.entidade, work.account.provider
        if work.external_id:
            try:
                await provider.update(entidade, work.external_id, prepared.payload)
                return Outcome.ok(work.external_id, digest, "atualizado")
            except CrmError as exc:
                if exc.kind is not ErrorKind.NOT_FOUND:
                    raise
            new_id = await self._create(work, prepared)
            return Outcome.ok(
                new_id, digest, f"recriado (o registro {work.external_id} sumiu do CRM)"
            )
        # Unknown to us: the CRM may still have it (created by hand, or by an attempt that died
        # before storing the id). Look it up by its natural key before creating a second one.
        lookup = work.create_unsure or self.settings.sync.lookup_unknown
        if prepared.natural_key and lookup:
            found = await provider.find(entidade, prepared.natural_key)
            if found:
                await provider.update(entidade, found, prepared.payload)
                return Outcome.ok(found, digest, "vinculado a registro existente e atualizado")
        new_id = await self._create(work, prepared)
        return Outcome.ok(new_id, digest, "criado")

    async def _create(self, work: Work, prepared: Prepared) -> str:
        item = work.item
        async with self.pool.acquire() as conn:
            await conn.execute(
                queries["map_creating"], work.account.name, item.entidade, item.entidade_id
            )
        return await work.account.provider.create(item.entidade, prepared.payload)

    async def _delete(self, work: Work) -> Outcome:
        if not work.external_id:
            return Outcome.removed_ok("não existe no CRM; nada a remover")
        try:
            await work.account.provider.delete(work.item.entidade, work.external_id)
        except CrmError as exc:
            if exc.kind is not ErrorKind.NOT_FOUND:
                raise
            return Outcome.removed_ok("já não existia no CRM")
        return Outcome.removed_ok("removido")

    async def _resolve(
        self, conta: str, needs: tuple[tuple[str, int], ...]
    ) -> dict[tuple[str, int], str]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                queries["map_resolve"], conta, [n[0] for n in needs], [n[1] for n in needs]
            )
        return {(r["entidade"], r["entidade_id"]): r["external_id"] for r in rows}

    async def _wait_for(self, work: Work, missing: list[tuple[str, int]]) -> Outcome:
        """Put the records this one needs ahead in the queue and try it again shortly, without
        spending its attempts; a bounded number of times, so a broken dependency cannot hold it
        forever."""
        item, sync = work.item, self.settings.sync
        names = ", ".join(f"{e} {i}" for e, i in missing)
        if item.adiamentos >= sync.max_dependency_waits:
            return Outcome.error(
                f"dependências não sincronizadas após {item.adiamentos} esperas: {names}",
                retryable=False,
            )
        async with self.pool.acquire() as conn, conn.transaction():
            await queue.enqueue_many(
                conn,
                [NewItem(item.loja_id, e, i, prioridade=item.prioridade + 1) for e, i in missing],
            )
            # Waits grow (2 s, 4 s, 8 s ... up to 5 min): under a tight rate limit a long
            # backlog may stand between the venda and its cliente.
            delay = min(sync.dependency_wait_seconds * 2**item.adiamentos, 300.0)
            await queue.defer(conn, item, delay, f"aguardando {names}")
        self.stats.released += 1
        log.info(
            "waiting_for_dependencies",
            queue_id=item.id,
            entidade=item.entidade,
            entidade_id=item.entidade_id,
            missing=names,
        )
        return Outcome.given_back()

    async def _on_error(self, work: Work, exc: CrmError) -> Outcome:
        account, sync = work.account, self.settings.sync
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
            return Outcome.error(exc.message, retryable=True, http_status=exc.http_status)
        account.answered()
        return Outcome.error(exc.message, retryable=False, http_status=exc.http_status)

    async def _release(self, work: Work, delay: float, reason: str) -> None:
        async with self.pool.acquire() as conn:
            await queue.release(conn, work.item, delay, reason)
        self.stats.released += 1

    async def _record(self, work: Work, outcome: Outcome) -> None:
        if outcome.success:
            work.account.answered()
        self._recorder.submit(Entry(work.item, work.account.name, outcome))

    def _settled(self, entry: Entry, settled: Settled) -> None:
        """An outcome is stored: count it and log it (called by the recorder)."""
        item, outcome = entry.item, entry.outcome
        if settled == "stale":
            log.warning(
                "lease_lost", queue_id=item.id, entidade=item.entidade, entidade_id=item.entidade_id
            )
        elif settled == "done":
            self.stats.succeeded += 1
            self.stats.by_entity[item.entidade] += 1
        elif settled == "retry":
            self.stats.retried += 1
        elif settled == "postponed":
            self.stats.released += 1
        else:
            self.stats.failed += 1
            self.stats.failed_by_entity[item.entidade] += 1
        event = "synced" if outcome.success else "sync_failed"
        (log.info if outcome.success else log.warning)(
            event,
            queue_id=item.id,
            loja_id=item.loja_id,
            entidade=item.entidade,
            entidade_id=item.entidade_id,
            acao=item.acao,
            tentativa=item.tentativas,
            external_id=outcome.external_id,
            http_status=outcome.http_status,
            duration_ms=outcome.duration_ms,
            requests=outcome.requests,
            result=settled,
            mensagem=outcome.message,
        )


async def _wait_any(events: tuple[asyncio.Event, ...], seconds: float) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    """JSON columns come back as text from asyncpg; a source query's `itens` is one."""
    if isinstance(row.get("itens"), str):
        row["itens"] = json.loads(row["itens"])
    return row
