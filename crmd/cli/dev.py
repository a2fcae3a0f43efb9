"""Development helpers: `dev seed` (sample ERP data) and `dev crm` (a local GestãoClick)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from crmd import ptbr
from crmd.cli.common import config_arg, progress, run_async, settings_or_exit
from crmd.store import db


def register(sub: Any) -> None:
    dev = sub.add_parser(
        "dev",
        help="ferramentas de desenvolvimento: dados de exemplo, um CRM local",
        description="Ferramentas de desenvolvimento, fora do caminho do produto.",
    )
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="SUBCOMANDO", required=True)

    p = dev_sub.add_parser(
        "seed",
        help="preenche o esquema de referência do ERP com dados de exemplo",
        description="Insere em lote dados de exemplo brasileiros realistas (CPF/CNPJ válidos, "
        "endereços, vendas com itens) no esquema de referência do ERP. Os gatilhos dele "
        "enfileiram cada linha. No terminal mostra o progresso.",
    )
    config_arg(p)
    p.add_argument("--lojas", type=int, default=2, metavar="N", help="lojas (padrão 2)")
    p.add_argument(
        "--clientes", type=int, default=100, metavar="N", help="clientes por loja (padrão 100)"
    )
    p.add_argument(
        "--produtos", type=int, default=50, metavar="N", help="produtos por loja (padrão 50)"
    )
    p.add_argument(
        "--vendas", type=int, default=100, metavar="N", help="vendas por loja (padrão 100)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="semente aleatória, para repetir os mesmos dados",
    )
    p.set_defaults(handler=cmd_dev_seed)

    p = dev_sub.add_parser(
        "crm",
        help="roda um servidor local que fala a API do GestãoClick",
        description="Roda um CRM de desenvolvimento que fala a parte da API do GestãoClick que o "
        "crmd usa, com os limites de requisições e falhas injetáveis.",
    )
    from crmd.dev.devcrm import cli as devcrm_cli

    devcrm_cli.add_arguments(p)
    p.set_defaults(handler=cmd_dev_crm)


def cmd_dev_seed(args: argparse.Namespace) -> int:
    from crmd.dev import seed

    settings = settings_or_exit(args)

    async def go() -> int:
        total = args.lojas * (1 + args.clientes + args.produtos + args.vendas)
        conn = await db.connect(settings.database)
        try:
            with progress("Inserindo dados de exemplo", total=total, unit="registros") as bar:
                counts = await seed.seed(
                    conn,
                    lojas=args.lojas,
                    clientes=args.clientes,
                    produtos=args.produtos,
                    vendas=args.vendas,
                    seed=args.seed,
                    progress=bar.update_to,
                )
        except ValueError as exc:
            print(f"crmd dev seed: {exc}", file=sys.stderr)
            return os.EX_USAGE
        finally:
            await conn.close()
        print("Inseridos: " + ", ".join(ptbr.count(n, what) for what, n in counts.items()))
        return os.EX_OK

    return run_async(go())


def cmd_dev_crm(args: argparse.Namespace) -> int:
    from crmd.dev.devcrm import cli as devcrm_cli

    return devcrm_cli.main(args)
