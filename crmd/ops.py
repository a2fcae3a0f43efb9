"""Operator operations: enqueue in bulk, status, failed items, retry and cleanup.

One implementation shared by the commands (`crmd enqueue`, `crmd status`, ...), the admin HTTP
API and the daemon's timers, so a button on the dashboard and a command in a terminal do exactly
the same thing. Every statement is in `crmd/sql/ops.sql`. Bad input raises `InvalidRequest`,
whose message names the input; callers turn it into exit 64 or HTTP 400.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from crmd.config import ENTITIES, CleanupSettings
from crmd.crm.accounts import Account
from crmd.store.queue import DEFAULT_PRIORITY
from crmd.store.sql import load, queries

log = structlog.get_logger("crmd.ops")
ops: dict[str, str] = load("ops.sql")

# Records per bulk statement (and transaction): short enough that no producer waits long on a
# pending row we touch, long enough that a million records go in well under a minute.
ENQUEUE_CHUNK = 10_000
DEFAULT_SINCE_DAYS: dict[str, int | None] = {
    "clientes": None,
    "produtos": None,
    "vendas": 30,
    "atividades": None,
}
RECENT_ERRORS = 10
MAX_SINCE_DAYS = 36_500
MAX_PRIORITY = 32_767  # the queue's prioridade is a smallint


class InvalidRequest(ValueError):
    """An operator's request that cannot be carried out as asked; the message says why."""


@dataclass
class EnqueueResult:
    entidade: str
    per_loja: dict[int, int] = field(default_factory=dict)  # records found, per loja
    created: int = 0  # new queue items (the rest were already pending and coalesced)
    priority: int = 0
    since_days: int | None = None

    @property
    def total(self) -> int:
        return sum(self.per_loja.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "entidade": self.entidade,
            "per_loja": {str(k): v for k, v in sorted(self.per_loja.items())},
            "total": self.total,
            "created": self.created,
            "priority": self.priority,
            "since_days": self.since_days,
        }


@dataclass(frozen=True)
class CleanupResult:
    log_rows: int
    queue_rows: int
    dry_run: bool
    log_before: datetime
    queue_before: datetime

    def __str__(self) -> str:
        verb = "seriam removidos" if self.dry_run else "removidos"
        return f"log: {self.log_rows} {verb}; fila: {self.queue_rows} concluídos {verb}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "log_rows": self.log_rows,
            "queue_rows": self.queue_rows,
            "dry_run": self.dry_run,
            "log_before": self.log_before.isoformat(),
            "queue_before": self.queue_before.isoformat(),
        }


# --- enqueue --------------------------------------------------------------------------------


def check_entity(entidade: str) -> str:
    if entidade not in ENTITIES:
        raise InvalidRequest(
            f"unknown entidade {entidade!r}; expected one of {', '.join(ENTITIES)}"
        )
    return entidade


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}, not {value!r}")
    return value


async def enqueue_entities(
    conn: asyncpg.Connection,
    entidade: str,
    *,
    lojas: Sequence[int] | None,
    since_days: int | None,
    priority: int | None,
    progress: Callable[[int], None] | None = None,
) -> EnqueueResult:
    """Enqueue every active record of `entidade` (the old manual sync scripts), in bulk.

    clientes and produtos: active and not deleted (with `since_days`, changed in those days);
    vendas: not deleted, dated in the last `since_days` days (30 when None); atividades: not
    deleted (with `since_days`, dated in those days). `lojas` None means every loja. Records are
    read in id order, ENQUEUE_CHUNK per statement; `progress` gets the running count after each.
    """
    check_entity(entidade)
    prio = DEFAULT_PRIORITY[entidade] if priority is None else priority
    _check_int("priority", prio, 0, MAX_PRIORITY)
    days = DEFAULT_SINCE_DAYS[entidade] if since_days is None else since_days
    if days is not None:
        _check_int("since_days", days, 1, MAX_SINCE_DAYS)
    result = EnqueueResult(entidade, priority=prio, since_days=days)
    wanted = await _lojas(conn, lojas)
    result.per_loja = dict.fromkeys(wanted, 0)
    source = ops[f"source_{entidade}"]
    lojas_arg = None if lojas is None else wanted
    after = 0
    while True:
        rows = await _insert_selected(conn, source, after, ENQUEUE_CHUNK, lojas_arg, days, prio)
        if not rows:
            break
        for r in rows:
            result.per_loja[r["loja_id"]] = result.per_loja.get(r["loja_id"], 0) + r["found"]
            result.created += r["created"]
        after = max(r["last_id"] for r in rows)
        if progress is not None:
            progress(result.total)
        if sum(r["found"] for r in rows) < ENQUEUE_CHUNK:
            break
    log.info(
        "enqueued",
        entidade=entidade,
        total=result.total,
        created=result.created,
        priority=prio,
        since_days=days,
        lojas=lojas_arg,
    )
    return result


async def _lojas(conn: asyncpg.Connection, lojas: Sequence[int] | None) -> list[int]:
    """The lojas to report on: those asked for (each must exist), else every loja."""
    if lojas is None:
        return [r["id"] for r in await conn.fetch(ops["lojas_all"])]
    asked = sorted({_check_int("loja", n, 1, 2**31 - 1) for n in lojas})
    if not asked:
        raise InvalidRequest("lojas is empty: leave it out to enqueue every loja")
    found = [r["id"] for r in await conn.fetch(ops["lojas_existing"], asked)]
    missing = sorted(set(asked) - set(found))
    if missing:
        raise InvalidRequest(f"no loja with id {', '.join(map(str, missing))}")
    return found


async def _insert_selected(
    conn: asyncpg.Connection, source: str, *args: object
) -> list[asyncpg.Record]:
    """Run one chunk of the bulk enqueue in a transaction of its own, in the queue's bulk mode
    (ON CONFLICT coalesces; ending bulk mode also wakes the workers at commit)."""
    sql = ops["enqueue_selected"].replace("/*source*/", source, 1)
    async with conn.transaction():
        await conn.execute(queries["bulk_mode_on"])
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        await conn.execute(queries["bulk_mode_off"])
    return rows


# --- status ---------------------------------------------------------------------------------


def _empty_counts() -> dict[str, int]:
    return dict.fromkeys(ENTITIES, 0)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


async def status(
    conn: asyncpg.Connection, accounts_info: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The queue at a glance, as plain JSON-ready data (the old monitoring SQL, in one call).

    Reads only small partial indexes, so it answers in milliseconds on a queue of millions of
    rows. `accounts_info` (from `accounts_info()`) is known only inside the daemon; None means
    "not known here", not "no account paused".
    """
    started = time.perf_counter()
    depth = {s: _empty_counts() for s in ("pendente", "processando", "falhou")}
    oldest: datetime | None = None
    for r in await conn.fetch(ops["queue_depth"]):
        depth[r["estado"]][r["entidade"]] = r["n"]
        if r["estado"] == "pendente" and (oldest is None or r["oldest"] < oldest):
            oldest = r["oldest"]
    rates = await conn.fetchrow(ops["log_rates"])
    now: datetime = rates["now"]
    errors = [_error_row(r) for r in await conn.fetch(ops["last_errors"], RECENT_ERRORS)]
    attempts = rates["attempts_24h"]
    return {
        "generated_at": now.isoformat(),
        "queue": {
            "pending": depth["pendente"],
            "pending_total": sum(depth["pendente"].values()),
            "in_flight": depth["processando"],
            "in_flight_total": sum(depth["processando"].values()),
            "failed": depth["falhou"],
            "failed_total": sum(depth["falhou"].values()),
            "oldest_pending_at": _iso(oldest),
            "oldest_pending_age_seconds": (
                None if oldest is None else max((now - oldest).total_seconds(), 0.0)
            ),
        },
        "last_24h": {
            "attempts": attempts,
            "succeeded": rates["succeeded_24h"],
            "errors": attempts - rates["succeeded_24h"],
            "success_rate": None if not attempts else rates["succeeded_24h"] / attempts,
        },
        "last_hour": {"attempts": rates["attempts_1h"], "succeeded": rates["succeeded_1h"]},
        "recent_errors": errors,
        "accounts": accounts_info,
        "query_seconds": round(time.perf_counter() - started, 4),
    }


def _error_row(r: Mapping[str, Any]) -> dict[str, Any]:
    row = dict(r)
    row["criado_em"] = _iso(row["criado_em"])
    return row


def accounts_info(accounts: Mapping[str, Account]) -> list[dict[str, Any]]:
    """What `status` shows of each CRM account: pause, reason, and each limit's use right now."""
    info = []
    for name, account in sorted(accounts.items()):
        limiter = account.limiter
        until = limiter.paused_until
        info.append(
            {
                "name": name,
                "paused": until is not None,
                "paused_until": None if until is None else _iso(datetime.fromtimestamp(until, UTC)),
                "reason": limiter.pause_reason,
                "limits": [
                    {
                        "requests": lim.requests,
                        "per_seconds": lim.per_seconds,
                        "used": limiter.used(lim.per_seconds),
                    }
                    for lim in limiter.limits
                ],
            }
        )
    return info


# --- failed items and retry -----------------------------------------------------------------


async def failed(
    conn: asyncpg.Connection, entidade: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Failed items, most recent first, with the error that made them give up."""
    if entidade is not None:
        check_entity(entidade)
    _check_int("limit", limit, 1, 10_000)
    rows = await conn.fetch(ops["failed"], entidade, limit)
    items = []
    for r in rows:
        item = dict(r)
        item["criado_em"] = _iso(item["criado_em"])
        item["processado_em"] = _iso(item["processado_em"])
        items.append(item)
    return items


async def retry(
    conn: asyncpg.Connection,
    *,
    ids: Sequence[int] | None = None,
    entidade: str | None = None,
    all_failed: bool = False,
) -> int:
    """Make failed items pending again, with fresh attempts, due now; returns how many failed
    items left the failed state (revived, or folded into an item of the same record that already
    waits). Exactly one of `ids`, `entidade` and `all_failed` selects them."""
    chosen = sum([ids is not None, entidade is not None, all_failed])
    if chosen != 1:
        raise InvalidRequest("choose exactly one of ids, entidade or all_failed")
    if ids is not None:
        if not ids:
            raise InvalidRequest("ids is empty: name at least one queue item id")
        ids = [_check_int("id", i, 1, 2**63 - 1) for i in ids]
    if entidade is not None:
        check_entity(entidade)
    try:
        row = await _retry_once(conn, ids, entidade)
    except asyncpg.UniqueViolationError:
        # A producer made one of the records pending while we looked: look again, and fold.
        row = await _retry_once(conn, ids, entidade)
    log.info(
        "retry",
        ids=ids,
        entidade=entidade,
        all_failed=all_failed,
        revived=row["revived"],
        folded=row["folded"],
    )
    return int(row["revived"] + row["folded"])


async def _retry_once(
    conn: asyncpg.Connection, ids: Sequence[int] | None, entidade: str | None
) -> asyncpg.Record:
    async with conn.transaction():
        row: asyncpg.Record = await conn.fetchrow(ops["retry"], ids, entidade)
        await conn.execute(ops["wake_workers"])
    return row


# --- cleanup --------------------------------------------------------------------------------


async def cleanup(
    conn: asyncpg.Connection, settings: CleanupSettings, *, dry_run: bool = False
) -> CleanupResult:
    """Delete old log rows and old done queue items (the old daily 03:00 script), in batches of
    `settings.batch_size` rows, each its own short transaction. A dry run only counts."""
    cut = await conn.fetchrow(
        ops["cleanup_cutoffs"], settings.log_retention_days, settings.queue_retention_days
    )
    log_before, queue_before = cut["log_before"], cut["queue_before"]
    if dry_run:
        log_rows = await conn.fetchval(ops["cleanup_log_count"], log_before)
        queue_rows = await conn.fetchval(ops["cleanup_queue_count"], queue_before)
    else:
        log_rows = await _delete_batched(conn, "cleanup_log_batch", log_before, settings.batch_size)
        queue_rows = await _delete_batched(
            conn, "cleanup_queue_batch", queue_before, settings.batch_size
        )
        log.info("cleanup", log_rows=log_rows, queue_rows=queue_rows)
    return CleanupResult(log_rows, queue_rows, dry_run, log_before, queue_before)


async def _delete_batched(conn: asyncpg.Connection, query: str, before: datetime, size: int) -> int:
    total = 0
    while True:
        status_line = await conn.execute(ops[query], before, size)
        deleted = int(status_line.rsplit(" ", 1)[-1])
        total += deleted
        if deleted < size:
            return total


def format_age(seconds: float) -> str:
    """A duration for people: 45 s, 12 min, 3.5 h, 2.0 dias (the status output's language)."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} dias"
