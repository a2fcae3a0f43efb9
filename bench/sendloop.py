"""A plain send loop behind a rate limiter, run as its own process by the rate scenario.

`python -m bench.sendloop --url URL --limiter crmd|aiolimiter --seconds S`: IN_FLIGHT workers
each wait for the limiter, send one PUT to an existing cliente, and repeat until S seconds have
passed. A 429 is not retried: the loop only shows what the limiter lets through.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import aiohttp
import uvloop
from aiolimiter import AsyncLimiter

from crmd.crm.limiter import RateLimiter

Acquire = Callable[[], Awaitable[object]]
IN_FLIGHT = 4


def crmd_limiter(limits: list[tuple[int, float]]) -> Acquire:
    return RateLimiter(limits, margin=0.01).acquire  # crmd's default limit_margin_seconds


def naive_limiter(limits: list[tuple[int, float]]) -> Acquire:
    """The naive configuration: one `AsyncLimiter(max_rate, period)` per limit, in a row."""
    buckets = [AsyncLimiter(n, s) for n, s in limits]

    async def acquire() -> None:
        for bucket in buckets:
            await bucket.acquire()

    return acquire


async def send(
    url: str, headers: dict[str, str], acquire: Acquire, seconds: float, records: int
) -> None:
    async with aiohttp.ClientSession(headers=headers) as session:

        async def worker(n: int) -> None:
            while True:
                await acquire()
                target = f"{url}/clientes/{n % records + 1}"
                async with session.put(target, json={"nome": f"Cliente {n}"}) as resp:
                    await resp.read()
                n += IN_FLIGHT

        workers = asyncio.gather(*(worker(i) for i in range(IN_FLIGHT)))
        with contextlib.suppress(TimeoutError):  # the timeout also ends workers waiting for a slot
            await asyncio.wait_for(workers, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sendloop")
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--limiter", choices=("crmd", "aiolimiter"), required=True)
    parser.add_argument("--limit", action="append", required=True, metavar="N/SECONDS")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--records", type=int, required=True, help="clientes 1..N exist")
    args = parser.parse_args()
    limits = [(int(n), float(s)) for n, s in (lim.split("/") for lim in args.limit)]
    acquire = (crmd_limiter if args.limiter == "crmd" else naive_limiter)(limits)
    headers = {"access-token": args.token, "secret-access-token": args.secret}
    uvloop.run(send(args.url, headers, acquire, args.seconds, args.records))


if __name__ == "__main__":
    main()
