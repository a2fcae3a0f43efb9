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
        raise argparse.ArgumentTypeError(f"{text!r}: esperado REQUISIÇÕES/SEGUNDOS, como 3/1")
    return limit


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: esperada uma fração de 0 a 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: esperados segundos >= 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="endereço onde escutar (padrão 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8800,
        help="porta onde escutar; 0 escolhe uma livre (padrão 8800)",
    )
    parser.add_argument(
        "--access-token",
        default="dev-access-token",
        metavar="TOKEN",
        help="o cabeçalho access-token que os clientes devem enviar (padrão dev-access-token)",
    )
    parser.add_argument(
        "--secret-access-token",
        default="dev-secret-access-token",
        metavar="TOKEN",
        help="o cabeçalho secret-access-token que os clientes devem enviar (padrão "
        "dev-secret-access-token)",
    )
    parser.add_argument(
        "--limit",
        type=_limit,
        action="append",
        metavar="REQUISIÇÕES/SEGUNDOS",
        help="um limite em janela deslizante, respondido com 429 quando passa; repita para "
        "vários (padrão: 3/1 e 30000/86400, como o GestãoClick)",
    )
    parser.add_argument("--no-limits", action="store_true", help="nenhum limite de requisições")
    parser.add_argument(
        "--latency",
        type=_seconds,
        default=0.0,
        metavar="SEGUNDOS",
        help="espera este tempo antes de responder cada requisição da API (padrão 0)",
    )
    parser.add_argument(
        "--error-rate",
        type=_fraction,
        default=0.0,
        metavar="FRAÇÃO",
        help="responde esta fração das requisições aceitas com 500, 502 ou 503 (padrão 0)",
    )
    parser.add_argument(
        "--drop-rate",
        type=_fraction,
        default=0.0,
        metavar="FRAÇÃO",
        help="fecha a conexão sem responder nesta fração das requisições (padrão 0)",
    )
    parser.add_argument(
        "--retry-after",
        type=_seconds,
        default=None,
        metavar="SEGUNDOS",
        help="envia Retry-After com este valor nos 429 (padrão: nenhum, como o GestãoClick)",
    )
    empty = parser.add_mutually_exclusive_group()
    empty.add_argument(
        "--empty-list-as-string",
        dest="empty_list_as_string",
        action="store_true",
        default=True,
        help='responde uma lista vazia com "data": "Não há dados!", como o GestãoClick já foi '
        "visto fazer (o padrão)",
    )
    empty.add_argument(
        "--empty-list-as-array",
        dest="empty_list_as_string",
        action="store_false",
        help="responde uma lista vazia com []",
    )
    parser.add_argument(
        "--loose-filters",
        action="store_true",
        help="os filtros de lista casam todo registro que contém o valor, não só os iguais, "
        "como já foi visto",
    )
    parser.add_argument(
        "--existing-vendas",
        type=int,
        default=0,
        metavar="N",
        help="começa com N vendas da própria conta, numeradas 1..N, de um cliente dela (padrão 0)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="semente aleatória de quais requisições recebem erros e quedas, para repetir",
    )
    parser.add_argument(
        "--state",
        metavar="ARQUIVO",
        help="guarda os registros neste arquivo JSON entre reinícios (lido ao iniciar, gravado "
        "logo após cada mudança e ao parar)",
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
        state_file=args.state,
    )
    crm = DevCrm(config, host=args.host, port=args.port)
    try:
        asyncio.run(_serve(crm))
    except OSError as exc:
        print(
            f"crmd dev crm: não foi possível escutar em {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return EX_UNAVAILABLE
    return EX_OK


async def _serve(crm: DevCrm) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with crm:
        limits = ", ".join(f"{n}/{s:g}s" for n, s in crm.config.limits) or "nenhum"
        print(f"crmd dev crm: escutando em {crm.url} (limites: {limits})", flush=True)
        await stop.wait()
