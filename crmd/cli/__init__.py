"""The `crmd` command: one parser and entry point, a module per group of subcommands.

Commands report problems as one clear line on stderr and exit with sysexits codes: 64 for bad
input, 69 when the database cannot be reached, 78 for a bad configuration. Everything they print,
--help included, is in Portuguese, the operators' language.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from crmd import __version__
from crmd.cli import crm, dev, mapping, ops, plan, service
from crmd.cli.common import Handler, speak_portuguese


def build_parser() -> argparse.ArgumentParser:
    speak_portuguese()
    parser = argparse.ArgumentParser(
        prog="crmd",
        description="Mantém um CRM em dia com a fila de saída (crm_sync_queue) do PostgreSQL do "
        "ERP.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"crmd {__version__}",
        help="mostra a versão e sai",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMANDO", required=True)
    service.register(sub)
    dev.register(sub)
    ops.register(sub)
    mapping.register(sub)
    crm.register(sub)
    plan.register(sub)
    return parser


def main(argv: list[str] | None = None) -> NoReturn:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    sys.exit(handler(args))
