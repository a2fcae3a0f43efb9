"""The cron-style baseline: what the old PHP script did, in a loop instead of once a minute.

Take the 100 most urgent pending items, send them one by one (one HTTP call each), record each
(one transaction each), repeat until the queue is empty or `--seconds` have passed. Sequential,
one connection: the shape of the script crmd replaces, without its minute-long waits.
"""

from __future__ import annotations

import argparse
import time

import asyncpg
import uvloop

from bench.peers.work import Sender, Target

CLAIM = """
SELECT id, loja_id, entidade, entidade_id
  FROM crm_sync_queue
 WHERE estado = 'pendente'
 ORDER BY prioridade DESC, id
 LIMIT 100"""


async def run(dsn: str, target: Target, seconds: float) -> int:
    conn = await asyncpg.connect(dsn)
    sender = Sender(target, concurrency=1)
    done = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            batch = await conn.fetch(CLAIM)
            if not batch:
                break
            for item in batch:
                await sender.sync(
                    conn, item["loja_id"], item["entidade"], item["entidade_id"], item["id"]
                )
                done += 1
                if time.monotonic() >= deadline:
                    break
    finally:
        await sender.close()
        await conn.close()
    return done


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.cron")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--seconds", type=float, default=3600.0)
    args = parser.parse_args()
    target = Target(args.url, args.token, args.secret)
    done = uvloop.run(run(args.dsn, target, args.seconds))
    print(f"cron baseline: {done} items")


if __name__ == "__main__":
    main()
