"""`crmd plan`: what a sync would do, before it does it.

For what is open in the queue (or, `full`, what `crmd enqueue` would put in it) each record is
read and judged as the engine would judge it (crmd.engine.sync): created, linked to a record the
CRM already holds, updated, skipped as unchanged, inactivated, deleted, left alone, ignored, or
refused (a row that cannot be sent, naming why). Each verdict has a cost in requests; the sum
per account, against that account's limits, says how long the budget needs for it. Nothing is
sent, unless `lookups`: then records crmd does not know are looked up (at most `max_lookups`),
which tells a create from a link, and each lookup is logged (acao 'consulta') so the daily
budget counts it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import asyncpg

from crmd.config import RateLimit, Settings
from crmd.crm.errors import CrmError, ErrorKind
from crmd.crm.providers.base import Provider
from crmd.crm.transport import counting
from crmd.engine.sync import check_row, payload_hash
from crmd.model import ENTITIES
from crmd.ops import account
from crmd.ops.checks import InvalidRequest, check_entity, check_int
from crmd.ops.enqueue import DEFAULT_SINCE_DAYS, MAX_SINCE_DAYS
from crmd.store import erp, log, mapping, queue

CHUNK = 1000
EXAMPLES = 5
DEFAULT_MAX_LOOKUPS = 500
VERDICTS = (
    "criados",
    "vinculados",
    "atualizados",
    "sem alterações",
    "inativados",
    "excluídos",
    "sem efeito",
    "ignorados",
    "com erro",
)
"""What would become of each record, in the order shown; "sem efeito": a delete of a record the
CRM does not hold, or one [sync] on_delete = "ignore" leaves."""


@dataclass
class EntityPlan:
    entidade: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    requests: int = 0
    errors: list[str] = field(default_factory=list)  # examples of "com erro", naming the record
    unsure: int = 0  # creates (or links) not looked up: either, depending on the CRM

    @property
    def records(self) -> int:
        return sum(self.counts.values())


@dataclass
class Budget:
    """What an account's share of the plan costs, and the limit that decides how long it takes."""

    conta: str
    requests: int
    limits: tuple[RateLimit, ...]

    def binding(self) -> tuple[float, RateLimit]:
        """Seconds until the last request can go, sent as fast as the limits allow from an
        unspent budget, and the limit that decides it."""
        return send_time(self.requests, self.limits), max(
            self.limits,
            key=lambda lim: (max(self.requests - 1, 0) // lim.requests * lim.per_seconds,
                             lim.per_seconds),
        )  # fmt: skip


EXACT_UP_TO = 1_000_000
"""Beyond this many requests the send time is the longest window's bound (close enough)."""


def send_time(requests: int, limits: Sequence[RateLimit]) -> float:
    """When the last of `requests` goes out under stacked sliding windows, from an unspent
    budget: request n waits for n - r of every limit r per w to be w old (greedy), so 41,000
    at 3/s, 100/min and 30,000/day take a day and about 2 h, not the 1.37 days an average rate
    suggests: the daily budget is spent at the minute's pace, then waits for the day to turn."""
    if requests <= 1:
        return 0.0
    windows = [(lim.requests, lim.per_seconds) for lim in limits]
    if requests > EXACT_UP_TO:
        return max((requests - 1) // r * w for r, w in windows)
    times = [0.0] * requests
    for n in range(1, requests):
        at = times[n - 1]
        for r, w in windows:
            if n >= r:
                at = max(at, times[n - r] + w)
        times[n] = at
    return times[-1]


@dataclass
class Plan:
    full: bool
    items: int = 0  # queue items (or listed records) read
    entities: dict[str, EntityPlan] = field(default_factory=dict)
    budgets: dict[str, Budget] = field(default_factory=dict)
    lookups: bool = False
    lookups_sent: int = 0  # lookups made now (each logged)
    lookup_requests: int = 0
    not_looked_up: int = 0  # unknown records beyond max_lookups
    lookups_stopped: str | None = None  # why lookups stopped early (a 429, an outage)


@dataclass
class _Record:
    loja_id: int
    entidade: str
    entidade_id: int
    acao: str


async def make_plan(
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    entidade: str | None = None,
    lojas: Sequence[int] | None = None,
    full: bool = False,
    since_days: int | None = None,
    lookups: bool = False,
    max_lookups: int = DEFAULT_MAX_LOOKUPS,
    progress: Callable[[int], None] | None = None,
) -> Plan:
    """The plan for what is open in the queue, or (`full`) for a bulk enqueue of every entity
    (`entidade` only, if given) in `lojas` (None: every loja)."""
    wanted = [check_entity(entidade)] if entidade else list(ENTITIES)
    if lojas is not None:
        lojas = [check_int("loja", n, 1, 2**31 - 1) for n in lojas]
        if not lojas:
            raise InvalidRequest("lojas is empty: leave it out for every loja")
    check_int("max_lookups", max_lookups, 0, 1_000_000)
    if since_days is not None:
        check_int("since_days", since_days, 1, MAX_SINCE_DAYS)
    plan = Plan(full, entities={e: EntityPlan(e) for e in wanted}, lookups=lookups)
    planner = _Planner(conn, settings, plan, max_lookups)
    async with AsyncExitStack() as stack:
        for name, acct in settings.crm.accounts().items():
            planner.providers[name] = await stack.enter_async_context(
                account.opened(name, acct, conn, sends=lookups)
            )
            plan.budgets[name] = Budget(name, 0, acct.limits)
        if full:
            for e in wanted:
                days = since_days if since_days is not None else DEFAULT_SINCE_DAYS[e]
                await planner.listed(e, lojas, days, progress)
        else:
            await planner.queued(entidade, lojas, progress)
    return plan


class _Planner:
    def __init__(
        self, conn: asyncpg.Connection, settings: Settings, plan: Plan, max_lookups: int
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.plan = plan
        self.max_lookups = max_lookups
        self.providers: dict[str, Provider] = {}

    async def queued(
        self,
        entidade: str | None,
        lojas: Sequence[int] | None,
        progress: Callable[[int], None] | None,
    ) -> None:
        after = 0
        while rows := await queue.open_items(
            self.conn, after=after, limit=CHUNK, entidade=entidade, lojas=lojas
        ):
            after = rows[-1]["id"]
            await self.judge(
                [_Record(r["loja_id"], r["entidade"], r["entidade_id"], r["acao"]) for r in rows]
            )
            if progress is not None:
                progress(self.plan.items)

    async def listed(
        self,
        entidade: str,
        lojas: Sequence[int] | None,
        days: int | None,
        progress: Callable[[int], None] | None,
    ) -> None:
        listing = erp.listing(entidade, self.settings.sources)
        after = 0
        while rows := await erp.listed(
            self.conn, listing, after=after, limit=CHUNK, lojas=lojas, days=days
        ):
            after = rows[-1]["id"]
            await self.judge([_Record(r["loja_id"], entidade, r["id"], "upsert") for r in rows])
            if progress is not None:
                progress(self.plan.items)

    async def judge(self, records: list[_Record]) -> None:
        """One chunk: rows and links read per entity and account, as the engine's claim does."""
        self.plan.items += len(records)
        by_entity: dict[str, list[_Record]] = defaultdict(list)
        for r in records:
            by_entity[r.entidade].append(r)
        for entidade, group in by_entity.items():
            ids = sorted({r.entidade_id for r in group})
            rows = await erp.load(self.conn, entidade, ids, self.settings.sources)
            per_conta: dict[str, list[int]] = defaultdict(list)
            for r in group:
                per_conta[self.settings.crm.account_name(r.loja_id)].append(r.entidade_id)
            known: dict[tuple[str, int], mapping.Mapped] = {}
            for conta, conta_ids in per_conta.items():
                found = await mapping.for_batch(self.conn, conta, entidade, conta_ids)
                known.update({(conta, i): m for i, m in found.items()})
            lookups: list[log.Lookup] = []
            for r in group:
                conta = self.settings.crm.account_name(r.loja_id)
                row = rows.get(r.entidade_id)
                verdict, cost = await self.verdict(
                    r, conta, row, known.get((conta, r.entidade_id)), lookups
                )
                entity = self.plan.entities[entidade]
                entity.counts[verdict] += 1
                entity.requests += cost
                self.plan.budgets[conta].requests += cost
            await log.record_lookups(self.conn, lookups)

    async def verdict(
        self,
        r: _Record,
        conta: str,
        row: erp.Row | erp.RowError | None,
        known: mapping.Mapped | None,
        lookups: list[log.Lookup],
    ) -> tuple[str, int]:
        """What the engine would do with the record, and the requests that costs."""
        provider, sync = self.providers[conta], self.settings.sync
        entity = self.plan.entities[r.entidade]
        external_id = known.external_id if known else None
        unsure = known is not None and known.external_id is None
        if not provider.supports(r.entidade):
            if sync.on_unsupported == "fail":
                return self.error(entity, r, f"não é suportado pelo provedor {provider.name}")
            return "ignorados", 0
        if isinstance(row, erp.RowError):
            return self.error(entity, r, str(row))
        if r.acao == "delete" or row is None:
            if sync.on_delete == "ignore":
                return "sem efeito", 0
            lookup = 1 if unsure and known and known.natural_key else 0
            if not external_id and not lookup:
                if unsure:
                    return self.error(entity, r, "criação incerta sem chave para procurá-la")
                return "sem efeito", 0
            if sync.on_delete == "delete":
                return "excluídos", lookup + 1
            return "inativados", lookup + 2  # GET, then PUT
        unusable = check_row(row)
        if unusable:
            return self.error(entity, r, unusable)
        needs = provider.dependencies(r.entidade, row).items
        resolved = await mapping.resolve(self.conn, conta, needs) if needs else {}
        complete = all(n in resolved for n in needs)
        # A record not yet linked stands in for a dependency, so the row is still checked.
        stand_in = {n: resolved.get(n, "0") for n in needs}
        try:
            prepared = provider.build(r.entidade, row, stand_in)
        except CrmError as exc:
            return self.error(entity, r, exc.message)
        if external_id:
            digest = payload_hash(prepared.payload)
            if complete and known and known.payload_hash == digest and sync.skip_unchanged:
                return "sem alterações", 0
            return "atualizados", 1
        key = prepared.natural_key
        if not key or not (unsure or sync.lookup_unknown):
            if unsure:
                return self.error(entity, r, "criação incerta sem chave para procurá-la")
            return "criados", 1
        found = await self.look_up(provider, conta, r, key, prepared.scope, lookups)
        if found is None:
            entity.unsure += 1
            return "criados", 2
        if found == "":
            return "criados", 2
        owner = await mapping.owner(self.conn, conta, r.entidade, found)
        if owner not in (None, r.entidade_id):
            return self.error(
                entity, r, f"o registro {found} do CRM já está vinculado a {r.entidade} {owner}"
            )
        return "vinculados", 2

    async def look_up(
        self,
        provider: Provider,
        conta: str,
        r: _Record,
        key: str,
        scope: dict[str, str],
        lookups: list[log.Lookup],
    ) -> str | None:
        """The CRM id a lookup finds ("" for none); None when no lookup was made."""
        plan = self.plan
        if not plan.lookups or plan.lookups_stopped:
            return None
        if plan.lookups_sent >= self.max_lookups:
            plan.not_looked_up += 1
            return None
        count = counting()
        start = time.perf_counter()
        ok, status, message, found = True, None, "", ""
        try:
            found = await provider.find(r.entidade, key, scope) or ""
            if found:
                message = f"crmd plan: {key} encontrado no CRM ({found})"
            else:
                message = f"crmd plan: {key} não encontrado no CRM"
        except CrmError as exc:
            ok, status, message = False, exc.http_status, f"crmd plan: {exc.message}"
            if exc.kind is not ErrorKind.PERMANENT:
                plan.lookups_stopped = exc.message
        plan.lookups_sent += 1
        plan.lookup_requests += count.sent
        lookups.append(
            log.Lookup(
                conta,
                r.loja_id,
                r.entidade,
                r.entidade_id,
                ok,
                status if status is not None else _last(count.statuses),
                message,
                found or None,
                count.sent,
                int((time.perf_counter() - start) * 1000),
            )
        )
        return found if ok else None

    def error(self, entity: EntityPlan, r: _Record, why: str) -> tuple[str, int]:
        if len(entity.errors) < EXAMPLES:
            entity.errors.append(f"{r.entidade} {r.entidade_id} (loja {r.loja_id}): {why}")
        return "com erro", 0


def _last(statuses: list[int]) -> int | None:
    return statuses[-1] if statuses else None
