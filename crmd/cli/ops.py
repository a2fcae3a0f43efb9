"""Operator commands: enqueue, status, failed, retry and cleanup.

Thin wrappers over `crmd.ops`, which the admin API shares; this module only parses arguments and
prints. What operators read is in Portuguese, their language; `--help` and errors follow the rest
of the `crmd` command. Bad input exits 64 naming it, an unreachable database 69, a database
without crmd's schema 78.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import zoneinfo
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
from pydantic import ValidationError

from crmd.cli.common import Work, config_arg, settings_or_exit, with_connection
from crmd.config import Settings, split_hostport
from crmd.model import ENTITIES
from crmd.ops import cleanup, enqueue, failures
from crmd.ops.schedule import crons, timers_info
from crmd.ops.status import AccountReport, StatusReport, format_age, report
from crmd.service import logs

_SINCE = re.compile(r"^(\d+)d?$")


def register(sub: Any) -> None:
    """Add the operator subcommands to the `crmd` parser's subparsers."""
    p = sub.add_parser(
        "enqueue",
        help="enqueue every active record of an entity (a manual full sync)",
        description="Enqueue, in bulk, every active and not deleted cliente or produto, the "
        "vendas of the last 30 days, or every atividade, per loja, and print how many each loja "
        "had and the total. A record already waiting in the queue keeps one item, at the higher "
        "priority.",
    )
    config_arg(p)
    p.add_argument("entidade", choices=ENTITIES, help="what to enqueue")
    p.add_argument(
        "--loja",
        type=int,
        action="append",
        metavar="N",
        dest="lojas",
        help="only this loja (repeat for more; default: every loja)",
    )
    p.add_argument(
        "--since",
        type=_since,
        metavar="DAYS",
        help="only the last DAYS days, as 30d or 30: vendas and atividades by their date "
        "(vendas default 30d), clientes and produtos by their last change (default: all)",
    )
    p.add_argument(
        "--priority",
        type=int,
        metavar="P",
        help="queue priority, higher goes first (default: vendas 5, clientes and produtos 3, "
        "atividades 2)",
    )
    p.set_defaults(handler=cmd_enqueue)

    p = sub.add_parser(
        "status",
        help="show the queue: pending, in flight, failed, success rate, last errors",
        description="Show pending items per entity, items in flight, failed items, the success "
        "rate over the last 24 h, the successes of the last hour, the age of the oldest pending "
        "item and the last 10 errors. Paused accounts are known only to the running daemon: they "
        "are asked of its admin endpoint ([admin] listen) when it answers.",
    )
    config_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON (the same as GET /api/status)")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser(
        "failed",
        help="list failed items with their last error",
        description="List the queue items that gave up (estado 'falhou'), newest first, with the "
        "error that made them fail. `crmd retry` sends them again.",
    )
    config_arg(p)
    p.add_argument("--entidade", choices=ENTITIES, help="only this entity")
    p.add_argument(
        "--limit", type=int, default=50, metavar="N", help="at most N items (default 50)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_failed)

    p = sub.add_parser(
        "retry",
        help="make failed items pending again with fresh attempts",
        description="Put failed items back in the queue, due now, with their attempts reset. A "
        "record that already waits in the queue keeps its one item; the failed one is folded "
        "into it.",
    )
    config_arg(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id", type=int, nargs="+", metavar="N", dest="ids", help="these queue item ids"
    )
    which.add_argument("--entidade", choices=ENTITIES, help="every failed item of this entity")
    which.add_argument("--all-failed", action="store_true", help="every failed item")
    p.set_defaults(handler=cmd_retry)

    p = sub.add_parser(
        "cleanup",
        help="delete old log rows and old done queue items now",
        description="Delete log rows older than [cleanup] log_retention_days and done queue items "
        "processed more than [cleanup] queue_retention_days ago, in batches of [cleanup] "
        "batch_size rows (what the daemon's daily timer does). Failed items are kept.",
    )
    config_arg(p)
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    p.set_defaults(handler=cmd_cleanup)


def _since(text: str) -> int:
    match = _SINCE.match(text.strip())
    if not match or int(match[1]) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days such as 30d")
    return int(match[1])


def _run(settings: Settings, work: Work) -> int:
    """Set up logging, run `work` on a connection."""
    logs.configure(settings.log.level, settings.log.format)
    return with_connection(settings, work)


# --- enqueue --------------------------------------------------------------------------------


def cmd_enqueue(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args)

    async def work(conn: asyncpg.Connection) -> int:
        progress = _Progress(args.entidade) if sys.stderr.isatty() else None
        try:
            result = await enqueue.enqueue_entities(
                conn,
                args.entidade,
                settings.sources,
                lojas=args.lojas,
                since_days=args.since,
                priority=args.priority,
                progress=progress,
            )
        finally:
            if progress is not None:
                progress.done()
        for loja, found in sorted(result.per_loja.items()):
            print(f"Loja {loja}: {found} {args.entidade} encontrados")
        print(f"Total enfileirado: {result.total}")
        waiting = result.total - result.created
        print(f"({result.created} itens novos; {waiting} já aguardavam na fila)")
        return os.EX_OK

    return _run(settings, work)


class _Progress:
    """A counter on one terminal line (stderr), rewritten in place."""

    def __init__(self, entidade: str) -> None:
        self.entidade = entidade
        self.shown = False

    def __call__(self, count: int) -> None:
        sys.stderr.write(f"\r  {count} {self.entidade} enfileirados...")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


# --- status ---------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args)

    async def work(conn: asyncpg.Connection) -> int:
        status = await _daemon_status(settings.admin.listen)
        if status is None:  # no daemon answered: what the database says, without accounts
            tz = zoneinfo.ZoneInfo(settings.schedule.timezone)
            timers = await timers_info(conn, crons(settings.schedule), tz, datetime.now(UTC))
            status = await report(conn, timers=timers)
        if args.json:
            print(json.dumps(status.model_dump(mode="json"), indent=2, ensure_ascii=False))
        else:
            print(render_status(status, settings.admin.listen))
        return os.EX_OK

    return _run(settings, work)


async def _daemon_status(listen: str) -> StatusReport | None:
    """The running daemon's own report (paused accounts live in its memory); None if silent."""
    if not listen:
        return None
    host, port = split_hostport(listen)
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - listening everywhere: ask locally
        host = "127.0.0.1"
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/api/status"
    timeout = aiohttp.ClientTimeout(total=1.5)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url) as resp,
        ):
            if resp.status != 200:
                return None
            return StatusReport.model_validate(await resp.json())
    except (aiohttp.ClientError, TimeoutError, ValueError, ValidationError):
        return None


def render_status(status: StatusReport, listen: str) -> str:
    q = status.queue
    lines = [f"{'Fila':<12}{'pendentes':>11}{'processando':>13}{'falhas':>9}{'ignorados':>11}"]
    for entidade in ENTITIES:
        lines.append(
            f"  {entidade:<10}{q.pending[entidade]:>11}{q.in_flight[entidade]:>13}"
            f"{q.failed[entidade]:>9}{q.ignored.get(entidade, 0):>11}"
        )
    lines.append(
        f"  {'total':<10}{q.pending_total:>11}{q.in_flight_total:>13}{q.failed_total:>9}"
        f"{q.ignored_total:>11}"
    )
    age = q.oldest_pending_age_seconds
    lines.append(
        "Pendente mais antigo: "
        + ("nenhum" if age is None else f"há {format_age(age)} ({q.oldest_pending_at})")
    )
    day, hour = status.last_24h, status.last_hour
    rate = "sem tentativas" if day.success_rate is None else f"{day.success_rate:.1%}"
    ignored = f" ({day.ignored} ignorados, à parte)" if day.ignored else ""
    lines.append(
        f"Últimas 24 h: {day.attempts} tentativas, {day.succeeded} com sucesso, "
        f"{day.errors} erros; taxa de sucesso {rate}{ignored}"
    )
    lines.append(f"Última hora: {hour.succeeded} enviados com sucesso ({hour.attempts} tentativas)")
    lines.extend(_render_accounts(status.accounts, listen))
    if status.instances:
        lines.append("Instâncias:")
        for i in status.instances:
            state = "ativa" if i.alive else "SEM SINAL"
            lines.append(
                f"  {i.host} pid {i.pid} (crmd {i.version}, desde {i.started_at[:19]}): {state},"
                f" visto em {i.seen_at[:19]}"
            )
    if status.uncertain_creates:
        lines.append("Criações incertas (confira no CRM; depois crmd retry):")
        for u in status.uncertain_creates:
            key = f", chave {u.chave}" if u.chave else ", sem chave"
            lines.append(
                f"  {u.entidade} {u.entidade_id} (conta {u.conta}{key}, desde {u.since[:19]})"
            )
    errors = status.recent_errors
    lines.append("Últimos erros:" if errors else "Últimos erros: nenhum")
    for e in errors:
        http = f" HTTP {e.http_status}" if e.http_status else ""
        lines.append(
            f"  {e.criado_em[:19]} {e.entidade} {e.entidade_id} (loja {e.loja_id}, "
            f"conta {e.conta}, tentativa {e.tentativa}){http}: {e.mensagem}"
        )
    return "\n".join(lines)


def _render_accounts(accounts: list[AccountReport] | None, listen: str) -> list[str]:
    if accounts is None:
        where = listen or "desligado ([admin] listen vazio)"
        return [f"Contas: daemon não respondeu em {where}; pausas só ele conhece"]
    lines = ["Contas:"]
    for a in accounts:
        state = "ativa"
        if a.paused:
            state = f"PAUSADA até {(a.paused_until or '')[:19]}: {a.reason}"
        usage = ", ".join(f"{lim.used}/{lim.requests} em {lim.per_seconds:g}s" for lim in a.limits)
        lines.append(f"  {a.name}: {state}; uso {usage}")
    return lines


# --- failed, retry, cleanup -----------------------------------------------------------------


def cmd_failed(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args)

    async def work(conn: asyncpg.Connection) -> int:
        items = await failures.failed(conn, args.entidade, args.limit)
        if args.json:
            print(json.dumps(items, indent=2, ensure_ascii=False))
            return os.EX_OK
        if not items:
            print("Nenhum item com falha.")
        for i in items:
            when = (i["processado_em"] or "")[:19]
            print(
                f"#{i['id']} {i['entidade']} {i['entidade_id']} (loja {i['loja_id']}, "
                f"{i['acao']}, {i['tentativas']} tentativas, falhou em {when}): "
                f"{i['ultimo_erro'] or 'sem mensagem'}"
            )
        return os.EX_OK

    return _run(settings, work)


def cmd_retry(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args)

    async def work(conn: asyncpg.Connection) -> int:
        count = await failures.retry(
            conn, ids=args.ids, entidade=args.entidade, all_failed=args.all_failed
        )
        if count:
            print(f"{count} itens com falha voltaram para a fila")
        else:
            print("Nenhum item com falha corresponde ao pedido")
        return os.EX_OK

    return _run(settings, work)


def cmd_cleanup(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args)

    async def work(conn: asyncpg.Connection) -> int:
        c = settings.cleanup
        result = await cleanup.cleanup(conn, c, dry_run=args.dry_run)
        verb = "seriam removidos" if result.dry_run else "removidos"
        print(
            f"Log: {result.log_rows} registros {verb} "
            f"(mais de {c.log_retention_days} dias, antes de {_day(result.log_before)})"
        )
        print(
            f"Fila: {result.queue_rows} itens concluídos {verb} "
            f"(mais de {c.queue_retention_days} dias, antes de {_day(result.queue_before)})"
        )
        return os.EX_OK

    return _run(settings, work)


def _day(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M")
