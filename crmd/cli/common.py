"""What every `crmd` subcommand shares: the --config option, loading settings, exit codes
(sysexits: 64 bad input, 69 database unreachable, 78 bad configuration), argparse in Portuguese,
progress on a terminal, and running a coroutine on uvloop."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import asyncpg
import uvloop

from crmd.config import ALL_SECRETS, ConfigError, Settings, load_settings
from crmd.ops.checks import InvalidRequest
from crmd.store import db

Handler = Callable[[argparse.Namespace], int]

# argparse speaks English through gettext, with no catalogue for Portuguese; operators read
# Portuguese. Its messages are translated here by their message id, for every parser of `crmd`.
_ARGPARSE = {
    "usage: ": "uso: ",
    "positional arguments": "argumentos",
    "options": "opções",
    "show this help message and exit": "mostra esta ajuda e sai",
    "argument %(argument_name)s: %(message)s": "argumento %(argument_name)s: %(message)s",
    "unknown parser %(parser_name)r (choices: %(choices)s)": (
        "comando desconhecido %(parser_name)r (opções: %(choices)s)"
    ),
    "unrecognized arguments: %s": "argumentos não reconhecidos: %s",
    "not allowed with argument %s": "não pode ser usado com o argumento %s",
    "ignored explicit argument %r": "valor %r ignorado",
    "the following arguments are required: %s": "faltam os argumentos obrigatórios: %s",
    "one of the arguments %s is required": "um dos argumentos %s é obrigatório",
    "expected one argument": "espera um valor",
    "expected at most one argument": "espera no máximo um valor",
    "expected at least one argument": "espera ao menos um valor",
    "ambiguous option: %(option)s could match %(matches)s": (
        "opção ambígua: %(option)s pode ser %(matches)s"
    ),
    "unexpected option string: %s": "opção inesperada: %s",
    "invalid %(type)s value: %(value)r": "valor inválido (%(type)s): %(value)r",
    "invalid choice: %(value)r (choose from %(choices)s)": (
        "opção inválida: %(value)r (escolha entre %(choices)s)"
    ),
    "%(prog)s: error: %(message)s\n": "%(prog)s: erro: %(message)s\n",
}


def _translate(message: str) -> str:
    return _ARGPARSE.get(message, message)


def _ntranslate(singular: str, plural: str, n: int) -> str:
    if singular == "expected %s argument":
        return "espera %s valor" if n == 1 else "espera %s valores"
    return singular if n == 1 else plural


def speak_portuguese() -> None:
    """Make argparse's own messages (usage, errors, the help option) Portuguese."""
    argparse._ = _translate  # type: ignore[attr-defined]
    argparse.ngettext = _ntranslate  # type: ignore[attr-defined]


def config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="ARQUIVO",
        help="arquivo de configuração (padrão: $CRMD_CONFIG, senão /etc/crmd/config.toml)",
    )


def lojas_arg(parser: argparse.ArgumentParser, help: str) -> None:
    """`--loja N`, repeatable, into `args.lojas` (None: every loja)."""
    parser.add_argument("--loja", type=int, action="append", metavar="N", dest="lojas", help=help)


_DAYS = re.compile(r"^(\d+)d?$")


def days(text: str) -> int:
    """A number of days as `--since` takes it: 30 or 30d."""
    match = _DAYS.match(text.strip())
    if not match or int(match[1]) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} não é um número de dias como 30d")
    return int(match[1])


def settings_or_exit(args: argparse.Namespace, *, to_sync: bool = False) -> Settings:
    """The settings, or exit 78 naming every bad key. Only the database's secret is read,
    unless `to_sync`: then also what syncing needs (the CRM's credentials, the admin token),
    which commands that only use the database neither read nor ask for."""
    try:
        settings, _ = load_settings(args.config, secrets=ALL_SECRETS if to_sync else ("database",))
        if to_sync and (problems := settings.problems_for_run()):
            raise ConfigError(problems)
    except ConfigError as exc:
        print_config_error(exc)
        sys.exit(os.EX_CONFIG)
    return settings


def print_config_error(exc: ConfigError) -> None:
    print("crmd: configuração inválida:", file=sys.stderr)
    for key, reason in exc.problems:
        print(f"  {key}: {reason}", file=sys.stderr)


def run_async(coro: Awaitable[int]) -> int:
    """Run a command's coroutine on uvloop (as the daemon does, so `run --once` behaves the
    same), turning an unreachable database into exit 69."""

    async def guarded() -> int:
        try:
            return await coro
        except db.DatabaseUnavailable as exc:
            print(f"crmd: {exc}", file=sys.stderr)
            return os.EX_UNAVAILABLE

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(guarded())


Work = Callable[[asyncpg.Connection], Awaitable[int]]


def with_connection(settings: Settings, work: Work) -> int:
    """Connect, run `work`; bad input and a missing schema become clear exits (64, 78)."""

    async def go() -> int:
        conn = await db.connect(settings.database)
        try:
            return await work(conn)
        except InvalidRequest as exc:
            print(f"crmd: {exc}", file=sys.stderr)
            return os.EX_USAGE
        except asyncpg.UndefinedTableError as exc:
            print(f"crmd: {exc}: o esquema existe? (crmd migrate)", file=sys.stderr)
            return os.EX_CONFIG
        finally:
            await conn.close()

    return run_async(go())


class Progress:
    """Progress of long work on a terminal (a tqdm bar on stderr, erased when done); nothing at
    all when stderr is not a terminal, where the command's final line is all that is printed.

        with progress("Enfileirando clientes", unit="clientes") as bar:
            bar.update_to(10_000)
    """

    def __init__(self, description: str, *, total: int | None = None, unit: str = "") -> None:
        self._bar: Any = None
        if not sys.stderr.isatty():
            return
        from tqdm import tqdm

        counter = "{n_fmt} de {total_fmt}" if total is not None else "{n_fmt}"
        percent = "{percentage:3.0f} % |{bar}| " if total is not None else ""
        self._bar = tqdm(
            total=total,
            desc=description,
            unit=f" {unit}" if unit else "",
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
            mininterval=0.2,
            bar_format=f"{{desc}}: {percent}{counter}{{unit}} · {{elapsed}}",
        )

    def update_to(self, done: int) -> None:
        """The running count of what is done."""
        if self._bar is not None:
            self._bar.update(done - self._bar.n)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def progress(description: str, *, total: int | None = None, unit: str = "") -> Progress:
    """A `Progress` for long work (`enqueue`, `dev seed`, `map import`)."""
    return Progress(description, total=total, unit=unit)
