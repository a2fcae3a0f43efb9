"""`crmd map import`: the CRM ids the old system stored in the ERP, into crm_sync_map.

What operators read is in Portuguese. Exits 0 when every row was linked or already was, 65
(EX_DATAERR) when some rows were left alone (each kind of problem is counted and shown), 64 for a
query that cannot be used.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import asyncpg

from crmd.cli.common import config_arg, settings_or_exit, with_connection
from crmd.ops import map_import
from crmd.ptbr import number, plural
from crmd.service import logs


def register(sub: Any) -> None:
    p = sub.add_parser(
        "map",
        help="o mapa ERP -> CRM (crm_sync_map): importar os ids do sistema antigo",
        description="O mapa que diz qual registro do CRM é cada registro do ERP.",
    )
    actions = p.add_subparsers(dest="map_command", metavar="AÇÃO", required=True)
    imp = actions.add_parser(
        "import",
        help="importa os ids do CRM guardados no ERP pelo sistema antigo",
        description="Preenche crm_sync_map com os ids do CRM que o sistema antigo guardou nas "
        "tabelas do ERP, para que os registros que ele criou sejam atualizados, e não criados "
        "de novo. Para cada entidade, uma consulta sem parâmetros traz as colunas id (do ERP) e "
        "external_id (do CRM), e loja_id quando há lojas com conta própria ([crm.lojas.N]); "
        "ela vem de [map_import] ou de --query. Cada registro vai para a conta que o daemon usa "
        "para a sua loja. Pode ser repetido: o que já está vinculado fica como está, e um "
        "vínculo que contradiz o mapa é mostrado e não é gravado. Sai com 65 quando alguma "
        "linha não foi vinculada.",
    )
    config_arg(imp)
    imp.add_argument(
        "entidades",
        nargs="*",
        metavar="ENTIDADE",
        help="clientes, produtos ou vendas (padrão: cada uma com consulta em [map_import])",
    )
    imp.add_argument(
        "--query",
        metavar="SQL",
        help="a consulta a usar no lugar da de [map_import] (com uma única ENTIDADE), por "
        "exemplo 'SELECT id, external_id FROM clientes WHERE external_id IS NOT NULL'",
    )
    imp.add_argument(
        "--dry-run", action="store_true", help="só conta o que seria importado; nada é gravado"
    )
    imp.set_defaults(handler=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args)
    entidades: list[str] = list(dict.fromkeys(args.entidades))
    unknown = [e for e in entidades if e not in map_import.ENTITIES]
    if unknown:
        return usage(
            f"entidade {unknown[0]!r} não pode ser importada; use {', '.join(map_import.ENTITIES)}"
        )
    if args.query and len(entidades) != 1:
        return usage(
            "--query vale para uma única entidade: diga qual (crmd map import clientes --query ...)"
        )
    if not entidades:
        entidades = [e for e in map_import.ENTITIES if settings.map_import.query(e)]
        if not entidades:
            return usage(
                "nenhuma consulta em [map_import]: defina clientes, produtos ou vendas lá, ou "
                "dê a entidade e --query"
            )
    logs.configure(settings.log.level, settings.log.format)

    async def work(conn: asyncpg.Connection) -> int:
        clean = True
        for entidade in entidades:
            result = await map_import.import_map(
                conn, settings, entidade, query=args.query, dry_run=args.dry_run
            )
            print(render(result))
            clean = clean and not result.problem_count
        if args.dry_run:
            print("(simulação: nada foi gravado)")
        return os.EX_OK if clean else os.EX_DATAERR

    return with_connection(settings, work)


def usage(message: str) -> int:
    print(f"crmd: {message}", file=sys.stderr)
    return os.EX_USAGE


def render(result: map_import.ImportResult) -> str:
    linked = "seriam vinculados" if result.dry_run else "vinculados"
    parts = [
        f"{result.entidade}: {plural(result.read, 'linha lida', 'linhas lidas')}",
        f"{number(result.linked)} {linked}",
        f"{number(result.unchanged)} já estavam no mapa",
    ]
    if result.problem_count:
        parts.append(plural(result.problem_count, "com problema", "com problema"))
    lines = ["; ".join(parts)]
    for problem in result.examples:
        lines.append(f"  {map_import.describe(result.entidade, problem)}")
    shown = len(result.examples)
    if result.problem_count > shown:
        lines.append(f"  ... e mais {number(result.problem_count - shown)}")
    return "\n".join(lines)
