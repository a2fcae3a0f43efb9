"""The CRM account from the operator's side: `crmd doctor`, `crmd crm situacoes`, `crmd crm lojas`.

What operators read is in Portuguese. `doctor` exits 0 when every check is ok, 1 when some check
found a problem (each is printed with what to change), 78 when the configuration file itself is
invalid. The lists exit 69 when the account cannot be reached or read.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from crmd.cli.common import config_arg, run_async, settings_or_exit
from crmd.config import ConfigError, CrmAccountSettings, Settings, load_settings
from crmd.crm.errors import CrmError
from crmd.crm.providers.gestaoclick import GestaoClick
from crmd.ops import account, doctor
from crmd.ptbr import plural
from crmd.store import db

EX_PROBLEMS = 1


def register(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help="confere configuração, banco, esquema, contas do CRM e consultas antes de sincronizar",
        description="Confere, um a um, o que a sincronização precisa: a configuração e as "
        "credenciais; o banco e o esquema do crmd; para cada conta do CRM, qual URL base "
        "responde com os seus tokens (com e sem /api, nos dois endereços conhecidos do "
        "GestãoClick) e se as situações e lojas do config existem na conta; e cada consulta de "
        "[sources] e [map_import] (se roda neste banco e se as colunas que traz podem ser "
        "enviadas). Cada conferência sai como ok ou PROBLEMA, com o que mudar. Gasta algumas "
        "requisições de cada conta (uma por URL conferida, mais as listas de situações e "
        "lojas) e não grava nada. Sai com 0 quando tudo está certo, 1 quando há problema e 78 "
        "quando o arquivo de configuração é inválido.",
    )
    config_arg(p)
    p.set_defaults(handler=cmd_doctor)

    p = sub.add_parser(
        "crm",
        help="listas da conta do CRM: situações de venda e lojas",
        description="O que a conta do CRM tem e o config usa: situações de venda e lojas.",
    )
    lists = p.add_subparsers(dest="crm_command", metavar="LISTA", required=True)
    for name, helptext, handler in (
        (
            "situacoes",
            "as situações de venda da conta (GET /situacoes_vendas), com tipo_lancamento",
            cmd_situacoes,
        ),
        ("lojas", "as lojas da empresa (GET /lojas)", cmd_lojas),
    ):
        q = lists.add_parser(
            name,
            help=helptext,
            description=f"Mostra {helptext}, e quais chaves do config apontam para cada uma. "
            "Gasta uma requisição da conta por página da lista.",
        )
        config_arg(q)
        q.add_argument(
            "--loja",
            type=int,
            metavar="N",
            help="só a conta para onde vão os registros da loja N do ERP (padrão: todas as contas)",
        )
        q.set_defaults(handler=handler)


# --- doctor -----------------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    try:
        settings, source = load_settings(args.config)
    except ConfigError as exc:
        for key, reason in exc.problems:
            print(_line(doctor.Check("configuração", False, f"{key}: {reason}")))
        print("A configuração é inválida; nada mais foi conferido.")
        return os.EX_CONFIG
    where = str(source) if source else "sem arquivo (padrões e ambiente)"
    print(_line(doctor.Check("configuração", True, f"válida ({where})")), flush=True)

    def emit(check: doctor.Check) -> None:
        print(_line(check), flush=True)

    async def go() -> int:
        checks = await doctor.diagnose(settings, emit)
        problems = sum(1 for c in checks if not c.ok)
        if problems:
            print(f"{plural(problems, 'problema encontrado', 'problemas encontrados')}.")
            return EX_PROBLEMS
        print("Tudo certo.")
        return os.EX_OK

    return run_async(go())


def _line(check: doctor.Check) -> str:
    mark = "ok      " if check.ok else "PROBLEMA"
    lines = [f"{mark}  {check.subject}: {check.message}"]
    lines += [f"            {note}" for note in check.notes]
    return "\n".join(lines)


# --- crm situacoes, crm lojas -----------------------------------------------------------------

Lister = Callable[[str, CrmAccountSettings, GestaoClick], Awaitable[list[str]]]


def cmd_situacoes(args: argparse.Namespace) -> int:
    async def situacoes(name: str, acct: CrmAccountSettings, gc: GestaoClick) -> list[str]:
        listed = await gc.situacoes()
        uses = _situacao_keys(name, acct)
        width = max([len(s.nome) for s in listed] + [4])
        lines = [f"Situações de venda da conta {name}:"]
        lines.append(f"  {'id':<8}{'nome':<{width + 2}}{'tipo_lancamento':<17}no config")
        for s in listed:
            used = ", ".join(uses.get(s.id, []))
            lines.append(f"  {s.id:<8}{s.nome:<{width + 2}}{s.tipo_lancamento:<17}{used}".rstrip())
        if not listed:
            lines.append("  (nenhuma)")
        return lines

    return _list(args, situacoes)


def cmd_lojas(args: argparse.Namespace) -> int:
    async def lojas(name: str, acct: CrmAccountSettings, gc: GestaoClick) -> list[str]:
        listed = await gc.lojas()
        section = account.section(name)
        uses: dict[str, list[str]] = {}
        for erp, crm_id in sorted(acct.lojas_crm.items()):
            uses.setdefault(crm_id, []).append(f"[{section}.lojas_crm] {erp}")
        width = max([len(loja.nome) for loja in listed] + [4])
        lines = [f"Lojas da conta {name}:", f"  {'id':<8}{'nome':<{width + 2}}no config"]
        for loja in listed:
            used = ", ".join(uses.get(loja.id, []))
            lines.append(f"  {loja.id:<8}{loja.nome:<{width + 2}}{used}".rstrip())
        if not listed:
            lines.append("  (nenhuma)")
        if not acct.lojas_crm:
            lines.append(f"  ([{section}.lojas_crm] vazio: tudo vai para a matriz)")
        return lines

    return _list(args, lojas)


def _situacao_keys(name: str, acct: CrmAccountSettings) -> dict[str, list[str]]:
    """Which config keys name each situação id."""
    section = account.section(name)
    uses: dict[str, list[str]] = {}
    if acct.venda_situacao_id:
        uses.setdefault(acct.venda_situacao_id, []).append("venda_situacao_id")
    if acct.venda_situacao_cancelada_id:
        uses.setdefault(acct.venda_situacao_cancelada_id, []).append("venda_situacao_cancelada_id")
    for erp, crm_id in acct.situacoes.items():
        uses.setdefault(crm_id, []).append(f"[{section}.situacoes] {erp}")
    return uses


def _list(args: argparse.Namespace, lister: Lister) -> int:
    settings = settings_or_exit(args, to_sync=True)

    async def go() -> int:
        conn = await _budget_connection(settings)
        failed = False
        try:
            for name, acct in account.accounts(settings, args.loja).items():
                try:
                    async with account.opened(name, acct, conn) as provider:
                        lines = await lister(name, acct, account.gestaoclick(name, provider))
                except (account.AccountUnavailable, CrmError) as exc:
                    print(f"crmd: conta {name}: {_reason(exc)}", file=sys.stderr)
                    failed = True
                    continue
                print("\n".join(lines))
        finally:
            if conn is not None:
                await conn.close()
        return os.EX_UNAVAILABLE if failed else os.EX_OK

    return run_async(go())


def _reason(exc: Exception) -> str:
    text = exc.message if isinstance(exc, CrmError) else str(exc)
    return text.split(": ", 1)[1] if text.startswith("conta ") else text


async def _budget_connection(settings: Settings) -> asyncpg.Connection | None:
    """A connection to read the budget already spent; without one the lists are still shown."""
    try:
        return await db.connect(settings.database)
    except db.DatabaseUnavailable as exc:
        print(f"crmd: aviso: {exc}; o limite já gasto hoje não foi lido", file=sys.stderr)
        return None
