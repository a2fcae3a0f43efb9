"""`python -m crmd.dev.dashboard`: the admin endpoint and dashboard without the sync engine, for
manual checks of the page against a database (accounts idle, nothing is sent)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import zoneinfo
from datetime import UTC, datetime

from crmd.admin.server import start_admin
from crmd.config import ConfigError, load_settings
from crmd.crm.accounts import build_accounts, close_accounts
from crmd.ops.schedule import TimerInfo, crons, timers_info
from crmd.service import logs
from crmd.service.view import DaemonView, ReloadInfo
from crmd.store import db


async def serve(config: str | None) -> int:
    try:
        settings, _ = load_settings(config)
    except ConfigError as exc:
        print(f"crmd: invalid configuration: {exc}", file=sys.stderr)
        return os.EX_CONFIG
    pool = await db.create_pool(settings.database)
    accounts = build_accounts(settings)
    tz = zoneinfo.ZoneInfo(settings.schedule.timezone)

    async def timers() -> list[TimerInfo]:
        async with pool.acquire() as conn:
            return await timers_info(conn, crons(settings.schedule), tz, datetime.now(UTC))

    view = DaemonView(
        pool=lambda: pool,
        settings=lambda: settings,
        accounts=lambda: accounts,
        stats=lambda: None,
        ready=lambda: True,
        reloads=ReloadInfo(),
        timers=timers,
    )
    server = await start_admin(view, settings.admin.listen or "127.0.0.1:9464")
    assert server is not None
    print(f"crmd admin (standalone) on {server.url}; Ctrl-C stops")
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
        await close_accounts(accounts)
        await pool.close()
    return os.EX_OK


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m crmd.dev.dashboard",
        description="Serve the admin endpoint and dashboard without syncing (for manual checks); "
        "`crmd run` serves the same endpoint itself.",
    )
    parser.add_argument("--config", metavar="PATH", help="configuration file")
    args = parser.parse_args()
    logs.configure("info", "console")
    try:
        raise SystemExit(asyncio.run(serve(args.config)))
    except KeyboardInterrupt:
        raise SystemExit(0) from None


if __name__ == "__main__":
    main()
