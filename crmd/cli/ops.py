"""Operator commands: enqueue, status, history, failed, retry and cleanup.

Thin wrappers over `crmd.ops`, which the admin API shares; this module only parses arguments and
prints. What operators read is in Portuguese, their language, with pt-BR numbers and times in
[schedule] timezone. Bad input exits 64 naming it, an unreachable database 69, a database
without crmd's schema 78. None of these commands reads the CRM's secrets.
"""

from __future__ import annotations

import argparse
import json
import os
import zoneinfo
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
from pydantic import ValidationError

from crmd import ptbr
from crmd.cli.common import (
    Work,
    config_arg,
    days,
    lojas_arg,
    progress,
    settings_or_exit,
    with_connection,
)
from crmd.config import Settings, split_hostport
from crmd.model import ENTITIES
from crmd.ops import cleanup, enqueue, failures
from crmd.ops import history as record_history
from crmd.ops.schedule import crons, timers_info
from crmd.ops.status import AccountReport, StatusReport, drain_text, report
from crmd.service import logs


def register(sub: Any) -> None:
    """Add the operator subcommands to the `crmd` parser's subparsers."""
    p = sub.add_parser(
        "enqueue",
        help="enfileira todos os registros ativos de uma entidade (sincronização manual)",
        description="Enfileira, em lote, todo cliente ou produto ativo e não excluído, as vendas "
        "dos últimos 30 dias, ou todas as atividades, por loja, e mostra quantos cada loja tinha "
        "e o total. Um registro que já espera na fila continua com um item só, na prioridade "
        "mais alta. No terminal mostra o progresso.",
    )
    config_arg(p)
    p.add_argument("entidade", choices=ENTITIES, help="o que enfileirar")
    lojas_arg(p, "só esta loja (repita para mais; padrão: todas as lojas)")
    p.add_argument(
        "--since",
        type=days,
        metavar="DIAS",
        help="só os últimos DIAS dias, como 30d ou 30: vendas e atividades pela data (vendas: "
        "30d por padrão), clientes e produtos pela última alteração (padrão: todos)",
    )
    p.add_argument(
        "--priority",
        type=int,
        metavar="P",
        help="prioridade na fila, a maior vai primeiro (padrão: vendas 5, clientes e produtos 3, "
        "atividades 2)",
    )
    p.set_defaults(handler=cmd_enqueue)

    p = sub.add_parser(
        "status",
        help="mostra a fila: pendentes, em andamento, falhas, taxa de sucesso, últimos erros",
        description="Mostra os itens pendentes por entidade, os em andamento, as falhas, a taxa "
        "de sucesso das últimas 24 h, os envios da última hora, os processados hoje, a idade do "
        "pendente mais antigo e os últimos 10 erros. Contas pausadas só o daemon conhece: são "
        "pedidas ao endpoint de administração dele ([admin] listen) quando ele responde.",
    )
    config_arg(p)
    p.add_argument("--json", action="store_true", help="mostra JSON (o mesmo de GET /api/status)")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser(
        "history",
        help="mostra cada tentativa de um registro, com o que foi enviado e o que o CRM respondeu",
        description="Mostra o histórico de um registro do ERP: onde ele está no CRM, os itens "
        "abertos na fila e cada tentativa (a mais recente primeiro) com hora, status HTTP, a "
        "mensagem do CRM e cada requisição com o corpo enviado e o recebido (até 4.000 "
        "caracteres cada, segredos mascarados). O log guarda isso por [cleanup] "
        "log_retention_days dias.",
    )
    config_arg(p)
    p.add_argument("entidade", choices=ENTITIES, help="a entidade do registro")
    p.add_argument("id", type=int, help="o id do registro no ERP")
    p.add_argument("--loja", type=int, metavar="N", help="só as tentativas desta loja")
    p.add_argument(
        "--limit", type=int, default=50, metavar="N", help="no máximo N tentativas (padrão 50)"
    )
    p.add_argument(
        "--no-bodies", action="store_true", help="sem os corpos das requisições, só as linhas"
    )
    p.add_argument("--json", action="store_true", help="mostra JSON (o mesmo de /api/history)")
    p.set_defaults(handler=cmd_history)

    p = sub.add_parser(
        "failed",
        help="lista os itens com falha e o último erro de cada um",
        description="Lista os itens da fila que desistiram (estado 'falhou'), os mais recentes "
        "primeiro, com o erro que os fez falhar. `crmd retry` os envia de novo; `crmd history` "
        "mostra cada tentativa de um registro.",
    )
    config_arg(p)
    p.add_argument("--entidade", choices=ENTITIES, help="só esta entidade")
    p.add_argument(
        "--limit", type=int, default=50, metavar="N", help="no máximo N itens (padrão 50)"
    )
    p.add_argument("--json", action="store_true", help="mostra JSON")
    p.set_defaults(handler=cmd_failed)

    p = sub.add_parser(
        "retry",
        help="põe os itens com falha de volta na fila, com tentativas novas",
        description="Põe os itens com falha de volta na fila, para já, com as tentativas "
        "zeradas. Um registro que já espera na fila continua com um item só; o que falhou é "
        "juntado a ele.",
    )
    config_arg(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id", type=int, nargs="+", metavar="N", dest="ids", help="estes ids de item da fila"
    )
    which.add_argument(
        "--entidade", choices=ENTITIES, help="todos os itens com falha desta entidade"
    )
    which.add_argument("--all-failed", action="store_true", help="todos os itens com falha")
    p.set_defaults(handler=cmd_retry)

    p = sub.add_parser(
        "cleanup",
        help="apaga agora os registros antigos do log e os itens concluídos antigos da fila",
        description="Apaga os registros do log mais antigos que [cleanup] log_retention_days "
        "(com os corpos das requisições) e os itens concluídos há mais de [cleanup] "
        "queue_retention_days dias, em lotes de [cleanup] batch_size linhas (o que o agendamento "
        "diário do daemon faz). Itens com falha ficam.",
    )
    config_arg(p)
    p.add_argument(
        "--dry-run", action="store_true", help="só conta o que seria apagado, sem apagar"
    )
    p.set_defaults(handler=cmd_cleanup)


def _run(settings: Settings, work: Work) -> int:
    """Set up logging, run `work` on a connection."""
    logs.configure(settings.log.level, settings.log.format)
    return with_connection(settings, work)


# --- enqueue --------------------------------------------------------------------------------


def cmd_enqueue(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args)

    async def work(conn: asyncpg.Connection) -> int:
        with progress(f"Enfileirando {args.entidade}", unit=args.entidade) as bar:
            result = await enqueue.enqueue_entities(
                conn,
                args.entidade,
                settings.sources,
                lojas=args.lojas,
                since_days=args.since,
                priority=args.priority,
                progress=bar.update_to,
            )
        for loja, found in sorted(result.per_loja.items()):
            print(f"Loja {loja}: {ptbr.counted(found, args.entidade, 'encontrado')}")
        print(f"Total enfileirado: {ptbr.number(result.total)}")
        waiting = result.total - result.created
        print(
            f"({ptbr.count(result.created, 'itens')} {ptbr.agree(result.created, 'itens', 'novo')}"
            f"; {ptbr.number(waiting)} já {'aguardava' if waiting == 1 else 'aguardavam'} na fila)"
        )
        return os.EX_OK

    return _run(settings, work)


# --- status ---------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args)

    async def work(conn: asyncpg.Connection) -> int:
        status = await _daemon_status(settings.admin.listen)
        if status is None:  # no daemon answered: what the database says, without accounts
            tz = zoneinfo.ZoneInfo(settings.schedule.timezone)
            timers = await timers_info(conn, crons(settings.schedule), tz, datetime.now(UTC))
            status = await report(conn, timers=timers, timezone=settings.schedule.timezone)
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
    q, n, tz = status.queue, ptbr.number, status.timezone
    lines = [f"{'Fila':<12}{'pendentes':>11}{'processando':>13}{'falhas':>9}{'ignorados':>11}"]
    for entidade in ENTITIES:
        lines.append(
            f"  {entidade:<10}{n(q.pending[entidade]):>11}{n(q.in_flight[entidade]):>13}"
            f"{n(q.failed[entidade]):>9}{n(q.ignored.get(entidade, 0)):>11}"
        )
    lines.append(
        f"  {'total':<10}{n(q.pending_total):>11}{n(q.in_flight_total):>13}{n(q.failed_total):>9}"
        f"{n(q.ignored_total):>11}"
    )
    age = q.oldest_pending_age_seconds
    lines.append(
        "Pendente mais antigo: "
        + (
            "nenhum"
            if age is None
            else f"há {ptbr.duration(age)} ({ptbr.moment(q.oldest_pending_at, tz)})"
        )
    )
    day, hour = status.last_24h, status.last_hour
    rate = "sem tentativas" if day.success_rate is None else ptbr.percent(day.success_rate)
    ignored = f" ({n(day.ignored)} ignorados, à parte)" if day.ignored else ""
    lines.append(
        f"Últimas 24 h: {ptbr.count(day.attempts, 'tentativas')}, {n(day.succeeded)} com "
        f"sucesso, {ptbr.count(day.errors, 'erros')}; taxa de sucesso {rate}{ignored}"
    )
    lines.append(
        f"Última hora: {n(hour.succeeded)} enviados com sucesso "
        f"({ptbr.count(hour.attempts, 'tentativas')})"
    )
    lines.append(f"Processados hoje: {n(status.processed_today)}")
    lines.extend(_render_accounts(status.accounts, listen, tz))
    if status.instances:
        lines.append("Instâncias:")
        for i in status.instances:
            state = "ativa" if i.alive else "SEM SINAL"
            lines.append(
                f"  {i.host} pid {i.pid} (crmd {i.version}, desde {ptbr.moment(i.started_at, tz)}):"
                f" {state}, visto em {ptbr.moment(i.seen_at, tz)}"
            )
    if status.uncertain_creates:
        lines.append("Criações incertas (confira no CRM; depois crmd retry):")
        for u in status.uncertain_creates:
            key = f", chave {u.chave}" if u.chave else ", sem chave"
            lines.append(
                f"  {u.entidade} {u.entidade_id} (conta {u.conta}{key}, "
                f"desde {ptbr.moment(u.since, tz)})"
            )
    errors = status.recent_errors
    lines.append("Últimos erros:" if errors else "Últimos erros: nenhum")
    for e in errors:
        http = f" HTTP {e.http_status}" if e.http_status else ""
        lines.append(
            f"  {ptbr.moment(e.criado_em, tz)} {e.entidade} {e.entidade_id} (loja {e.loja_id}, "
            f"conta {e.conta}, tentativa {e.tentativa}){http}: {e.mensagem}"
        )
    if errors:
        lines.append("  (crmd history ENTIDADE ID mostra cada tentativa de um registro)")
    return "\n".join(lines)


def _render_accounts(accounts: list[AccountReport] | None, listen: str, tz: str) -> list[str]:
    if accounts is None:
        where = listen or "desligado ([admin] listen vazio)"
        return [f"Contas: o daemon não respondeu em {where}; as pausas só ele conhece"]
    lines = ["Contas:"]
    n = ptbr.number
    for a in accounts:
        state = "ativa"
        if a.paused:
            state = f"PAUSADA até {ptbr.moment(a.paused_until, tz)}: {a.reason}"
        usage = ", ".join(
            f"{n(lim.used)}/{n(lim.requests)} em {n(lim.per_seconds)} s" for lim in a.limits
        )
        lines.append(f"  {a.name}: {state}; uso {usage}")
        lines.append(
            f"    {drain_text(a.drain_seconds, a.pending)} ({ptbr.count(a.pending, 'itens')}, "
            f"{n(a.requests_per_minute, 1)} requisições/min nos últimos 10 min)"
        )
    return lines


# --- history ----------------------------------------------------------------------------------


def cmd_history(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args)

    async def work(conn: asyncpg.Connection) -> int:
        found = await record_history.record_history(
            conn,
            args.entidade,
            args.id,
            contas=sorted(settings.crm.accounts()),
            timezone=settings.schedule.timezone,
            loja_id=args.loja,
            limit=args.limit,
        )
        if args.json:
            print(json.dumps(found.model_dump(mode="json"), indent=2, ensure_ascii=False))
        else:
            print(render_history(found, bodies=not args.no_bodies))
        return os.EX_OK

    return _run(settings, work)


def render_history(h: record_history.RecordHistory, *, bodies: bool = True) -> str:
    tz, n = h.timezone, ptbr.number
    lines = [f"{h.entidade} {h.entidade_id}"]
    if not h.links:
        lines.append("  No CRM: não está")
    for link in h.links:
        where = (
            f"registro {link.external_id}"
            if link.external_id
            else "criação incerta (confira no CRM)"
        )
        lines.append(
            f"  No CRM: conta {link.conta}, {where}, desde {ptbr.moment(link.sincronizado_em, tz)}"
        )
    if not h.open_items:
        lines.append("  Na fila: nenhum item aberto")
    for i in h.open_items:
        error = f"; último erro: {i.ultimo_erro}" if i.ultimo_erro else ""
        lines.append(
            f"  Na fila: #{i.id} loja {i.loja_id}, {i.acao}, {i.estado}, "
            f"{ptbr.count(i.tentativas, 'tentativas')}{error}"
        )
    lines.append(
        f"Tentativas ({ptbr.count(len(h.attempts), 'tentativas')}, a mais recente primeiro):"
    )
    for a in h.attempts:
        http = f"HTTP {a.http_status}" if a.http_status else "sem HTTP"
        crm_id = f", id no CRM {a.external_id}" if a.external_id else ""
        lines.append(
            f"  {ptbr.moment(a.criado_em, tz)}  {a.status}  {http}  tentativa {a.tentativa}  "
            f"conta {a.conta}  loja {a.loja_id}  {n(a.duracao_ms or 0)} ms{crm_id}"
        )
        lines.append(f"    {a.mensagem or ''}")
        for t in a.trocas:
            status = t.http_status if t.http_status is not None else "sem resposta"
            lines.append(f"    {t.metodo} {t.caminho} -> {status} ({n(t.duracao_ms or 0)} ms)")
            if bodies:
                lines.append(f"      enviado:  {t.enviado if t.enviado else '(vazio)'}")
                lines.append(f"      recebido: {t.recebido if t.recebido else '(vazio)'}")
    return "\n".join(lines)


# --- failed, retry, cleanup -----------------------------------------------------------------


def cmd_failed(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args)
    tz = settings.schedule.timezone

    async def work(conn: asyncpg.Connection) -> int:
        items = await failures.failed(conn, args.entidade, args.limit)
        if args.json:
            print(json.dumps(items, indent=2, ensure_ascii=False))
            return os.EX_OK
        if not items:
            print("Nenhum item com falha.")
        for i in items:
            when = ptbr.moment(i["processado_em"], tz)
            print(
                f"#{i['id']} {i['entidade']} {i['entidade_id']} (loja {i['loja_id']}, "
                f"{i['acao']}, {ptbr.count(i['tentativas'], 'tentativas')}, falhou em {when}): "
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
        if count == 1:
            print("1 item com falha voltou para a fila")
        elif count:
            print(f"{ptbr.number(count)} itens com falha voltaram para a fila")
        else:
            print("Nenhum item com falha corresponde ao pedido")
        return os.EX_OK

    return _run(settings, work)


def cmd_cleanup(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args)
    tz = settings.schedule.timezone

    async def work(conn: asyncpg.Connection) -> int:
        c = settings.cleanup
        result = await cleanup.cleanup(conn, c, dry_run=args.dry_run)
        log_verb = ptbr.agree(result.log_rows, "registros", "removido")
        queue_verb = ptbr.agree(result.queue_rows, "itens", "removido")
        if result.dry_run:
            log_verb = "seria removido" if result.log_rows == 1 else "seriam removidos"
            queue_verb = "seria removido" if result.queue_rows == 1 else "seriam removidos"
        done = "concluído" if result.queue_rows == 1 else "concluídos"
        print(
            f"Log: {ptbr.count(result.log_rows, 'registros')} {log_verb} "
            f"(mais de {ptbr.count(c.log_retention_days, 'dias')}, antes de "
            f"{ptbr.moment(result.log_before, tz, seconds=False)})"
        )
        print(
            f"Fila: {ptbr.count(result.queue_rows, 'itens')} {done} {queue_verb} "
            f"(mais de {ptbr.count(c.queue_retention_days, 'dias')}, antes de "
            f"{ptbr.moment(result.queue_before, tz, seconds=False)})"
        )
        return os.EX_OK

    return _run(settings, work)
