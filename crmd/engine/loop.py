"""The sync engine: claimed queue items to the CRM, each outcome recorded in one transaction.

    claim (SKIP LOCKED) -> load ERP rows (one query per entity) -> build payload -> limiter ->
    CRM call -> outcome (external id, log row, queue state) in one transaction

A claimer keeps a small buffer of claimed, loaded items; workers take them in priority order and
send them (`sync.Syncer`) under their account's concurrency and limits; the recorder writes the
outcomes. The engine knows nothing of signals, timers or systemd: `run()` takes a stop event and
a wake event from whoever drives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict

import asyncpg
import structlog

from crmd.aio import Backoff, wait_any
from crmd.config import Settings
from crmd.crm.accounts import Account
from crmd.engine.recorder import Recorder
from crmd.engine.sync import Syncer
from crmd.engine.work import Stats, Work
from crmd.model import Entry, Item, Outcome, Settled
from crmd.store import erp, mapping, queue
from crmd.store.db import DB_ERRORS

log = structlog.get_logger("crmd.engine")


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
        self._syncer = Syncer(lambda: self.pool, lambda: self.settings)
        self._recorder = Recorder(
            lambda: self.pool, lambda: self.settings.queue.retry_policy(), self._settled
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
        backoff = Backoff()
        while not stop.is_set():
            self.heartbeat = time.monotonic()
            # Cleared before claiming: a NOTIFY that lands after this point cuts the wait.
            wake.clear()
            try:
                low_water = max(self.settings.queue.batch_size // 2, 1)
                if self._buffer.qsize() < low_water and await self._claim():
                    self._database_back(backoff)
                    continue
                wait = await self._idle_wait()
                self._database_back(backoff)
            except DB_ERRORS as exc:
                if self.db_ok:
                    log.error("database_unreachable", error=str(exc) or type(exc).__name__)
                self.db_ok = False
                wait = backoff.next()
            await wait_any(stop, wake, within=wait)

    def _database_back(self, backoff: Backoff) -> None:
        if not self.db_ok:
            log.info("database_reachable")
        self.db_ok = True
        backoff.reset()

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
        """Release items at once, bypassing the recorder (which may be closing)."""
        if not works:
            return
        entries = [Entry(w.item, w.account.name, Outcome.released()) for w in works]
        try:
            async with self.pool.acquire() as conn:
                settled = await queue.settle(conn, entries, self.settings.queue.retry_policy())
            log.info("released", count=sum(1 for s in settled if s != "stale"))
        except DB_ERRORS as exc:
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
        rows = {
            (entidade, ident): row
            for entidade, ids in by_entity.items()
            for ident, row in (await erp.load(conn, entidade, ids, self.settings.sources)).items()
        }
        account_of = {i.id: self._account(i.loja_id) for i in items}
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i in items:
            groups[(account_of[i.id].name, i.entidade)].append(i.entidade_id)
        mapped = {
            (conta, entidade, ident): found
            for (conta, entidade), ids in groups.items()
            for ident, found in (await mapping.for_batch(conn, conta, entidade, ids)).items()
        }
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
                    outcome = await self._outcome(work)
                self.stats.requests += outcome.requests
                self._recorder.submit(Entry(work.item, work.account.name, outcome))
            except Exception:  # a bug must not kill the worker; the lease brings the item back
                log.exception("worker_error", queue_id=work.item.id)
            finally:
                self._busy.pop(work.item.id, None)
                if not self._busy:
                    self._idle.set()
                self._buffer.task_done()

    async def _outcome(self, work: Work) -> Outcome:
        """Send the item, unless its account cannot send for a while: then give it back."""
        account = work.account
        paused, delay = account.paused_for(), account.limiter.delay()
        if paused > 0 or delay > self.settings.queue.lease_seconds / 2:
            reason = account.limiter.pause_reason or "orçamento de requisições"
            return Outcome.released(reason, max(paused, delay))
        return await self._syncer.process(work)

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
        elif settled in ("postponed", "released", "deferred"):
            self.stats.released += 1
        else:
            self.stats.failed += 1
            self.stats.failed_by_entity[item.entidade] += 1
        if settled in ("released", "deferred"):
            return  # nothing was sent: no attempt to report
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
