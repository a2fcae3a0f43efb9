"""The real thing: `systemd/crmd.service` under a real systemd, booted as PID 1 in private PID and
mount namespaces (tests/systemd/sandbox), with a drop-in (tests/systemd/e2e.conf.in) pointing
it at this checkout. Start, sync, reload (good and broken), journal fields, stop."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from crmd.dev.devcrm.server import DevCrm, DevCrmConfig

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "systemd"
UNIT = REPO / "systemd" / "crmd.service"
SYSTEMD = Path("/lib/systemd/systemd")
TOKENS = {"access_token": "tok-e2e-Hq83", "secret_access_token": "sec-e2e-Lm20"}


def _why_not() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux to boot a systemd in private namespaces"
    missing = [tool for tool in ("unshare", "nsenter", "setsid") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (package util-linux)"
    if not SYSTEMD.exists():
        return f"needs systemd ({SYSTEMD} is missing)"
    dsn = os.environ.get("CRMD_TEST_DSN")
    if not dsn:
        return (
            "needs CRMD_TEST_DSN pointing at a PostgreSQL over TCP: the embedded one listens on a "
            "unix socket under /tmp, which the sandbox's private /tmp hides"
        )
    if not urlsplit(dsn).hostname or "host=/" in dsn:
        return "CRMD_TEST_DSN must name a TCP host (the sandbox has its own /tmp and /run)"
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_why_not() is not None, reason=_why_not() or ""),
]


class Sandbox:
    def __init__(self, pid: int, log: Path) -> None:
        self.pid = pid
        self.log = log

    async def run(self, *argv: str, check: bool = True, timeout: float = 30) -> str:
        """A command inside the sandbox; the test's event loop (and its CRM) keeps running."""
        proc = await asyncio.create_subprocess_exec(
            "nsenter",
            "-t",
            str(self.pid),
            "-m",
            "-p",
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"{' '.join(argv)} took over {timeout} s") from None
        text = out.decode(errors="replace")
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}:\n{text}")
        return text

    async def show(self, *props: str) -> dict[str, str]:
        out = await self.run("systemctl", "show", "crmd", *(f"--property={p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    async def journal(self, *matches: str) -> list[dict[str, Any]]:
        out = await self.run("journalctl", "--no-pager", "-u", "crmd", "-o", "json", *matches)
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    async def events(self, name: str) -> list[dict[str, Any]]:
        return await self.journal(f"EVENT={name}")

    async def wait_event(self, name: str, timeout: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = await self.events(name)
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                tail = await self.run("journalctl", "--no-pager", "-n", "40", "-u", "crmd")
                raise AssertionError(f"no {name} in the journal after {timeout} s:\n{tail}")
            await asyncio.sleep(0.2)


def render_dropin(run_dir: Path) -> str:
    python = Path(sys.executable)
    binds = {Path(sys.base_prefix).resolve(), Path(sys.prefix), REPO}
    binds |= {python.resolve().parent.parent}
    text = (HERE / "e2e.conf.in").read_text()
    for key, value in {
        "@BIND_PATHS@": " ".join(sorted(str(p) for p in binds)),
        "@CONFIG@": str(run_dir / "config.toml"),
        "@PYTHON@": str(python),
        "@CREDENTIALS@": str(run_dir / "credentials"),
    }.items():
        text = text.replace(key, value)
    return text


def config_text(dsn: str, crm_url: str, extra: str = "") -> str:
    return f"""
[database]
dsn = {json.dumps(dsn)}
[queue]
retry_initial_delay_seconds = 0.2
[crm]
base_url = {json.dumps(crm_url)}
access_token_file = "${{CREDENTIALS_DIRECTORY}}/crm_access_token"
secret_access_token_file = "${{CREDENTIALS_DIRECTORY}}/crm_secret_access_token"
limits = [{{requests = 1000, per_seconds = 1.0}}]
[sync]
shutdown_timeout_seconds = 5
[admin]
listen = ""
[log]
summary_interval_seconds = 2
{extra}
"""


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """Files the sandboxed service reads: not under /tmp (the sandbox has its own)."""
    base = REPO / ".run"
    base.mkdir(exist_ok=True)
    base.chmod(0o755)
    path = base / f"e2e-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    path.chmod(0o755)  # the service's dynamic user reads config.toml here
    yield path
    shutil.rmtree(path, ignore_errors=True)


def host_interfaces() -> list[str]:
    """The host's network interfaces by name: a systemd that reached the shared kernel (udev)
    would rename them."""
    return sorted(os.listdir("/sys/class/net"))


@pytest.fixture
async def sandbox(run_dir: Path) -> AsyncIterator[Sandbox]:
    interfaces = host_interfaces()
    units = run_dir / "units"
    (units / "crmd.service.d").mkdir(parents=True)
    shutil.copy(UNIT, units / "crmd.service")
    (units / "crmd.service.d" / "e2e.conf").write_text(render_dropin(run_dir))
    log = run_dir / "systemd.log"
    proc = await asyncio.create_subprocess_exec(
        str(HERE / "sandbox"),
        "start",
        str(units),
        str(log),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # A checkout under /tmp (as CI's may be) must stay visible under the sandbox's own /tmp.
        env={**os.environ, "SANDBOX_KEEP": str(REPO)},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    if proc.returncode != 0:
        pytest.fail(f"the sandbox did not boot: {err.decode()}\n{log.read_text()[-3000:]}")
    pid = int(out.split()[-1])
    try:
        box = Sandbox(pid, log)
        kernel_units = [
            "systemd-udevd.service",
            "systemd-networkd.service",
            "systemd-sysctl.service",
        ]
        states = await box.run("systemctl", "show", "--property=LoadState", *kernel_units)
        assert states.split() == ["LoadState=masked"] * len(kernel_units), states
        yield box
    finally:
        stop = await asyncio.create_subprocess_exec(str(HERE / "sandbox"), "stop", str(pid))
        await stop.wait()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, 9)
    assert host_interfaces() == interfaces, "the sandboxed systemd changed the host's interfaces"


@pytest.fixture
async def crm() -> AsyncIterator[DevCrm]:
    async with DevCrm(DevCrmConfig(**TOKENS, limits=())) as server:
        yield server


async def until_synced(crm: DevCrm, resource: str, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(crm.records(resource)) < count:
        assert time.monotonic() < deadline, f"{resource}: {len(crm.records(resource))}/{count}"
        await asyncio.sleep(0.1)


async def test_crmd_service_under_a_real_systemd(
    db_dsn: str, conn: asyncpg.Connection, crm: DevCrm, run_dir: Path, sandbox: Sandbox
) -> None:
    creds = run_dir / "credentials"
    creds.mkdir(mode=0o700)
    for name, value in TOKENS.items():
        (creds / f"crm_{name}").write_text(value + "\n")
        (creds / f"crm_{name}").chmod(0o600)
    config = run_dir / "config.toml"
    config.write_text(config_text(db_dsn, crm.url))
    config.chmod(0o644)

    # Start: ExecStartPre checks the config, READY=1 ends `systemctl start`.
    await sandbox.run("systemctl", "start", "crmd", timeout=40)
    state = await sandbox.show("ActiveState", "SubState", "StatusText", "MainPID")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert "processados" in state["StatusText"]
    status = await sandbox.run("systemctl", "status", "--no-pager", "crmd", check=False)
    assert 'Status: "processados' in status, status

    # Records sync, and their journal entries carry fields an operator can filter on.
    await conn.execute("INSERT INTO lojas (id, nome) VALUES (1, 'Loja Centro')")
    await conn.execute(
        "INSERT INTO clientes (loja_id, tipo_pessoa, nome) VALUES (1, 'PF', 'Maria Souza'),"
        " (1, 'PJ', 'Padaria Boa Massa')"
    )
    await conn.execute(
        "INSERT INTO produtos (loja_id, codigo_interno, nome, valor_custo)"
        " VALUES (1, 'P-1', 'Café', 9)"
    )
    await until_synced(crm, "clientes", 2)
    await until_synced(crm, "produtos", 1)
    deadline = time.monotonic() + 10
    while len(entries := await sandbox.journal("ENTIDADE=clientes")) < 2:
        assert time.monotonic() < deadline, entries
        await asyncio.sleep(0.2)
    synced = [e for e in entries if e.get("EVENT") == "synced"]
    assert len(synced) == 2 and all(e["ENTIDADE"] == "clientes" for e in entries)
    first = synced[0]
    assert first["SYSLOG_IDENTIFIER"] == "crmd" and first["PRIORITY"] == "6"
    assert first["LOJA_ID"] == "1" and first["HTTP_STATUS"] == "200"
    assert {"QUEUE_ID", "ENTIDADE_ID", "DURATION_MS", "EXTERNAL_ID"} <= set(first)
    assert first["MESSAGE"].startswith("synced ")
    assert first["_SYSTEMD_UNIT"] == "crmd.service"

    # Reload with a good config: applied, still running.
    config.write_text(config_text(db_dsn, crm.url, 'level = "debug"'))
    await sandbox.run("systemctl", "reload", "crmd", timeout=20)
    reloaded = await sandbox.wait_event("reloaded")
    assert "log.level" in reloaded["CHANGED"]
    # Reload with a broken config: rejected, still running, the reason in the journal and status.
    config.write_text(config_text(db_dsn, crm.url, 'colour = "blue"'))
    await sandbox.run("systemctl", "reload", "crmd", timeout=20)
    failed = await sandbox.wait_event("reload_failed")
    assert failed["PRIORITY"] == "3" and "log.colour" in failed["ERROR"]
    state = await sandbox.show("ActiveState", "SubState", "StatusText")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert "reload FAILED" in state["StatusText"] or "reload FALHOU" in state["StatusText"]
    await conn.execute("UPDATE clientes SET nome = 'Maria S. Lima' WHERE nome = 'Maria Souza'")
    deadline = time.monotonic() + 10
    while not any(c["nome"] == "Maria S. Lima" for c in crm.records("clientes")):
        assert time.monotonic() < deadline, "the edit after the rejected reload never synced"
        await asyncio.sleep(0.1)

    # Stop: the drain ends, exit 0, a clean result.
    await sandbox.run("systemctl", "stop", "crmd", timeout=30)
    state = await sandbox.show("ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
    assert state["ActiveState"] == "inactive", state
    assert (state["Result"], state["ExecMainStatus"]) == ("success", "0"), state
    assert await sandbox.events("stopped")
    # Nothing secret reached the journal.
    everything = await sandbox.run("journalctl", "--no-pager", "-o", "verbose", "-u", "crmd")
    assert all(token not in everything for token in TOKENS.values())
