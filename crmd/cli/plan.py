"""`crmd plan`: what a sync would do and what it would cost, before anything is sent.

What operators read is in Portuguese. Exits 0 (the plan is a report, whatever it finds), 64 for
bad input, 69 when the database or (with --lookups) an account cannot be used.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import asyncpg

from crmd.cli.common import config_arg, days, lojas_arg, settings_or_exit, with_connection
from crmd.config import RateLimit
from crmd.model import ENTITIES
from crmd.ops import account, plan
from crmd.ptbr import duration, number, plural
from crmd.service import logs

_SINGULAR = {
    "criados": "criado",
    "vinculados": "vinculado",
    "atualizados": "atualizado",
    "inativados": "inativado",
    "excluídos": "excluído",
    "ignorados": "ignorado",
}
_WINDOWS = {1.0: "s", 60.0: "min", 3600.0: "h", 86_400.0: "dia"}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="mostra o que uma sincronização faria e quanto custaria, sem enviar nada",
        description="Lê o que está pendente na fila (ou, com --full, o que crmd enqueue "
        "colocaria nela) e mostra, por entidade, quantos registros seriam criados, vinculados, "
        "atualizados, pulados por não terem mudado, inativados ou excluídos, quantos não "
        "podem ser enviados (e por quê), quantas requisições isso custa e quanto tempo o "
        "limite da conta leva para elas. Não envia nada ao CRM; com --lookups, procura no CRM "
        "os registros que o crmd ainda não conhece (só consultas, registradas no log) e conta "
        "os que seriam vinculados em vez de criados.",
    )
    config_arg(p)
    p.add_argument("--entidade", choices=ENTITIES, help="só esta entidade")
    lojas_arg(p, "só esta loja do ERP (repita para mais; padrão: todas)")
    p.add_argument(
        "--full",
        action="store_true",
        help="o que crmd enqueue colocaria na fila (todo registro ativo; vendas dos últimos 30 "
        "dias), no lugar do que já está pendente",
    )
    p.add_argument(
        "--since",
        type=days,
        metavar="DIAS",
        help="com --full, só os últimos DIAS dias, como em crmd enqueue",
    )
    p.add_argument(
        "--lookups",
        action="store_true",
        help="procura no CRM, pela chave natural (CPF/CNPJ, código), os registros que o crmd "
        "não conhece; cada consulta gasta uma requisição do limite da conta",
    )
    p.add_argument(
        "--max-lookups",
        type=int,
        default=plan.DEFAULT_MAX_LOOKUPS,
        metavar="N",
        help=f"no máximo N consultas (padrão {plan.DEFAULT_MAX_LOOKUPS}); o resto fica como "
        "'criar ou vincular'",
    )
    p.set_defaults(handler=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args, to_sync=True)
    if args.since is not None and not args.full:
        print("crmd: --since vale só com --full", file=sys.stderr)
        return os.EX_USAGE
    logs.configure(settings.log.level, settings.log.format)

    async def work(conn: asyncpg.Connection) -> int:
        try:
            result = await plan.make_plan(
                conn,
                settings,
                entidade=args.entidade,
                lojas=args.lojas,
                full=args.full,
                since_days=args.since,
                lookups=args.lookups,
                max_lookups=args.max_lookups,
            )
        except account.AccountUnavailable as exc:
            print(f"crmd: {exc}", file=sys.stderr)
            return os.EX_UNAVAILABLE
        print(render(result))
        return os.EX_OK

    return with_connection(settings, work)


def render(result: plan.Plan) -> str:
    if result.full:
        what = plural(result.items, "registro que crmd enqueue enfileiraria",
                      "registros que crmd enqueue enfileiraria")  # fmt: skip
    else:
        what = plural(result.items, "item pendente na fila", "itens pendentes na fila")
    sent = "só consultas foram enviadas" if result.lookups else "nada foi enviado"
    lines = [f"Plano para {what} ({sent} ao CRM):", ""]
    for entity in result.entities.values():
        if entity.records or not result.full:
            lines += _entity(entity, result)
    lines += _lookups(result)
    for budget in result.budgets.values():
        if budget.requests or len(result.budgets) == 1:
            lines.append(f"Conta {budget.conta}: {cost(budget)}")
    return "\n".join(lines)


def _entity(entity: plan.EntityPlan, result: plan.Plan) -> list[str]:
    lines = [f"{entity.entidade}: {plural(entity.records, 'registro', 'registros')}"]
    shown = [
        f"{number(n)} {_SINGULAR.get(verdict, verdict) if n == 1 else verdict}"
        for verdict in plan.VERDICTS
        if (n := entity.counts[verdict])
    ]
    if shown:
        lines.append("  " + ", ".join(shown))
    if entity.unsure:
        how = "não consultados" if result.lookups else "sem --lookups"
        maybe = (
            "1 dos criados pode já existir no CRM e ser vinculado"
            if entity.unsure == 1
            else f"{number(entity.unsure)} dos criados podem já existir no CRM e ser vinculados"
        )
        lines.append(f"  ({maybe}; {how})")
    for error in entity.errors:
        lines.append(f"  erro: {error}")
    failed = entity.counts["com erro"]
    if failed > len(entity.errors):
        lines.append(f"  ... e mais {number(failed - len(entity.errors))} com erro")
    lines.append(f"  {requests(entity.requests)}")
    lines.append("")
    return lines


def _lookups(result: plan.Plan) -> list[str]:
    if not result.lookups:
        return []
    line = (
        f"Consultas feitas agora: {number(result.lookups_sent)} "
        f"({plural(result.lookup_requests, 'requisição', 'requisições')}, registradas no log)"
    )
    lines = [line]
    if result.not_looked_up:
        left = plural(result.not_looked_up, "registro não consultado", "registros não consultados")
        lines.append(f"  {left} (além de --max-lookups)")
    if result.lookups_stopped:
        lines.append(f"  consultas interrompidas: {result.lookups_stopped}")
    return [*lines, ""]


def requests(count: int) -> str:
    if not count:
        return "nenhuma requisição"
    return f"~{plural(count, 'requisição', 'requisições')}"


def cost(budget: plan.Budget) -> str:
    """ "~41.000 requisições: 1 dia e 9 h no limite de 30.000/dia"."""
    if not budget.requests:
        return "nenhuma requisição"
    seconds, limit = budget.binding()
    return f"{requests(budget.requests)}: {duration(seconds)} no limite de {limit_text(limit)}"


def limit_text(limit: RateLimit) -> str:
    unit = _WINDOWS.get(float(limit.per_seconds))
    per = f"/{unit}" if unit else f" em {number(int(limit.per_seconds))} s"
    return f"{number(limit.requests)}{per}"
