"""Development helpers: `dev seed` (sample ERP data) and `dev crm` (a local GestãoClick)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from crmd.cli.common import config_arg, run_async, settings_or_exit
from crmd.store import db


def register(sub: Any) -> None:
    dev = sub.add_parser("dev", help="development helpers: sample data, a local CRM server")
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="DEV_COMMAND", required=True)

    p = dev_sub.add_parser(
        "seed",
        help="fill the reference ERP schema with sample data",
        description="Insert realistic Brazilian sample data (valid CPF/CNPJ, addresses, vendas "
        "with items) into the reference ERP schema, in bulk. Its triggers enqueue every row.",
    )
    config_arg(p)
    p.add_argument("--lojas", type=int, default=2, metavar="N", help="lojas (default 2)")
    p.add_argument(
        "--clientes", type=int, default=100, metavar="N", help="clientes per loja (default 100)"
    )
    p.add_argument(
        "--produtos", type=int, default=50, metavar="N", help="produtos per loja (default 50)"
    )
    p.add_argument(
        "--vendas", type=int, default=100, metavar="N", help="vendas per loja (default 100)"
    )
    p.add_argument(
        "--seed", type=int, default=None, metavar="N", help="random seed, for repeatable data"
    )
    p.set_defaults(handler=cmd_dev_seed)

    p = dev_sub.add_parser(
        "crm",
        help="run a local server that speaks GestãoClick's API",
        description="Run a development CRM server speaking the part of GestãoClick's API crmd "
        "uses, with its rate limits and fault injection.",
    )
    from crmd.dev.devcrm import cli as devcrm_cli

    devcrm_cli.add_arguments(p)
    p.set_defaults(handler=cmd_dev_crm)


def cmd_dev_seed(args: argparse.Namespace) -> int:
    from crmd.dev import seed

    settings = settings_or_exit(args)

    async def go() -> int:
        conn = await db.connect(settings.database)
        try:
            counts = await seed.seed(
                conn,
                lojas=args.lojas,
                clientes=args.clientes,
                produtos=args.produtos,
                vendas=args.vendas,
                seed=args.seed,
            )
        except ValueError as exc:
            print(f"crmd dev seed: {exc}", file=sys.stderr)
            return os.EX_USAGE
        finally:
            await conn.close()
        print(", ".join(f"{n} {what}" for what, n in counts.items()) + " inserted")
        return os.EX_OK

    return run_async(go())


def cmd_dev_crm(args: argparse.Namespace) -> int:
    from crmd.dev.devcrm import cli as devcrm_cli

    return devcrm_cli.main(args)
