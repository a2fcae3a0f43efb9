"""What every chaos scenario uses: crmd processes it can kill, ERP data it can check, and the
invariants that must hold when the dust settles.

The invariants, checked in the database and in the development CRM's ledger:
- every ERP record of the scenario is in the CRM exactly once, with its current data;
- nothing is pending or in flight, and nothing failed but what the scenario expects to fail;
- no record was created twice (one successful POST per CRM record);
- no rate-limit window was over its limit at the CRM (the CRM answered no 429 of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from crmd.dev.devcrm.ledger import max_in_window
from crmd.dev.devcrm.server import DevCrm, DevCrmConfig

ROOT = Path(__file__).resolve().parents[2]
ACCESS = "chaos-access-Tk7"
SECRET = "chaos-secret-Qz9"
DB_PASSWORD = "chaos-db-pw-Hn4"  # never used to connect; must never be printed either
SECRETS = (ACCESS, SECRET, DB_PASSWORD)
_DROPPED_ENV = ("CRMD_", "NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_STREAM")


def dev_crm(limits: tuple[tuple[int, float], ...] = ((20, 1.0),), **config: Any) -> DevCrm:
    return DevCrm(
        DevCrmConfig(access_token=ACCESS, secret_access_token=SECRET, limits=limits, **config)
    )


def config_text(dsn: str, crm_url: str, **sections: dict[str, Any]) -> str:
    """A crmd config: the CRM's tokens, quick retries and leases, JSON logs, no admin endpoint.
    `sections` override or add keys, section by section."""
    base: dict[str, dict[str, Any]] = {
        "database": {"dsn": with_password(dsn), "pool_max_size": 5},
        "queue": {"lease_seconds": 4.0, "retry_initial_delay_seconds": 0.2, "batch_size": 50},
        "crm": {
            "base_url": crm_url,
            "access_token": ACCESS,
            "secret_access_token": SECRET,
            "concurrency": 4,
            "limits": [{"requests": 20, "per_seconds": 1.0}],
            "venda_situacao_id": "3151",  # the development CRM's "Concretizada"
        },
        "crm.situacoes": {"concretizada": "3151", "cancelada": "3152"},
        "sync": {
            "dependency_wait_seconds": 0.2,
            "failure_pause_seconds": 1.0,
            "max_pause_seconds": 5.0,
            "auth_pause_seconds": 1.0,
            "shutdown_timeout_seconds": 5.0,
        },
        "admin": {"listen": ""},
        "log": {"format": "json", "level": "info", "summary_interval_seconds": 5.0},
    }
    for name, keys in sections.items():
        base.setdefault(name, {}).update(keys)
    return toml(base)


def with_password(dsn: str) -> str:
    """The DSN with a password in it (a trust-auth server ignores it): it must never be printed."""
    return re.sub(r"^(postgres(?:ql)?://)([^:@/?]+)@", rf"\1\2:{DB_PASSWORD}@", dsn, count=1)


def toml(sections: dict[str, dict[str, Any]]) -> str:
    """Sections of scalars, lists and inline tables (a key set to None is left out)."""
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_value(value)}" for key, value in keys.items() if value is not None]
        lines.append("")
    return "\n".join(lines)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


@dataclass
class Crmd:
    """`crmd ARGS` child processes of one scenario, their output kept for the secrets check."""

    workdir: Path
    outputs: list[Path] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    peak_rss: int = 0

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV)}
        env.update(extra or {})
        return env

    def start(self, config: Path, env: dict[str, str] | None = None) -> Crmd:
        log = self.workdir / f"crmd-{len(self.outputs)}.log"
        self.outputs.append(log)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crmd", "run", "--config", str(config)],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self._env(env),
            cwd=ROOT,
        )
        return self

    def command(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "crmd", *args],
            capture_output=True,
            text=True,
            env=self._env(env),
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        out = self.workdir / f"command-{len(self.outputs)}.log"
        out.write_text(done.stdout + done.stderr)
        self.outputs.append(out)
        return done

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sample_rss(self) -> None:
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(psutil.Error):
                self.peak_rss = max(self.peak_rss, psutil.Process(self.proc.pid).memory_info().rss)

    def kill(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code (killed after `timeout`)."""
        assert self.proc is not None
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.running:
            self.kill()
        return int(self.proc.returncode or 0)

    def logs(self) -> list[dict[str, Any]]:
        events = []
        for path in self.outputs:
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    with contextlib.suppress(json.JSONDecodeError):
                        events.append(json.loads(line))
        return events

    def leaked(self) -> list[str]:
        """Secrets found in any output of the scenario's processes."""
        found = []
        for path in self.outputs:
            text = path.read_text(errors="replace")
            found += [f"{path.name}: {s[:6]}…" for s in SECRETS if s in text]
        return found


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Wait for `check()`; returns the seconds it took. TimeoutError names `what`."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def open_items(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM crm_sync_queue WHERE estado IN ('pendente', 'processando')"
        )
    )


async def drained(conn: asyncpg.Connection) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await open_items(conn) == 0

    return check


async def add_produtos(conn: asyncpg.Connection, first: int, count: int, loja: int = 1) -> None:
    await conn.executemany(
        "INSERT INTO produtos (id, loja_id, codigo_interno, nome, valor_custo, valor_venda,"
        " estoque) VALUES ($1, $2, $3, $4, 10, 15, 3)",
        [(n, loja, f"P-{n:06d}", f"Produto {n}") for n in range(first, first + count)],
    )


async def add_lojas(conn: asyncpg.Connection, count: int = 1) -> None:
    await conn.executemany(
        "INSERT INTO lojas (id, nome) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [(n, f"Loja {n}") for n in range(1, count + 1)],
    )


@dataclass
class Verdict:
    """The invariants, and the figures behind them."""

    records: int = 0
    in_crm: int = 0
    duplicates: int = 0
    stale_data: int = 0
    open_items: int = 0
    failed: int = 0
    unexpected_failures: list[str] = field(default_factory=list)
    over_limit: list[str] = field(default_factory=list)
    rejected_429: int = 0

    @property
    def holds(self) -> bool:
        return (
            self.records == self.in_crm
            and not self.duplicates
            and not self.stale_data
            and not self.open_items
            and not self.unexpected_failures
            and not self.over_limit
        )

    def line(self) -> str:
        return (
            f"{self.in_crm}/{self.records} in the CRM, {self.duplicates} duplicates, "
            f"{self.stale_data} stale, {self.open_items} open, {self.failed} failed"
            f" ({len(self.unexpected_failures)} unexpected), {self.rejected_429} x 429"
            + (f", OVER LIMIT {self.over_limit}" if self.over_limit else "")
            + (f"; e.g. {self.unexpected_failures[:2]}" if self.unexpected_failures else "")
        )


async def verdict(
    conn: asyncpg.Connection,
    crm: DevCrm,
    *,
    limits: Sequence[tuple[int, float]] = ((20, 1.0),),
    expected_failures: Sequence[tuple[str, int]] = (),
    entities: Sequence[str] = ("clientes", "produtos", "vendas"),
    allowed_orphans: int = 0,
) -> Verdict:
    """Check every invariant, through crm_sync_map: each ERP record (not deleted, not expected
    to fail) maps to its own CRM record, which holds the ERP's current name."""
    v = Verdict()
    expected = set(expected_failures)
    for entidade in entities:
        named = entidade != "vendas"
        erp = {
            r["id"]: r["nome"]
            for r in await conn.fetch(
                f"SELECT id, {'nome' if named else 'NULL'} AS nome FROM {entidade}"
                " WHERE deleted_at IS NULL"
            )
            if (entidade, r["id"]) not in expected
        }
        mapped = {
            r["entidade_id"]: r["external_id"]
            for r in await conn.fetch(
                "SELECT entidade_id, external_id FROM crm_sync_map"
                " WHERE entidade = $1 AND external_id IS NOT NULL",
                entidade,
            )
        }
        records = {str(r["id"]): r for r in crm.records(entidade)}
        v.records += len(erp)
        v.in_crm += sum(1 for i in erp if mapped.get(i) in records)
        linked = set(mapped.values())
        orphans = sum(1 for ext in records if ext not in linked)
        v.duplicates += max(orphans - allowed_orphans, 0)  # beyond the creates in doubt
        v.duplicates += len(mapped) - len(linked)  # two ERP records on one CRM record
        if named:
            v.stale_data += sum(
                1
                for i, nome in erp.items()
                if mapped.get(i) in records and records[mapped[i]].get("nome") != nome
            )
    v.open_items = await open_items(conn)
    failed = await conn.fetch(
        "SELECT entidade, entidade_id, ultimo_erro FROM crm_sync_queue WHERE estado = 'falhou'"
    )
    v.failed = len(failed)
    v.unexpected_failures = [
        f"{r['entidade']} {r['entidade_id']}: {r['ultimo_erro']}"
        for r in failed
        if (r["entidade"], r["entidade_id"]) not in expected
    ]
    # What crmd sent that met the CRM's limiter (injected faults aside), 429s included: how
    # hard it pushed, not what the CRM let in.
    pushed = [e for e in crm.ledger if e.fault is None]
    v.rejected_429 = sum(1 for e in pushed if e.status == 429)
    for requests, seconds in limits:
        most = max_in_window(pushed, seconds, all_requests=True)
        if most > requests:
            v.over_limit.append(f"{most} in {seconds:g} s > {requests}")
    return v
