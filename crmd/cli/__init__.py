"""The `crmd` command: one entry point, a subcommand per job.

Commands report problems as one clear line on stderr and exit with sysexits codes: 78 for a bad
configuration, 69 when the database cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn

from crmd import __version__
from crmd.config import ConfigError, Settings, effective, load_settings
from crmd.store.db import DatabaseUnavailable

EX_OK = 0
EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_CONFIG = 78

Handler = Callable[[argparse.Namespace], int]


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $CRMD_CONFIG, else /etc/crmd/config.toml)",
    )


def settings_or_exit(args: argparse.Namespace) -> Settings:
    try:
        settings, _ = load_settings(args.config)
    except ConfigError as exc:
        print_config_error(exc)
        sys.exit(EX_CONFIG)
    return settings


def print_config_error(exc: ConfigError) -> None:
    print("crmd: invalid configuration:", file=sys.stderr)
    for key, reason in exc.problems:
        print(f"  {key}: {reason}", file=sys.stderr)


def run_async(coro: Awaitable[int]) -> int:
    """Run a command's coroutine on uvloop (as the daemon does, so `run --once` behaves the
    same), turning an unreachable database into exit 69."""

    async def guarded() -> int:
        try:
            return await coro
        except DatabaseUnavailable as exc:
            print(f"crmd: {exc}", file=sys.stderr)
            return EX_UNAVAILABLE

    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(guarded())


# --- commands ---------------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        settings, source = load_settings(args.config)
    except ConfigError as exc:
        print_config_error(exc)
        return EX_CONFIG
    where = str(source) if source else "no file (defaults and environment only)"
    print(f"# configuration from {where}; secrets masked", file=sys.stderr)
    print(json.dumps(effective(settings), indent=2, ensure_ascii=False))
    return EX_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    from crmd.store import db, migrate

    settings = settings_or_exit(args)

    async def go() -> int:
        conn = await db.connect(settings.database)
        try:
            done = await migrate.migrate(conn, reference_erp=args.with_reference_erp)
        finally:
            await conn.close()
        for m in done:
            print(f"applied {m.conjunto}/{m.version:04d}_{m.name}")
        print("schema up to date" + ("" if done else "; nothing to apply"))
        return EX_OK

    return run_async(go())


def cmd_run(args: argparse.Namespace) -> int:
    import time

    from crmd.service import logs
    from crmd.service import startup as runner

    settings = settings_or_exit(args)
    logs.configure(settings.log.level, settings.log.format)
    if not args.once:
        from crmd.service import daemon

        return daemon.main(args.config, settings)

    async def go() -> int:
        start = time.perf_counter()
        try:
            stats = await runner.run_once(settings)
        except runner.SchemaOutdated as exc:
            print(f"crmd: {exc}", file=sys.stderr)
            return EX_CONFIG
        print(runner.summary(stats, time.perf_counter() - start))
        return EX_OK

    return run_async(go())


def cmd_schedule(args: argparse.Namespace) -> int:
    from crmd.service import timers
    from crmd.store import db

    settings = settings_or_exit(args)

    async def go() -> int:
        pool = await db.create_pool(settings.database.model_copy(update={"pool_min_size": 1}))
        try:
            shown = timers.for_display(pool, settings.schedule)
            infos = await shown.info()
        finally:
            await pool.close()
        fmt = "%Y-%m-%d %H:%M:%S %Z"
        tz = settings.schedule.timezone
        print(f"{'timer':<10} {'cron':<14} {'last run':<26} next run ({tz})")
        for t in infos:
            last = t.last_run.astimezone(shown.tz).strftime(fmt) if t.last_run else "never"
            nxt = t.next_run.astimezone(shown.tz).strftime(fmt)
            print(f"{t.name:<10} {t.cron:<14} {last:<26} {nxt}")
        return EX_OK

    return run_async(go())


def cmd_dev_seed(args: argparse.Namespace) -> int:
    from crmd.dev import seed
    from crmd.store import db

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
            return EX_USAGE
        finally:
            await conn.close()
        print(", ".join(f"{n} {what}" for what, n in counts.items()) + " inserted")
        return EX_OK

    return run_async(go())


def cmd_dev_crm(args: argparse.Namespace) -> int:
    from crmd.dev.devcrm import cli as devcrm_cli

    return devcrm_cli.main(args)


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crmd",
        description="Keeps a CRM in step with an ERP's PostgreSQL outbox queue (crm_sync_queue).",
    )
    parser.add_argument("--version", action="version", version=f"crmd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "check-config",
        help="validate the configuration and print it with secrets masked",
        description="Validate the configuration and print the effective settings (secrets "
        "masked). Exits 78 and names every bad key when it is invalid.",
    )
    _config_arg(p)
    p.set_defaults(handler=cmd_check_config)

    p = sub.add_parser(
        "migrate",
        help="create or update crmd's tables (safe to run again)",
        description="Apply the numbered schema migrations that are missing, under an advisory "
        "lock. Running it again changes nothing.",
    )
    _config_arg(p)
    p.add_argument(
        "--with-reference-erp",
        action="store_true",
        help="also create the reference ERP schema (lojas, clientes, produtos, vendas, "
        "atividades) with its enqueue triggers; for demos and tests",
    )
    p.set_defaults(handler=cmd_migrate)

    p = sub.add_parser(
        "run",
        help="sync the queue to the CRM (the daemon; --once for a single pass)",
        description="Run the sync daemon: wait for queue items and send them to the CRM, until "
        "SIGTERM. With --once, process what is due now, print a summary and exit (for cron).",
    )
    _config_arg(p)
    p.add_argument(
        "--once",
        action="store_true",
        help="process what is due now, print 'processados n/m, erros e, tempo t' and exit",
    )
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser(
        "schedule",
        help="show each timer's last and next run",
        description="Show the cleanup and full-sync timers: their cron expression, when they "
        "last ran (shared by every instance, from the database) and when they run next.",
    )
    _config_arg(p)
    p.set_defaults(handler=cmd_schedule)

    dev = sub.add_parser("dev", help="development helpers: sample data, a local CRM server")
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="DEV_COMMAND", required=True)

    p = dev_sub.add_parser(
        "seed",
        help="fill the reference ERP schema with sample data",
        description="Insert realistic Brazilian sample data (valid CPF/CNPJ, addresses, vendas "
        "with items) into the reference ERP schema, in bulk. Its triggers enqueue every row.",
    )
    _config_arg(p)
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

    from crmd.cli import ops as opscli

    opscli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> NoReturn:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    sys.exit(handler(args))
