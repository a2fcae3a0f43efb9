"""Scenario 1: rate-limit fidelity, with limits compressed in time (20/s and 100/10 s).

Three senders, each its own process, run side by side for the same time, each against its own
development CRM that enforces the same limits and answers in 50 ms, each with 4 requests in
flight at most:

- crmd: `crmd run` draining a backlog of a few thousand queue items;
- crmd limiter: the plain send loop of `bench.sendloop` behind `crmd.limiter.RateLimiter`;
- aiolimiter: the same send loop behind `AsyncLimiter(20, 1)` and `AsyncLimiter(100, 10)`.

From each server's ledger: the most requests sent in any window of each limit's length (429s
included: how hard the client pushed), the 429s, and the utilisation of the tightest limit.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass

import asyncpg

from bench import fixtures, proc
from bench.scenario import Context, Outcome
from crmd.dev.devcrm.ledger import LedgerEntry, max_in_window
from crmd.dev.devcrm.server import DevCrm

LIMITS: tuple[tuple[int, float], ...] = ((20, 1.0), (100, 10.0))
LATENCY = 0.05
IN_FLIGHT = 4  # as bench.sendloop


@dataclass
class Fidelity:
    sender: str
    requests: int
    rejected_429: int
    max_in_window: dict[str, int]
    """Per limit ("100/10s"): the most requests sent in any window of its length."""
    utilisation: float
    """Of the tightest limit: admitted requests in whole windows after the first request,
    over what the limit allows in them."""
    windows: int


async def run(ctx: Context) -> Outcome:
    seconds = 15.0 if ctx.quick else 60.0
    backlog = 1_000 if ctx.quick else 3_000
    async with (
        ctx.pg.fresh_database("rate") as db,
        fixtures.dev_crm(limits=LIMITS, latency=LATENCY) as crm_a,
        fixtures.dev_crm(limits=LIMITS, latency=LATENCY) as crm_b,
        fixtures.dev_crm(limits=LIMITS, latency=LATENCY) as crm_c,
    ):
        # Everything is set up before any sender starts: the servers share this process's event
        # loop, and a busy loop would stamp arrivals late.
        conn = await asyncpg.connect(db.dsn)
        try:
            await fixtures.seed_known(conn, items=backlog, lojas=1)
            for crm in (crm_a, crm_b, crm_c):
                await fixtures.populate(crm, conn)
        finally:
            await conn.close()
        config = fixtures.crmd_config(
            ctx.tmp / "rate-crmd.toml", db.dsn, crm_a.url, limits=LIMITS, concurrency=IN_FLIGHT
        )
        senders = [
            ("crmd", crm_a, fixtures.crmd_argv(config)),
            ("crmd limiter", crm_b, _loop_argv(crm_b, "crmd", seconds, backlog)),
            ("aiolimiter", crm_c, _loop_argv(crm_c, "aiolimiter", seconds, backlog)),
        ]
        results = await asyncio.gather(
            *(_send(ctx, name, crm, argv, seconds) for name, crm, argv in senders)
        )
    return _outcome(results, seconds, backlog)


def _outcome(results: list[Fidelity], seconds: float, backlog: int) -> Outcome:
    out = Outcome("rate", f"Rate-limit fidelity ({_limits_text()}, 50 ms calls)")
    window_names = [_name(lim) for lim in LIMITS]
    out.rows.append(
        ("sender", "requests", "429s", *(f"max in {n}" for n in window_names), "utilisation")
    )
    for r in results:
        out.rows.append(
            (
                r.sender,
                str(r.requests),
                str(r.rejected_429),
                *(str(r.max_in_window[n]) for n in window_names),
                f"{r.utilisation:.1%}",
            )
        )
    out.figures = {
        "limits": [{"requests": n, "per_seconds": s} for n, s in LIMITS],
        "latency_seconds": LATENCY,
        "in_flight": IN_FLIGHT,
        "sending_seconds": seconds,
        "backlog_items": backlog,
        "senders": [asdict(r) for r in results],
    }
    crmd = results[0]
    over = [_name(lim) for lim in LIMITS if crmd.max_in_window[_name(lim)] > lim[0]]
    out.goal("crmd: no window over its limit", not over, ", ".join(over) or "none over")
    out.goal("crmd: zero 429s", crmd.rejected_429 == 0, str(crmd.rejected_429))
    out.goal("crmd: utilisation >= 99%", crmd.utilisation >= 0.99, f"{crmd.utilisation:.1%}")
    return out


def _loop_argv(crm: DevCrm, limiter: str, seconds: float, records: int) -> list[str]:
    limits = [f"--limit={n}/{s:g}" for n, s in LIMITS]
    return [
        *proc.python_argv("-m", "bench.sendloop", "--url", crm.url, "--limiter", limiter),
        *("--token", fixtures.ACCESS_TOKEN, "--secret", fixtures.SECRET_TOKEN),
        *limits,
        *("--seconds", str(seconds), "--records", str(records)),
    ]


async def _send(ctx: Context, name: str, crm: DevCrm, argv: list[str], seconds: float) -> Fidelity:
    """Run one sender for `seconds`: crmd is stopped with SIGTERM that long after its first
    request; a send loop stops by itself."""
    log = ctx.tmp / f"rate-{name.replace(' ', '-')}.log"
    async with proc.running(argv, log) as child:
        first = await _first_request(crm, child)
        if name == "crmd":
            await asyncio.sleep(max(first + seconds - time.monotonic(), 0))
            await proc.terminate(child)
        else:
            await proc.wait(child, within=seconds + 30)
        if child.usage is None or child.usage.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{child.log_tail()}")
    return _fidelity(name, crm.ledger)


async def _first_request(crm: DevCrm, child: proc.Child) -> float:
    deadline = time.monotonic() + 60
    while not crm.ledger:
        if child.usage is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{child.argv[1:4]} sent nothing:\n{child.log_tail()}")
        await asyncio.sleep(0.02)
    return crm.ledger[0].monotonic


# --- reading the ledger ---------------------------------------------------------------------------


def _fidelity(sender: str, ledger: list[LedgerEntry]) -> Fidelity:
    admitted = sorted(e.monotonic for e in ledger if e.counted)
    requests, per = min(LIMITS, key=lambda lim: lim[0] / lim[1])
    windows = int((admitted[-1] - admitted[0]) // per) if admitted else 0
    in_windows = sum(1 for t in admitted if t < admitted[0] + windows * per) if windows else 0
    return Fidelity(
        sender=sender,
        requests=len(ledger),
        rejected_429=sum(1 for e in ledger if e.status == 429),
        max_in_window={
            _name(lim): max_in_window(ledger, lim[1], all_requests=True) for lim in LIMITS
        },
        utilisation=in_windows / (windows * requests) if windows else 0.0,
        windows=windows,
    )


def _name(limit: tuple[int, float]) -> str:
    return f"{limit[0]}/{limit[1]:g}s"


def _limits_text() -> str:
    return " and ".join(_name(lim) for lim in LIMITS)
