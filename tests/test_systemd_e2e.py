"""The real thing: README.md's systemd recipe, run as written, under a real systemd booted as
PID 1 in private PID and mount namespaces (tests/systemd/sandbox). /etc, /opt, /usr/bin, /root and
the checkout take the recipe's writes in tmpfs overlays, so the host never changes. Install into
/opt/crmd, credentials, `crmd migrate` with only the database, start, sync, the admin token,
reload (good, and broken: refused by `systemctl reload` itself), journal fields, stop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from crmd.dev.devcrm.server import DevCrm, DevCrmConfig

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "systemd"
SYSTEMD = Path("/lib/systemd/systemd")
TOKENS = {"access_token": "tok-e2e-Hq83", "secret_access_token": "sec-e2e-Lm20"}
# A root shell's PATH on the distributions the recipe is for (not this test's, with its pyenv).
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OVERLAID = ("/etc", "/opt", "/usr/bin", "/root", str(REPO))


def _why_not() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux to boot a systemd in private namespaces"
    missing = [tool for tool in ("unshare", "nsenter", "setsid") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (package util-linux)"
    if not SYSTEMD.exists():
        return f"needs systemd ({SYSTEMD} is missing)"
    if not Path("/usr/bin/python3").exists():
        return "needs the distribution's python3 (/usr/bin/python3), as the recipe does"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "needs overlayfs, to keep the recipe's writes off the host"
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

    async def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 30,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        """A command inside the sandbox; the test's event loop (and its CRM) keeps running."""
        proc = await asyncio.create_subprocess_exec(
            "nsenter",
            "-t",
            str(self.pid),
            "-m",
            "-p",
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        try:
            out, _ = await asyncio.wait_for(
                proc.communicate(None if stdin is None else stdin.encode()), timeout
            )
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

    async def shell(
        self, script: str, *, timeout: float = 60, extra: dict[str, str] | None = None
    ) -> tuple[int, str]:
        """`script` run by bash in the checkout, as root with a root shell's PATH."""
        env = {"PATH": ROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8", **(extra or {})}
        proc = await asyncio.create_subprocess_exec(
            "nsenter",
            "-t",
            str(self.pid),
            "-m",
            "-p",
            "bash",
            "-ec",
            f"cd {REPO}\n{script}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"{script!r} took over {timeout} s") from None
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace")


def recipe(name: str) -> str:
    """The shell block that follows `<!-- recipe:NAME` in README.md, as written there."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(rf"<!-- recipe:{name}\b[^>]*-->\n```sh\n(.*?)```", text, re.S)
    assert found, f"README.md has no recipe:{name} block"
    return found[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def edited(config: str, dsn: str, crm_url: str, listen: str) -> str:
    """The operator's edit of config.example.toml: the DSN and the CRM's URL (and, since the
    machine is shared, a free port for the admin endpoint)."""
    out = []
    for line in config.splitlines():
        key = line.split("=", 1)[0].strip()
        if key == "dsn":
            line = f"dsn = {json.dumps(dsn)}"
        elif key == "base_url":
            line = f"base_url = {json.dumps(crm_url)}"
        elif key == "listen":
            line = f"listen = {json.dumps(listen)}"
        out.append(line)
    return "\n".join(out) + "\n"


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
    units = run_dir / "units"  # none: the recipe installs the unit itself
    units.mkdir()
    log = run_dir / "systemd.log"
    proc = await asyncio.create_subprocess_exec(
        str(HERE / "sandbox"),
        "start",
        str(units),
        str(log),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # A checkout under /tmp (as CI's may be) must stay visible under the sandbox's own /tmp.
        env={**os.environ, "SANDBOX_KEEP": str(REPO), "SANDBOX_OVERLAY": ":".join(OVERLAID)},
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
    assert not Path("/etc/crmd").exists() and not Path("/opt/crmd").exists()


@pytest.fixture
async def crm() -> AsyncIterator[DevCrm]:
    async with DevCrm(DevCrmConfig(**TOKENS, limits=())) as server:
        yield server


async def until_synced(crm: DevCrm, resource: str, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(crm.records(resource)) < count:
        assert time.monotonic() < deadline, f"{resource}: {len(crm.records(resource))}/{count}"
        await asyncio.sleep(0.1)


async def test_the_readme_recipe_runs_as_written_and_the_daemon_syncs(
    db_dsn: str, conn: asyncpg.Connection, crm: DevCrm, run_dir: Path, sandbox: Sandbox
) -> None:
    tokens = {"TOKEN": TOKENS["access_token"], "SECRET": TOKENS["secret_access_token"]}
    rc, out = await sandbox.shell(recipe("install"), timeout=300, extra=tokens)
    assert rc == 0, out
    assert (await sandbox.run("readlink", "/usr/bin/crmd")).strip() == "/opt/crmd/bin/crmd"

    # The operator's edit, then the rest of the recipe. `crmd migrate` runs on the host's shell,
    # where ${CREDENTIALS_DIRECTORY} does not exist: it needs the database only.
    config = await sandbox.run("cat", "/etc/crmd/config.toml")
    assert "access_token_file" in config and 'access_token = "' not in config
    port = free_port()
    text = edited(config, db_dsn, crm.url, f"127.0.0.1:{port}")
    await sandbox.run("bash", "-c", "cat > /etc/crmd/config.toml", stdin=text)
    rc, out = await sandbox.shell(recipe("start"), timeout=90)
    assert rc == 0, out
    assert "esquema em dia" in out

    # Started: ExecStartPre's quiet check-config left nothing in the journal, READY=1 came.
    state = await sandbox.show("ActiveState", "SubState", "StatusText", "UnitFileState")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert state["UnitFileState"] == "enabled"
    assert "processados" in state["StatusText"]
    status = await sandbox.run("systemctl", "status", "--no-pager", "crmd", check=False)
    assert 'Status: "processados' in status, status
    assert "configuração de" not in await sandbox.run("journalctl", "--no-pager", "-u", "crmd")

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

    # The CLI as root on the host: the database commands need no CRM secret; check-config does,
    # and says how to give it.
    rc, out = await sandbox.shell("crmd status")
    assert rc == 0 and "Fila" in out, out
    rc, out = await sandbox.shell("crmd history clientes 1 --no-bodies")
    assert rc == 0 and "sucesso" in out, out
    rc, out = await sandbox.shell("crmd check-config")
    assert rc == 78 and "CREDENTIALS_DIRECTORY=/etc/crmd/credentials" in out, out

    # The admin token the recipe made works on the dashboard's API.
    token = (await sandbox.run("cat", "/etc/crmd/credentials/admin_token")).strip()
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{port}/api/retry"
        async with http.post(url, json={"all_failed": True}) as resp:
            assert resp.status == 401
        headers = {"Authorization": f"Bearer {token}"}
        async with http.post(url, json={"all_failed": True}, headers=headers) as resp:
            assert resp.status == 200, await resp.text()

    # Reload with a good config: checked, applied, still running.
    await sandbox.run("bash", "-c", "cat > /etc/crmd/config.toml", stdin=text + "level = 'debug'\n")
    out = await sandbox.run("systemctl", "reload", "crmd", check=False, timeout=20)
    journal = await sandbox.run("journalctl", "--no-pager", "-u", "crmd")
    assert "failed" not in out, out + journal[-3000:]
    reloaded = await sandbox.wait_event("reloaded")
    assert "log.level" in reloaded["CHANGED"]
    # A broken config: `systemctl reload` itself fails, the journal says why, the daemon goes on.
    broken = text + 'colour = "blue"\n'
    await sandbox.run("bash", "-c", "cat > /etc/crmd/config.toml", stdin=broken)
    out = await sandbox.run("systemctl", "reload", "crmd", check=False, timeout=20)
    assert "failed" in out, out
    journal = await sandbox.run("journalctl", "--no-pager", "-u", "crmd")
    assert "log.colour: chave desconhecida" in journal, journal[-2000:]
    state = await sandbox.show("ActiveState", "SubState")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    await conn.execute("UPDATE clientes SET nome = 'Maria S. Lima' WHERE nome = 'Maria Souza'")
    deadline = time.monotonic() + 10
    while not any(c["nome"] == "Maria S. Lima" for c in crm.records("clientes")):
        assert time.monotonic() < deadline, "the edit after the refused reload never synced"
        await asyncio.sleep(0.1)

    # Stop: the drain ends, exit 0, a clean result.
    await sandbox.run("systemctl", "stop", "crmd", timeout=30)
    state = await sandbox.show("ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
    assert state["ActiveState"] == "inactive", state
    assert (state["Result"], state["ExecMainStatus"]) == ("success", "0"), state
    assert await sandbox.events("stopped")
    # Nothing secret reached the journal, nor the log's stored bodies.
    everything = await sandbox.run("journalctl", "--no-pager", "-o", "verbose", "-u", "crmd")
    assert all(secret not in everything for secret in [*TOKENS.values(), token])
    stored = await conn.fetchval("SELECT string_agg(trocas::text, ' ') FROM crm_sync_log")
    assert stored and all(secret not in stored for secret in TOKENS.values())
