"""What every `crmd` subcommand shares: the --config option, loading settings, exit codes
(sysexits: 64 bad input, 69 database unreachable, 78 bad configuration) and running a
coroutine on uvloop."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable

import asyncpg
import uvloop

from crmd.config import ConfigError, Settings, load_settings
from crmd.ops.checks import InvalidRequest
from crmd.store import db

Handler = Callable[[argparse.Namespace], int]


def config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $CRMD_CONFIG, else /etc/crmd/config.toml)",
    )


def settings_or_exit(args: argparse.Namespace, *, to_sync: bool = False) -> Settings:
    """The settings, or exit 78 naming every bad key; `to_sync`: also what syncing needs (the
    CRM's credentials), which commands that only read the database do not ask for."""
    try:
        settings, _ = load_settings(args.config)
        if to_sync and (problems := settings.problems_for_run()):
            raise ConfigError(problems)
    except ConfigError as exc:
        print_config_error(exc)
        sys.exit(os.EX_CONFIG)
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
            print(f"crmd: {exc}: is the schema in place? (crmd migrate)", file=sys.stderr)
            return os.EX_CONFIG
        finally:
            await conn.close()

    return run_async(go())
