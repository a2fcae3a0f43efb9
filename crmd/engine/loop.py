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
import itertools
import math
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
from crmd.model import Entry, Item, Outcome, OutcomeKind, Settled
from crmd.store import erp, mapping, queue
from crmd.store.db import DB_ERRORS, refused

log = structlog.get_logger("crmd.engine")

Queued = tuple[int, int, int, Work]  # (-priority, queue id, arrival, work)


class Engine:
    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, accounts: dict[str, Account]
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.accounts = accounts
        self.stats = Stats()
        # Claimed and loaded, per account, in sending order (the counter breaks ties so a Work is
        # never compared). Each account has workers of its own, as many as its concurrency: an
        # account that must wait for its budget never holds up another's items, and one with
        # nothing to send costs nothing.
        self._buffers: dict[str, asyncio.PriorityQueue[Queued]] = {}
        self._order = itertools.count()
        self._held: dict[int, Work] = {}  # every item this engine holds a lease on, by queue id
        self._busy: dict[int, tuple[Work, asyncio.Task[None]]] = {}  # being sent now
        self._idle = asyncio.Event()  # set whenever nothing is being sent
        self._idle.set()
        self._workers: dict[str, list[asyncio.Task[None]]] = {}
        self._heart: asyncio.Task[None] | None = None
        self._syncer = Syncer(lambda: self.pool, lambda: self.settings)
        self._recorder = Recorder(
            lambda: self.pool, lambda: self.settings.queue.retry_policy(), self._settled
        )
        self.heartbeat = time.monotonic()  # the claim loop's last turn, for the watchdog
        self.db_ok = True  # the last claim reached the database
        self.claim_ok = True  # the last turn of the claim loop ended without an unexpected error

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
                settled = await self._finish_claimed(grace)
                await self._recorder.drain()
                if not settled:
                    break  # the rest waits for a pause: shutdown gives it back
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

    async def _finish_claimed(self, grace: float) -> bool:
        """Wait until the workers are through what was claimed; False as soon as all that is
        left waits, unsent, for an account paused longer than `grace` (a refused token pauses
        it for minutes: a one-off run gives those items back rather than sit out the pause)."""
        joined = asyncio.ensure_future(
            asyncio.gather(*(buffer.join() for buffer in self._buffers.values()))
        )
        try:
            while not joined.done():
                await asyncio.wait({joined}, timeout=0.1)
                if joined.done():
                    break

                def paused(name: str) -> bool:
                    return self.accounts[name].paused_for() > grace

                busy = [work for work, _ in self._busy.values()]
                if (
                    busy
                    and all(work.waiting and paused(work.account.name) for work in busy)
                    and all(b.empty() or paused(n) for n, b in self._buffers.items())
                ):
                    return False
            return True
        finally:
            joined.cancel()
            await asyncio.gather(joined, return_exceptions=True)

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
                if self._buffered() < self._low_water() and await self._claim():
                    self._database_back(backoff)
                    continue
                wait = await self._idle_wait()
                self._database_back(backoff)
            except DB_ERRORS as exc:
                if self.db_ok:
                    log.error("database_unreachable", error=str(exc) or type(exc).__name__)
                self.db_ok = False
                wait = backoff.next()
            except Exception:  # a bug must not stop the claim loop: log it, back off, go on
                log.exception("claim_loop_error", retry_in=backoff.current)
                self.claim_ok = False
                wait = backoff.next()
            await wait_any(stop, wake, within=wait)

    def _low_water(self) -> int:
        """Claim again when fewer items than this wait in the buffers: half a batch, or a
        worker's worth for every worker. A claim hands each account its share of a batch (the
        queue's order interleaves them), so with many accounts half a batch would leave most of
        their workers idle between claims."""
        workers = sum(a.settings.concurrency for a in self.accounts.values())
        return max(self.settings.queue.batch_size // 2, workers, 1)

    def _database_back(self, backoff: Backoff) -> None:
        if not self.db_ok:
            log.info("database_reachable")
        self.db_ok = self.claim_ok = True
        backoff.reset()

    async def _idle_wait(self) -> float:
        """How long to sleep when nothing was claimed: until the next retry, at most a poll (and
        never long, so the watchdog sees the loop turn)."""
        poll = min(self.settings.queue.poll_interval_seconds, 5.0)
        if self._buffered():
            return 0.05  # workers are busy; look again soon so they never run dry
        async with self.pool.acquire() as conn:
            due_in = await queue.next_due_in(conn)
        return poll if due_in is None else min(max(due_in, 0.01), poll)

    def _resize(self) -> None:
        """Workers for every account, as many as its concurrency (more after a reload)."""
        for name, account in self.accounts.items():
            workers = [w for w in self._workers.get(name, []) if not w.done()]
            for _ in range(account.settings.concurrency - len(workers)):
                workers.append(asyncio.create_task(self._worker(name)))
            self._workers[name] = workers
        if self._heart is None or self._heart.done():
            self._heart = asyncio.create_task(self._keep_leases(), name="leases")

    def _buffer(self, name: str) -> asyncio.PriorityQueue[Queued]:
        if name not in self._buffers:
            self._buffers[name] = asyncio.PriorityQueue()
        return self._buffers[name]

    def _buffered(self) -> int:
        return sum(b.qsize() for b in self._buffers.values())

    @property
    def in_flight(self) -> int:
        return len(self._busy)

    async def shutdown(self, grace_seconds: float) -> None:
        """Stop: give back at once what waits to send (buffered, or waiting for the rate
        limiter), let items with a request out finish for up to `grace_seconds`, then interrupt
        them and give their items back too (another instance may take them at once; a create's
        marker makes the next attempt look the record up first)."""
        unsent = []
        for buffer in self._buffers.values():
            while not buffer.empty():
                unsent.append(buffer.get_nowait()[3])
                buffer.task_done()
        await self._give_back(unsent)
        deadline = time.monotonic() + grace_seconds
        interrupted: list[Work] = []
        while self._busy:
            late = time.monotonic() >= deadline
            for work, task in list(self._busy.values()):
                if (late or work.waiting) and not task.done():
                    task.cancel()
                    interrupted.append(work)
            await wait_any(self._idle, within=0.02)
        workers = [w for group in self._workers.values() for w in group]
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._workers = {}
        await self._recorder.close()  # what finished is written before anything is given back
        if interrupted:
            log.warning("interrupted", count=len(interrupted))
            await self._give_back(interrupted)
        if self._heart is not None:
            self._heart.cancel()
            await asyncio.gather(self._heart, return_exceptions=True)
        self._busy.clear()
        self._held.clear()

    async def _give_back(self, works: list[Work]) -> None:
        """Release items at once, bypassing the recorder (which may be closing)."""
        if not works:
            return
        entries = [Entry(w.item, w.account.name, _given_back(w)) for w in works]
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
            held = self._held.get(w.item.id)
            if held is not None:
                # Claimed again while we still hold it (its lease ran out under us): the new
                # token is the one that counts; the item stays where it is.
                held.item = w.item
                continue
            self._held[w.item.id] = w
            queued = (-w.item.prioridade, w.item.id, next(self._order), w)
            self._buffer(w.account.name).put_nowait(queued)
        return len(items)

    async def _load(self, conn: asyncpg.Connection, items: list[Item]) -> list[Work]:
        """Rows and CRM mappings for a batch: one query per entity and one of the map for every
        account (a batch may span hundreds), not per item. A row that cannot be read, or a
        source query the database refuses, fails its items alone; the rest of the batch goes
        on."""
        by_entity: dict[str, list[int]] = defaultdict(list)
        for i in items:
            by_entity[i.entidade].append(i.entidade_id)
        rows: dict[tuple[str, int], erp.Row | erp.RowError] = {}
        for entidade, ids in by_entity.items():
            try:
                loaded = await erp.load(conn, entidade, ids, self.settings.sources)
            except DB_ERRORS as exc:
                if not refused(exc):
                    raise
                error = erp.RowError(f"a consulta de {entidade} foi recusada pelo banco: {exc}")
                loaded = dict.fromkeys(ids, error)
            rows.update({(entidade, ident): row for ident, row in loaded.items()})
        account_of = {i.id: self._account(i.loja_id) for i in items}
        mapped = await mapping.for_keys(
            conn, [(account_of[i.id].name, i.entidade, i.entidade_id) for i in items]
        )
        works = []
        for i in items:
            account = account_of[i.id]
            known = mapped.get((account.name, i.entidade, i.entidade_id))
            row = rows.get((i.entidade, i.entidade_id))
            work = Work(i, account, None, None, None)
            if isinstance(row, erp.RowError):
                work.load_error = str(row)
            else:
                work.row = row
            if known is not None:
                work.external_id, work.payload_hash = known.external_id, known.payload_hash
                work.create_unsure = known.external_id is None
                work.unsure_key = known.natural_key
            works.append(work)
        return works

    def _account(self, loja_id: int) -> Account:
        return self.accounts[self.settings.crm.account_name(loja_id)]

    # --- working ------------------------------------------------------------------------------

    async def _worker(self, name: str) -> None:
        buffer = self._buffer(name)
        while True:
            *_, work = await buffer.get()
            if self._held.get(work.item.id) is not work:  # its lease was lost meanwhile
                buffer.task_done()
                continue
            task = asyncio.current_task()
            assert task is not None
            self._busy[work.item.id] = (work, task)
            self._idle.clear()
            submitted = False
            try:
                async with work.account.slots:
                    outcome = await self._outcome(work)
                self.stats.requests += outcome.requests
                self._recorder.submit(Entry(work.item, work.account.name, outcome))
                submitted = True  # held (its lease kept) until the recorder has written it
            except Exception:  # a bug must not kill the worker; the lease brings the item back
                log.exception("worker_error", queue_id=work.item.id)
            finally:
                self._busy.pop(work.item.id, None)
                if not submitted:
                    self._held.pop(work.item.id, None)
                if not self._busy:
                    self._idle.set()
                buffer.task_done()

    async def _outcome(self, work: Work) -> Outcome:
        """Send the item, unless it cannot be: its row is unreadable, its attempts were all
        spent by processes that died while sending it, or its account cannot send for a while
        (then it is given back)."""
        if work.load_error is not None:
            return Outcome.failed(work.load_error, retryable=False)
        if work.item.tentativas > self.settings.queue.max_attempts:
            return Outcome.failed(
                f"processo interrompido durante o envio ({work.item.tentativas - 1} tentativas)",
                retryable=False,
            )
        account = work.account
        paused, delay = account.paused_for(), account.limiter.delay()
        # (An infinite delay means "when a request out comes back": soon, so wait for it.)
        if paused > 0 or (math.isfinite(delay) and delay > self.settings.queue.lease_seconds / 2):
            reason = account.limiter.pause_reason or "orçamento de requisições"
            return Outcome.released(reason, max(paused, delay), started=False)
        work.on_send = lambda: self._spend(work)
        outcome = await self._syncer.process(work)
        if outcome.kind is not OutcomeKind.RELEASED:
            self._spend(work)  # an outcome reached without a request counts as an attempt too
        return outcome

    def _spend(self, work: Work) -> None:
        """The item's attempt is spent: when its first request is let out, not while it waits
        for its turn at the rate limiter (a process killed then has sent nothing), so only
        processes that die with its request out bring it nearer its last attempt."""
        if not work.started:
            work.started = True
            self._recorder.started(work.item)

    def _settled(self, entry: Entry, settled: Settled) -> None:
        """An outcome is stored: count it and log it (called by the recorder)."""
        item, outcome = entry.item, entry.outcome
        self._held.pop(item.id, None)
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
        elif settled == "ignored":
            self.stats.ignored += 1
            self.stats.ignored_by_entity[item.entidade] += 1
        else:
            self.stats.failed += 1
            self.stats.failed_by_entity[item.entidade] += 1
        if settled in ("released", "deferred"):
            return  # nothing was sent: no attempt to report
        ignored = settled == "ignored"
        event = "synced" if outcome.success else "ignored" if ignored else "sync_failed"
        (log.info if outcome.success or ignored else log.warning)(
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

    async def _keep_leases(self) -> None:
        """Extend the leases of every item held, at a third of the lease: an item waiting in the
        buffer or for the rate limiter, or in flight at a slow CRM, is never claimed by another
        worker meanwhile. One that lost its lease anyway is dropped if not started yet."""
        while True:
            await asyncio.sleep(self.settings.queue.lease_seconds / 3)
            held = [w.item for w in self._held.values()]
            try:
                async with self.pool.acquire() as conn:
                    kept = await queue.extend_leases(conn, held, self.settings.queue.lease_seconds)
            except DB_ERRORS as exc:
                log.warning("lease_extension_failed", count=len(held), error=str(exc))
                continue
            for item in held:
                if item.id not in kept and self._held.get(item.id) is not None:
                    log.warning("lease_lost", queue_id=item.id, entidade=item.entidade)
                    if item.id not in self._busy:
                        self._held.pop(item.id)  # its buffer entry is skipped when it comes up


def _given_back(work: Work) -> Outcome:
    """An interrupted item's outcome: the attempt is given back, and requests it already sent
    are logged (the daily budget is counted from the log)."""
    outcome = Outcome.released(started=work.started)
    if work.count is not None:
        outcome.requests = work.count.sent
    return outcome
