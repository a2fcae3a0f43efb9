"""Scenario: scale. One budget shared by several instances, an instance lost mid-backlog, many
accounts at once, and what a grant costs the database.

- Shared budget: 1, 2 and 4 `crmd run` processes on one database and one account, against a CRM
  that enforces 20/s and 300/10 s: no window over its limit, no 429, the tightest window used to
  the full, and the aggregate no larger with more instances.
- Availability: 2 instances; one is killed (-9) mid-backlog; the other goes on with the whole
  budget, and every item is sent once.
- Many accounts: one instance, 200 accounts of 3/s each, the CRM counting per access token: every
  account at its budget over the measured time, crmd's peak RSS and CPU per 1,000 requests.
- Grant cost: the grant function's own time in the database, p50 and p99, with 1 and 4 clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg

from bench import proc, report
from bench.scenario import Context, Outcome
from crmd.config import RateLimit
from crmd.dev.devcrm.ledger import LedgerEntry, max_in_window
from crmd.dev.devcrm.server import DevCrm, DevCrmConfig, token_id
from crmd.store.budget import PgBudget

ACCESS, SECRET = "scale-access", "scale-secret"
LIMITS = ((20, 1.0), (300, 10.0))
MB = 1024 * 1024


def _config(path: Path, dsn: str, url: str, accounts: int = 0, *, lease: float = 5.0) -> Path:
    """A crmd config; with `accounts`, loja n (1..accounts) has an account of its own at 3/s."""
    lines = [
        f"[database]\ndsn = {json.dumps(dsn)}\npool_max_size = 10\n",
        f"[queue]\nbatch_size = 200\nlease_seconds = {lease}\n",
        f"[crm]\nbase_url = {json.dumps(url)}\naccess_token = {json.dumps(ACCESS)}",
        f"secret_access_token = {json.dumps(SECRET)}\nconcurrency = 4",
        "limits = ["
        + ", ".join(f"{{requests = {n}, per_seconds = {s}}}" for n, s in LIMITS)
        + "]\n",
    ]
    for n in range(1, accounts + 1):
        lines.append(
            f'[crm.lojas.{n}]\nbase_url = {json.dumps(url)}\naccess_token = "tok-{n}"\n'
            f'secret_access_token = "sec-{n}"\nconcurrency = 2\n'
            "limits = [{requests = 3, per_seconds = 1.0},"
            " {requests = 30000, per_seconds = 86400.0}]\n"
        )
    lines.append('[sync]\nlookup_unknown = false\n[admin]\nlisten = ""\n')
    lines.append('[log]\nlevel = "warning"\nformat = "json"\n')
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "crmd", "run", "--config", str(config)]


async def _backlog(conn: asyncpg.Connection, count: int, lojas: int = 1) -> None:
    """`count` produtos, round-robin over the lojas, so the queue interleaves the accounts."""
    await conn.execute(
        "INSERT INTO lojas (id, nome) SELECT g, 'Loja ' || g FROM generate_series(1, $1) g",
        lojas,
    )
    await conn.execute(
        """INSERT INTO produtos (id, loja_id, codigo_interno, nome, valor_custo)
           SELECT g, 1 + (g - 1) % $2, 'S-' || g, 'Produto ' || g, 1
             FROM generate_series(1, $1::integer) g""",
        count,
        lojas,
    )


def _rate(entries: list[LedgerEntry], start: float, end: float) -> float:
    admitted = [e for e in entries if e.counted and start <= e.monotonic < end]
    return len(admitted) / (end - start) if end > start else 0.0


async def _shared(ctx: Context, instances: int, seconds: float) -> dict[str, float]:
    """`instances` processes on one account's backlog; figures over `seconds` of steady state."""
    backlog = int(20 * (seconds + 6))
    async with (
        ctx.pg.fresh_database(f"scale{instances}") as db,
        DevCrm(DevCrmConfig(access_token=ACCESS, secret_access_token=SECRET, limits=LIMITS)) as crm,
    ):
        conn = await asyncpg.connect(db.dsn)
        try:
            await _backlog(conn, backlog)
        finally:
            await conn.close()
        config = _config(ctx.tmp / f"scale{instances}.toml", db.dsn, crm.url)
        async with contextlib.AsyncExitStack() as stack:
            children = [
                await stack.enter_async_context(
                    proc.running(_argv(config), ctx.tmp / f"scale{instances}-{n}.log")
                )
                for n in range(instances)
            ]
            while not crm.ledger:
                await asyncio.sleep(0.05)
            begin = crm.ledger[0].monotonic + 2.0  # past the start-up
            await asyncio.sleep(2.0 + seconds)
            ledger = crm.ledger
            cpu = sum(c.cpu_between(begin, begin + seconds) for c in children)
    pushed = [e for e in ledger if e.fault is None]
    rate = _rate(ledger, begin, begin + seconds)
    return {
        "instances": instances,
        "cpu_per_1000": round(1000 * cpu / (rate * seconds), 3) if rate else 0.0,
        "rate": round(rate, 2),
        "utilisation": round(rate / 20, 4),
        "max_1s": max_in_window(pushed, 1.0, all_requests=True),
        "max_10s": max_in_window(pushed, 10.0, all_requests=True),
        "rejected_429": sum(1 for e in pushed if e.status == 429),
    }


async def _availability(ctx: Context, lease: float) -> dict[str, float]:
    """Two instances; one killed mid-backlog: the other's rate, and every item sent once."""
    backlog = 400
    async with (
        ctx.pg.fresh_database("scale_kill") as db,
        DevCrm(DevCrmConfig(access_token=ACCESS, secret_access_token=SECRET, limits=LIMITS)) as crm,
    ):
        conn = await asyncpg.connect(db.dsn)
        try:
            await _backlog(conn, backlog)
            config = _config(ctx.tmp / "scale-kill.toml", db.dsn, crm.url, lease=lease)
            async with (
                proc.running(_argv(config), ctx.tmp / "kill-a.log") as survivor,
                proc.running(_argv(config), ctx.tmp / "kill-b.log") as victim,
            ):
                while len(crm.ledger) < 60:
                    await asyncio.sleep(0.05)
                assert victim.popen is not None
                victim.popen.kill()
                killed = time.monotonic()
                await asyncio.sleep(lease + 4.0)
                recovered = _rate(crm.ledger, killed + lease + 1.0, killed + lease + 4.0)
                deadline = time.monotonic() + 60
                while await conn.fetchval(
                    "SELECT count(*) FROM crm_sync_queue WHERE estado <> 'concluido'"
                ):
                    assert time.monotonic() < deadline, "the survivor did not finish"
                    await asyncio.sleep(0.2)
                del survivor
            created = await conn.fetchval("SELECT count(DISTINCT external_id) FROM crm_sync_map")
        finally:
            await conn.close()
    posts = sum(1 for e in crm.ledger if e.method == "POST" and e.status == 200)
    return {
        "rate_after": round(recovered, 2),
        "items": backlog,
        "created": int(created),
        "posts": posts,
        "in_crm": len(crm.records("produtos")),
    }


async def _many(ctx: Context, accounts: int, seconds: float) -> dict[str, float]:
    """One instance, `accounts` accounts of 3/s each (the CRM counts per token)."""
    backlog = int(accounts * 3 * (seconds + 8))
    tokens = tuple((f"tok-{n}", f"sec-{n}") for n in range(1, accounts + 1))
    async with ctx.pg.fresh_database("scale_many") as db:
        config_crm = DevCrmConfig(
            access_token=ACCESS,
            secret_access_token=SECRET,
            limits=((3, 1.0),),
            other_tokens=tokens,
            limits_per_token=True,
        )
        async with DevCrm(config_crm) as crm:
            conn = await asyncpg.connect(db.dsn)
            try:
                await _backlog(conn, backlog, lojas=accounts)
            finally:
                await conn.close()
            config = _config(ctx.tmp / "scale-many.toml", db.dsn, crm.url, accounts)
            async with proc.running(
                _argv(config), ctx.tmp / "many.log", progress=lambda: len(crm.ledger)
            ) as child:
                while not crm.ledger:
                    await asyncio.sleep(0.05)
                begin = crm.ledger[0].monotonic + 5.0  # every account under way
                await asyncio.sleep(begin - time.monotonic())
                ticks = report.cpu_ticks()
                await asyncio.sleep(seconds)
                steal = report.steal_share(ticks, report.cpu_ticks())
                await asyncio.sleep(0.2)  # the last requests' handlers write their ledger lines
                ledger = crm.ledger
                cpu = child.cpu_between(begin, begin + seconds)
                peak = child.peak_rss
    per_account: dict[str, int] = defaultdict(int)
    for e in ledger:
        if e.counted and begin <= e.monotonic < begin + seconds:
            per_account[e.token or ""] += 1
    shares = [per_account.get(token_id(t), 0) / (3 * seconds) for t, _ in tokens]
    requests = sum(per_account.values())
    return {
        "accounts": accounts,
        "worst_account": round(min(shares), 4),
        "median_account": round(statistics.median(shares), 4),
        "peak_rss_mb": round(peak / MB, 1),
        "cpu_per_1000": round(1000 * cpu / requests, 3) if requests else 0.0,
        "rejected_429": sum(1 for e in ledger if e.status == 429),
        "cpu_steal": round(steal, 4),
    }


async def _grant_cost(ctx: Context, clients: int, grants: int, *, shared: bool) -> dict[str, Any]:
    """The grant function's own time in the database, `clients` at once: on one account
    (`shared`, so they queue for its rows: lock waits included) or each on an account of its
    own (no row shared)."""
    async with ctx.pg.fresh_database(f"grants{clients}") as db:
        pool = await asyncpg.create_pool(db.dsn, min_size=clients, max_size=clients)
        try:
            budget = PgBudget(lambda: pool)
            windows = [
                RateLimit(requests=10**6, per_seconds=1.0),
                RateLimit(requests=10**6, per_seconds=86_400.0),
            ]
            names = ["grant-bench"] if shared else [f"grant-bench-{n}" for n in range(clients)]
            for name in names:
                await budget.configure(name, windows, 0.0, 0.5)
            times: list[float] = []

            async def client(n: int) -> None:
                name = names[n % len(names)]
                for _ in range(grants // clients):
                    answer = await budget.grant(name, [uuid.uuid4()], False, 30.0)
                    times.append(answer.db_ms)

            await asyncio.gather(*(client(n) for n in range(clients)))
            await budget.close()  # its renewer keeps the (never answered) grants' slots held
        finally:
            await pool.close()
    times.sort()
    return {
        "clients": clients,
        "one_account": shared,
        "p50_ms": round(times[len(times) // 2], 3),
        "p99_ms": round(times[int(len(times) * 0.99)], 3),
    }


async def run(ctx: Context) -> Outcome:
    out = Outcome("scale", "Scale: one budget, many instances, many accounts")
    seconds = 8.0 if ctx.quick else 20.0
    shared = [await _shared(ctx, n, seconds) for n in (1, 2, 4)]
    out.rows.append(("instances", "sends/s", "utilisation", "max 1 s", "max 10 s", "429s"))
    for s in shared:
        out.rows.append(
            (
                str(s["instances"]),
                f"{s['rate']:.2f}",
                f"{s['utilisation']:.1%}",
                str(s["max_1s"]),
                str(s["max_10s"]),
                str(s["rejected_429"]),
            )
        )
    single = shared[0]["rate"]
    out.goal(
        "shared budget: no window over its limit",
        all(s["max_1s"] <= 20 and s["max_10s"] <= 300 for s in shared),
        ", ".join(f"{s['instances']}: {s['max_1s']}/1 s {s['max_10s']}/10 s" for s in shared),
    )
    out.goal(
        "shared budget: 0 x 429",
        all(s["rejected_429"] == 0 for s in shared),
        str(sum(s["rejected_429"] for s in shared)),
    )
    out.goal(
        "shared budget: utilisation >= 98 % at 1, 2 and 4 instances",
        all(s["utilisation"] >= 0.98 for s in shared),
        ", ".join(f"{s['utilisation']:.1%}" for s in shared),
    )
    out.goal(
        "shared budget: aggregate within 2 % of one instance",
        all(abs(s["rate"] - single) <= 0.02 * single for s in shared),
        ", ".join(f"{s['rate']:.2f}/s" for s in shared),
    )
    lease = 5.0
    kill = await _availability(ctx, lease)
    out.goal(
        "availability: the survivor has the whole budget within the lease",
        kill["rate_after"] >= 0.95 * 20,
        f"{kill['rate_after']:.2f}/s after {lease:g} s",
    )
    out.goal(
        "availability: nothing lost or doubled",
        kill["in_crm"] == kill["items"] == kill["created"] == kill["posts"],
        f"{kill['in_crm']} in the CRM, {kill['posts']} creates, {kill['items']} items",
    )
    accounts = 50 if ctx.quick else 200
    many = await _many(ctx, accounts, 15.0 if ctx.quick else 60.0)
    out.notes.append(f"crmd CPU per 1,000 requests, one account: {shared[0]['cpu_per_1000']} s")
    out.rows.append(("accounts", "worst", "median", "peak RSS", "CPU/1000", "429s"))
    out.rows.append(
        (
            str(many["accounts"]),
            f"{many['worst_account']:.1%}",
            f"{many['median_account']:.1%}",
            f"{many['peak_rss_mb']} MB",
            f"{many['cpu_per_1000']} s",
            str(many["rejected_429"]),
        )
    )
    out.notes.append(
        f"CPU stolen by the hypervisor while many accounts were measured: {many['cpu_steal']:.1%}"
    )
    out.goal(
        f"many accounts: every one of {accounts} at >= 97 % of its budget",
        many["worst_account"] >= 0.97,
        f"worst {many['worst_account']:.1%}",
    )
    out.goal(
        "many accounts: peak RSS < 150 MB", many["peak_rss_mb"] < 150, f"{many['peak_rss_mb']} MB"
    )
    grants = 2000 if ctx.quick else 8000
    costs = [
        await _grant_cost(ctx, 1, grants, shared=True),
        await _grant_cost(ctx, 4, grants, shared=False),
        await _grant_cost(ctx, 4, grants, shared=True),
    ]
    out.rows.append(("grants", "clients", "accounts", "p50", "p99", ""))
    for c in costs:
        used = "1" if c["one_account"] else str(c["clients"])
        out.rows.append(
            ("db time", str(c["clients"]), used, f"{c['p50_ms']} ms", f"{c['p99_ms']} ms", "")
        )
    out.goal(
        "grant cost: p50 well under 1 ms of database time (no account shared)",
        all(c["p50_ms"] < 0.5 for c in costs[:2]),
        ", ".join(f"{c['p50_ms']} ms" for c in costs[:2]),
    )
    out.figures = {
        "shared": shared,
        "availability": kill,
        "many_accounts": many,
        "grant_cost": costs,
    }
    return out
