"""`crmd dev crm`: run the development CRM server until SIGINT or SIGTERM.

Only argparse is imported at module level: `crmd --help` builds this parser and should not pay
for aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crmd.dev.devcrm.server import DevCrm

EX_OK = 0
EX_UNAVAILABLE = 69


def _limit(text: str) -> tuple[int, float]:
    requests, sep, seconds = text.partition("/")
    try:
        limit = (int(requests), float(seconds))
    except ValueError:
        limit = (0, 0.0)
    if not sep or limit[0] < 1 or limit[1] <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected REQUESTS/SECONDS, such as 3/1")
    return limit


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: expected a fraction from 0 to 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: expected seconds >= 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8800,
        help="port to listen on; 0 picks a free one (default 8800)",
    )
    parser.add_argument(
        "--access-token",
        default="dev-access-token",
        metavar="TOKEN",
        help="the access-token header clients must send (default dev-access-token)",
    )
    parser.add_argument(
        "--secret-access-token",
        default="dev-secret-access-token",
        metavar="TOKEN",
        help="the secret-access-token header clients must send (default dev-secret-access-token)",
    )
    parser.add_argument(
        "--limit",
        type=_limit,
        action="append",
        metavar="REQUESTS/SECONDS",
        help="a sliding-window rate limit, answered with 429 when exceeded; repeat for several "
        "(default: 3/1 and 30000/86400, as GestãoClick)",
    )
    parser.add_argument("--no-limits", action="store_true", help="enforce no rate limits at all")
    parser.add_argument(
        "--latency",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="wait this long before answering every API request (default 0)",
    )
    parser.add_argument(
        "--error-rate",
        type=_fraction,
        default=0.0,
        metavar="FRACTION",
        help="answer this fraction of admitted requests with 500, 502 or 503 (default 0)",
    )
    parser.add_argument(
        "--drop-rate",
        type=_fraction,
        default=0.0,
        metavar="FRACTION",
        help="close the connection without answering for this fraction of requests (default 0)",
    )
    parser.add_argument(
        "--retry-after",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="send a Retry-After header with this value on 429s (default: none, as GestãoClick)",
    )
    empty = parser.add_mutually_exclusive_group()
    empty.add_argument(
        "--empty-list-as-string",
        dest="empty_list_as_string",
        action="store_true",
        default=True,
        help='answer an empty list with "data": "Não há dados!", as GestãoClick has been seen '
        "to (the default)",
    )
    empty.add_argument(
        "--empty-list-as-array",
        dest="empty_list_as_string",
        action="store_false",
        help="answer an empty list with [] instead",
    )
    parser.add_argument(
        "--loose-filters",
        action="store_true",
        help="list filters match every record containing the value, not only equal ones, as "
        "list filters have been seen to",
    )
    parser.add_argument(
        "--existing-vendas",
        type=int,
        default=0,
        metavar="N",
        help="start with N vendas of the account's own, numbered 1..N, of a cliente of its own "
        "(default 0)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="random seed for which requests get injected errors and drops, for repeatable runs",
    )


def main(args: argparse.Namespace) -> int:
    from crmd.dev.devcrm.limits import DEFAULT_LIMITS
    from crmd.dev.devcrm.server import DevCrm, DevCrmConfig

    limits = () if args.no_limits else tuple(args.limit or DEFAULT_LIMITS)
    config = DevCrmConfig(
        access_token=args.access_token,
        secret_access_token=args.secret_access_token,
        limits=limits,
        latency=args.latency,
        error_rate=args.error_rate,
        drop_rate=args.drop_rate,
        retry_after=args.retry_after,
        empty_list_as_string=args.empty_list_as_string,
        seed=args.seed,
        loose_filters=args.loose_filters,
        existing_vendas=max(args.existing_vendas, 0),
    )
    crm = DevCrm(config, host=args.host, port=args.port)
    try:
        asyncio.run(_serve(crm))
    except OSError as exc:
        print(f"crmd dev crm: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    return EX_OK


async def _serve(crm: DevCrm) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with crm:
        limits = ", ".join(f"{n}/{s:g}s" for n, s in crm.config.limits) or "none"
        print(f"crmd dev crm: listening on {crm.url} (limits: {limits})", flush=True)
        await stop.wait()
