"""Running and setting up the service: `run`, `check-config`, `migrate`, `schedule`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zoneinfo
from datetime import UTC, datetime
from typing import Any

from crmd.cli.common import config_arg, print_config_error, run_async, settings_or_exit
from crmd.config import ConfigError, effective, load_settings
from crmd.ops.schedule import crons, timers_info
from crmd.store import db, migrate


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check-config",
        help="validate the configuration and print it with secrets masked",
        description="Validate the configuration and print the effective settings (secrets "
        "masked). Exits 78 and names every bad key when it is invalid.",
    )
    config_arg(p)
    p.set_defaults(handler=cmd_check_config)

    p = sub.add_parser(
        "migrate",
        help="create or update crmd's tables (safe to run again)",
        description="Apply the numbered schema migrations that are missing, under an advisory "
        "lock. Running it again changes nothing.",
    )
    config_arg(p)
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
    config_arg(p)
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
    config_arg(p)
    p.set_defaults(handler=cmd_schedule)


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        settings, source = load_settings(args.config)
        if problems := settings.problems_for_run():
            raise ConfigError(problems)
    except ConfigError as exc:
        print_config_error(exc)
        return os.EX_CONFIG
    where = str(source) if source else "no file (defaults and environment only)"
    print(f"# configuration from {where}; secrets masked", file=sys.stderr)
    print(json.dumps(effective(settings), indent=2, ensure_ascii=False))
    return os.EX_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args)
    extra = []
    if args.with_reference_erp:
        from crmd.dev.schema import REFERENCE_ERP

        extra.append(REFERENCE_ERP)

    async def go() -> int:
        conn = await db.connect(settings.database)
        try:
            done = await migrate.migrate(conn, extra)
        finally:
            await conn.close()
        for m in done:
            print(f"applied {m}")
        print("schema up to date" + ("" if done else "; nothing to apply"))
        return os.EX_OK

    return run_async(go())


def cmd_run(args: argparse.Namespace) -> int:
    from crmd.service import logs

    settings = settings_or_exit(args, to_sync=True)
    logs.configure(settings.log.level, settings.log.format)
    if not args.once:
        from crmd.admin.server import start_for_daemon
        from crmd.service import daemon

        return daemon.main(args.config, settings, (start_for_daemon,))

    from crmd.service import startup

    async def go() -> int:
        start = time.perf_counter()
        try:
            stats = await startup.run_once(settings)
        except migrate.SchemaOutdated as exc:
            print(f"crmd: {exc}", file=sys.stderr)
            return os.EX_CONFIG
        print(startup.summary(stats, time.perf_counter() - start))
        return os.EX_OK

    return run_async(go())


def cmd_schedule(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args)
    tz = zoneinfo.ZoneInfo(settings.schedule.timezone)

    async def go() -> int:
        conn = await db.connect(settings.database)
        try:
            infos = await timers_info(conn, crons(settings.schedule), tz, datetime.now(UTC))
        finally:
            await conn.close()
        fmt = "%Y-%m-%d %H:%M:%S %Z"
        print(f"{'timer':<10} {'cron':<14} {'last run':<26} next run ({tz.key})")
        for t in infos:
            last = t.last_run.astimezone(tz).strftime(fmt) if t.last_run else "never"
            nxt = t.next_run.astimezone(tz).strftime(fmt)
            print(f"{t.name:<10} {t.cron:<14} {last:<26} {nxt}")
        return os.EX_OK

    return run_async(go())
