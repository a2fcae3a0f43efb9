"""`crmd dev crm`: placeholder until the development server lands."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8800)


def main(args: argparse.Namespace) -> int:
    raise SystemExit("crmd dev crm: not implemented yet")
