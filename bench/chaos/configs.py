"""30 broken configurations: `check-config` and `run` refuse each with exit 78 naming the key (no
traceback), and a running daemon handed each by SIGHUP keeps its old config and says so."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import asyncpg

from bench.chaos.common import (
    Crmd,
    add_lojas,
    add_produtos,
    config_text,
    dev_crm,
    drained,
    until,
    verdict,
)
from bench.chaos.result import Result
from bench.pg import PgServer

# (what is wrong, the sections laid over a good config or the whole file, a word the error
# must name). A key set to None is left out of the file.
Broken = tuple[str, dict[str, dict[str, Any]] | str, str]
BROKEN: list[Broken] = [
    ("empty file", "", "database.dsn"),
    ("not TOML", "[database\ndsn = 1\n", "não é um TOML válido"),
    ("DSN not a URI", {"database": {"dsn": "host=db"}}, "database.dsn"),
    ("DSN port 99999", {"database": {"dsn": "postgresql://u@db:99999/x"}}, "database.dsn"),
    ("DSN port 0", {"database": {"dsn": "postgresql://u@db/x?port=0"}}, "database.dsn"),
    ("unknown section", {"databse": {"dsn": "x"}}, "databse"),
    ("unknown key", {"queue": {"batch_sise": 5}}, "queue.batch_sise"),
    ("batch size 0", {"queue": {"batch_size": 0}}, "queue.batch_size"),
    ("negative lease", {"queue": {"lease_seconds": -1}}, "queue.lease_seconds"),
    ("attempts 0", {"queue": {"max_attempts": 0}}, "queue.max_attempts"),
    ("multiplier below 1", {"queue": {"retry_multiplier": 0.5}}, "queue.retry_multiplier"),
    ("jitter above 1", {"queue": {"retry_jitter": 2}}, "queue.retry_jitter"),
    ("no tokens", {"crm": {"access_token": None, "secret_access_token": None}}, "crm.access_token"),
    (
        "missing token file",
        {"crm": {"access_token": None, "access_token_file": "/nonexistent/t"}},
        "crm.access_token_file",
    ),
    ("token inline and in a file", {"crm": {"access_token_file": "/etc/hostname"}}, "crm"),
    ("unknown provider", {"crm": {"provider": "salesforce"}}, "crm.provider"),
    ("base URL without scheme", {"crm": {"base_url": "api.gestaoclick.com"}}, "crm.base_url"),
    ("no limits", {"crm": {"limits": []}}, "crm.limits"),
    ("limit of 0", {"crm": {"limits": [{"requests": 0, "per_seconds": 1}]}}, "crm.limits"),
    ("limit window 0", {"crm": {"limits": [{"requests": 3, "per_seconds": 0}]}}, "crm.limits"),
    ("concurrency 0", {"crm": {"concurrency": 0}}, "crm.concurrency"),
    ("margin too large", {"crm": {"limit_margin_seconds": 60}}, "crm.limit_margin_seconds"),
    ("loja account typo", {"crm.lojas.2": {"base_ur": "https://x"}}, "crm.lojas.2.base_ur"),
    ("bad time zone", {"schedule": {"timezone": "Mars/Olympus"}}, "schedule.timezone"),
    ("bad cron", {"schedule": {"cleanup": "every day"}}, "schedule.cleanup"),
    (
        "unknown entity",
        {"schedule": {"full_sync_entities": ["fornecedores"]}},
        "schedule.full_sync_entities",
    ),
    ("admin listen without port", {"admin": {"listen": "127.0.0.1"}}, "admin.listen"),
    ("log level", {"log": {"level": "verbose"}}, "log.level"),
    ("source without $1", {"sources": {"clientes": "SELECT * FROM clientes"}}, "sources.clientes"),
    (
        "listing with a parameter",
        {"sources": {"clientes_enqueue": "SELECT 1 WHERE $1"}},
        "sources.clientes_enqueue",
    ),
]


def _text(dsn: str, crm_url: str, broken: dict[str, dict[str, Any]] | str) -> str:
    return broken if isinstance(broken, str) else config_text(dsn, crm_url, **broken)


async def broken_configs(pg: PgServer, crmd: Crmd, quick: bool) -> Result:
    refused = reloads_refused = 0
    problems: list[str] = []
    async with pg.fresh_database("configs") as db, dev_crm() as crm:
        good = config_text(db.dsn, crm.url)
        path = crmd.workdir / "broken.toml"
        for name, fragment, key in BROKEN:
            path.write_text(_text(db.dsn, crm.url, fragment))
            for command in (("check-config",), ("run", "--once")):
                done = crmd.command(*command, "--config", str(path))
                output = done.stdout + done.stderr
                if done.returncode == 78 and key in output and "Traceback" not in output:
                    refused += 1
                else:
                    problems.append(
                        f"{name} ({command[0]}): exit {done.returncode}: {output[-200:]}"
                    )
        # The same files handed to a running daemon by SIGHUP.
        live = crmd.workdir / "live.toml"
        live.write_text(good)
        conn = await asyncpg.connect(db.dsn)
        try:
            await add_lojas(conn)
            crmd.start(live)
            await asyncio.sleep(1.5)
            assert crmd.proc is not None
            for name, fragment, _ in BROKEN[:10] if quick else BROKEN:
                live.write_text(_text(db.dsn, crm.url, fragment))
                before = len([e for e in crmd.logs() if e.get("event") == "reload_failed"])
                crmd.proc.send_signal(signal.SIGHUP)
                try:
                    await until(_more_events(crmd, "reload_failed", before), 10, name)
                    reloads_refused += 1
                except TimeoutError:
                    problems.append(f"{name} (SIGHUP): not refused")
            live.write_text(good)
            await add_produtos(conn, 1, 20)
            await until(await drained(conn), 60, "the daemon to sync after the refused reloads")
            running = crmd.running
            await crmd.stop()
            v = await verdict(conn, crm, entities=("produtos",))
        finally:
            await conn.close()
    sent = 2 * len(BROKEN)
    tried = 10 if quick else len(BROKEN)
    line = (
        f"{len(BROKEN)} broken files: {refused}/{sent} refused by check-config and run with 78"
        f" naming the key; {reloads_refused}/{tried} reloads refused, daemon still syncing;"
        f" {v.line()}" + (f"; problems: {problems[:3]}" if problems else "")
    )
    return Result("broken configs", line, not problems and running and v.holds, problems)


def _more_events(crmd: Crmd, name: str, before: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return len([e for e in crmd.logs() if e.get("event") == name]) > before

    return check
