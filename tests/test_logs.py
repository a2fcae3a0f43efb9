"""Logging: journal datagrams on a socket the test owns, JSON and console lines, levels, secrets,
and the JOURNAL_STREAM detection in real subprocesses."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from crmd.service import logs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    """configure() changes process-wide state; leave structlog as other tests expect it."""
    yield
    logs._state.output.close()
    logs._state.installed = False
    logging.getLogger().removeHandler(logs._BRIDGE)
    logging.getLogger().setLevel(logging.WARNING)
    structlog.reset_defaults()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for /run/systemd/journal/socket."""
    path = str(tmp_path / "journal.socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def parse_entry(data: bytes) -> dict[str, bytes]:
    """Decode one native-protocol datagram, both `KEY=value` and length-prefixed fields."""
    fields: dict[str, bytes] = {}
    while data:
        end = data.index(b"\n")
        line = data[:end]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            data = data[end + 1 :]
        else:
            key = line
            (size,) = struct.unpack("<Q", data[end + 1 : end + 9])
            value = data[end + 9 : end + 9 + size]
            assert data[end + 9 + size : end + 10 + size] == b"\n"
            data = data[end + 10 + size :]
        assert key.decode() not in fields
        fields[key.decode()] = value
    return fields


def receive_entry(sock: socket.socket) -> dict[str, str]:
    return {k: v.decode() for k, v in parse_entry(sock.recv(1 << 20)).items()}


def assert_no_entry(sock: socket.socket) -> None:
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(1 << 20)


# --- journal ------------------------------------------------------------------------------------


def test_journal_entry_carries_message_priority_identifier_and_upper_case_fields(
    journal: tuple[socket.socket, str],
) -> None:
    sock, path = journal
    assert logs.configure("info", "journal", journal_socket=path) == "journal"

    structlog.get_logger().info(
        "queue_item_sent",
        entidade="vendas",
        entidade_id=42,
        loja_id=1,
        queue_id=907,
        http_status=201,
        duration_ms=183.5,
        crm_message="Venda criada com sucesso",
    )

    entry = receive_entry(sock)
    assert entry == {
        "MESSAGE": "queue_item_sent entidade=vendas entidade_id=42 loja_id=1 queue_id=907 "
        'http_status=201 duration_ms=183.5 crm_message="Venda criada com sucesso"',
        "PRIORITY": "6",
        "SYSLOG_IDENTIFIER": "crmd",
        "EVENT": "queue_item_sent",
        "ENTIDADE": "vendas",
        "ENTIDADE_ID": "42",
        "LOJA_ID": "1",
        "QUEUE_ID": "907",
        "HTTP_STATUS": "201",
        "DURATION_MS": "183.5",
        "CRM_MESSAGE": "Venda criada com sucesso",
    }


@pytest.mark.parametrize(
    ("method", "priority"),
    [("debug", "7"), ("info", "6"), ("warning", "4"), ("error", "3"), ("critical", "2")],
)
def test_journal_priority_follows_the_log_level(
    journal: tuple[socket.socket, str], method: str, priority: str
) -> None:
    sock, path = journal
    logs.configure("debug", "journal", journal_socket=path)
    getattr(structlog.get_logger(), method)("something")
    assert receive_entry(sock)["PRIORITY"] == priority


def test_multi_line_values_use_the_binary_length_encoding(
    journal: tuple[socket.socket, str],
) -> None:
    sock, path = journal
    logs.configure("info", "journal", journal_socket=path)

    structlog.get_logger().warning("crm_rejected", body="line one\nlinha dois ç")
    raw = sock.recv(1 << 20)

    value = "line one\nlinha dois ç".encode()
    assert b"\nBODY\n" + struct.pack("<Q", len(value)) + value + b"\n" in raw
    entry = {k: v.decode() for k, v in parse_entry(raw).items()}
    assert entry["BODY"] == "line one\nlinha dois ç"
    assert entry["MESSAGE"] == 'crm_rejected body="line one\\nlinha dois ç"'  # still one line


def test_exception_traceback_is_its_own_field_and_message_stays_one_line(
    journal: tuple[socket.socket, str],
) -> None:
    sock, path = journal
    logs.configure("info", "journal", journal_socket=path)

    try:
        raise RuntimeError("connection reset")
    except RuntimeError:
        structlog.get_logger().exception("send_failed", queue_id=7)

    entry = receive_entry(sock)
    assert entry["PRIORITY"] == "3"
    assert entry["MESSAGE"] == "send_failed queue_id=7"
    assert entry["EXCEPTION"].startswith("Traceback (most recent call last):\n")
    assert entry["EXCEPTION"].endswith("RuntimeError: connection reset")


def test_keys_are_sanitised_and_reserved_fields_cannot_be_overridden(
    journal: tuple[socket.socket, str],
) -> None:
    sock, path = journal
    logs.configure("info", "journal", journal_socket=path)

    structlog.get_logger().info(
        "odd_keys", **{"priority": 5, "_private": "p", "2fa": "x", "crm.host": "h", "ação": 1}
    )

    entry = receive_entry(sock)
    assert entry["PRIORITY"] == "6"
    assert entry["CRMD_PRIORITY"] == "5"
    assert entry["PRIVATE"] == "p"
    assert entry["FA"] == "x"
    assert entry["CRM_HOST"] == "h"
    assert entry["A__O"] == "1"
    assert all(name.replace("_", "A").isalnum() and name.isupper() for name in entry)


def test_journal_falls_back_to_stderr_when_the_socket_is_missing(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure("info", "journal", stream=stream, journal_socket=str(tmp_path / "none"))

    structlog.get_logger().error("db_unavailable", attempt=3)

    assert stream.getvalue() == "db_unavailable attempt=3\n"


def test_fallback_line_keeps_its_priority_when_stderr_is_the_journal_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    stream = io.StringIO()
    logs.configure("info", "journal", stream=stream, journal_socket=str(tmp_path / "none"))

    structlog.get_logger().warning("crm_slow", duration_ms=5000)

    assert stream.getvalue() == "<4>crm_slow duration_ms=5000\n"  # journald reads the "<4>"


def test_journal_falls_back_to_stderr_when_the_entry_is_too_large(
    journal: tuple[socket.socket, str],
) -> None:
    sock, path = journal
    stream = io.StringIO()
    logs.configure("info", "journal", stream=stream, journal_socket=path)

    structlog.get_logger().info("huge_payload", body="x" * 4_000_000)  # EMSGSIZE

    assert_no_entry(sock)
    line = stream.getvalue()
    assert line.startswith("huge_payload body=xxx")
    assert line.count("\n") == 1


# --- JSON and console ---------------------------------------------------------------------------


def test_json_format_is_one_object_per_line_with_the_fields() -> None:
    stream = io.StringIO()
    assert logs.configure("info", "json", stream=stream) == "json"
    log = structlog.get_logger()

    log.info("batch_done", processed=97, total=100, errors=3)
    try:
        raise ValueError("bad cpf\nsecond line")
    except ValueError:
        log.exception("mapping_failed", entidade="clientes", entidade_id=5)

    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["event"] == "batch_done"
    assert (first["processed"], first["total"], first["errors"]) == (97, 100, 3)
    assert first["level"] == "info"
    assert first["timestamp"].endswith("Z")
    assert second["level"] == "error"
    assert second["entidade"] == "clientes"
    assert "ValueError: bad cpf\nsecond line" in second["exception"]


def test_console_format_is_readable() -> None:
    stream = io.StringIO()
    assert logs.configure("info", "console", stream=stream) == "console"

    structlog.get_logger().warning("crm_rate_limited", account="loja1", retry_after_s=2.0)

    line = stream.getvalue()
    assert line.count("\n") == 1
    assert "[warning" in line
    assert "crm_rate_limited" in line
    assert "account=loja1" in line
    assert "retry_after_s=2.0" in line
    assert "\x1b[" not in line  # no colour codes when the stream is not a terminal


# --- levels and reconfiguration -----------------------------------------------------------------


def test_level_filters_and_reconfiguration_reaches_existing_bound_loggers() -> None:
    stream = io.StringIO()
    logs.configure("warning", "json", stream=stream)
    bound = structlog.get_logger().bind(loja_id=1)  # bound before the level changes
    module_level = structlog.get_logger("crmd.engine")

    bound.info("dropped")
    bound.warning("kept")
    logs.configure("debug", "json", stream=stream)  # as SIGHUP would
    bound.debug("now_visible")
    module_level.debug("also_visible")
    logs.configure("error", "json", stream=stream)
    bound.warning("dropped_again")

    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events == ["kept", "now_visible", "also_visible"]
    assert json.loads(stream.getvalue().splitlines()[0])["loja_id"] == 1


def test_reconfiguring_the_format_takes_effect_at_once(
    journal: tuple[socket.socket, str],
) -> None:
    sock, path = journal
    stream = io.StringIO()
    log = structlog.get_logger()
    logs.configure("info", "json", stream=stream, journal_socket=path)
    log.info("as_json")
    logs.configure("info", "journal", stream=stream, journal_socket=path)
    log.info("as_journal")

    assert json.loads(stream.getvalue())["event"] == "as_json"
    assert receive_entry(sock)["EVENT"] == "as_journal"


def test_unknown_level_or_format_is_rejected_without_changing_anything() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)
    with pytest.raises(ValueError, match="log level 'verbose'"):
        logs.configure("verbose", "json")
    with pytest.raises(ValueError, match="log format 'xml'"):
        logs.configure("debug", "xml")
    structlog.get_logger().debug("still_filtered")
    structlog.get_logger().info("still_json")
    assert json.loads(stream.getvalue())["event"] == "still_json"


def test_stdlib_loggers_go_through_the_same_output() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)

    logging.getLogger("aiohttp.access").info("GET /metrics %s", 200)
    logging.getLogger("asyncpg").debug("below the level")

    (record,) = (json.loads(line) for line in stream.getvalue().splitlines())
    assert record == {**record, "event": "GET /metrics 200", "logger": "aiohttp.access"}


# --- secrets ------------------------------------------------------------------------------------


def test_secrets_are_masked_in_every_format(journal: tuple[socket.socket, str]) -> None:
    sock, path = journal
    secrets = {
        "access_token": "tok-123",
        "secret_access_token": "sec-456",
        "Authorization": "Bearer abc",
        "db_password": "pw",
        "headers": {"access-token": "tok-123", "Content-Type": "application/json"},
    }

    json_stream, console_stream = io.StringIO(), io.StringIO()
    logs.configure("info", "json", stream=json_stream)
    structlog.get_logger().info("request", **secrets)
    logs.configure("info", "console", stream=console_stream)
    structlog.get_logger().info("request", **secrets)
    logs.configure("info", "journal", journal_socket=path)
    structlog.get_logger().info("request", **secrets)
    raw = sock.recv(1 << 20)

    record = json.loads(json_stream.getvalue())
    assert record["access_token"] == record["secret_access_token"] == "***"
    assert record["Authorization"] == record["db_password"] == "***"
    assert record["headers"] == {"access-token": "***", "Content-Type": "application/json"}
    entry = {k: v.decode() for k, v in parse_entry(raw).items()}
    assert entry["ACCESS_TOKEN"] == entry["AUTHORIZATION"] == "***"
    for output in (json_stream.getvalue(), console_stream.getvalue(), raw.decode()):
        for leaked in ("tok-123", "sec-456", "Bearer abc", "=pw"):
            assert leaked not in output


def test_a_dsn_quoted_in_a_message_loses_its_password() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)
    structlog.get_logger().error(
        "database_unreachable",
        error="cannot connect to postgresql://crmd:hunter2@db/erp?password=hunter3: refused",
        detail="host=db password=hunter4 user=crmd",
    )
    record = json.loads(stream.getvalue())
    assert record["error"].startswith("cannot connect to postgresql://crmd:***@db/erp?password=***")
    assert record["detail"] == "host=db password=*** user=crmd"
    assert "hunter" not in stream.getvalue()


# --- "auto": JOURNAL_STREAM detection in real processes ----------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, structlog
    from crmd.service import logs
    print(logs.configure("info", "auto", journal_socket=sys.argv[1]), flush=True)
    structlog.get_logger().info("hello", loja_id=1)
    """
)


def run_child(stderr: int, journal_path: str, journal_stream: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    if journal_stream is not None:
        env["JOURNAL_STREAM"] = journal_stream
    done = subprocess.run(
        [sys.executable, "-c", CHILD, journal_path],
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        cwd=ROOT,
        timeout=30,
        check=True,
        text=True,
    )
    return done.stdout.strip()


def test_auto_picks_journal_when_stderr_is_the_journal_stream(
    tmp_path: Path, journal: tuple[socket.socket, str]
) -> None:
    sock, path = journal
    with open(tmp_path / "stderr", "w") as err:
        st = os.fstat(err.fileno())
        assert run_child(err.fileno(), path, f"{st.st_dev}:{st.st_ino}") == "journal"
    entry = receive_entry(sock)
    assert (entry["EVENT"], entry["LOJA_ID"]) == ("hello", "1")
    assert (tmp_path / "stderr").read_text() == ""


def test_auto_ignores_a_journal_stream_that_is_not_our_stderr(
    tmp_path: Path, journal: tuple[socket.socket, str]
) -> None:
    sock, path = journal
    with open(tmp_path / "stderr", "w") as err:
        st = os.fstat(err.fileno())
        # Inherited from a parent whose stderr went to the journal; ours is this file.
        assert run_child(err.fileno(), path, f"{st.st_dev}:{st.st_ino + 1}") == "json"
    record = json.loads((tmp_path / "stderr").read_text())
    assert (record["event"], record["loja_id"]) == ("hello", 1)
    assert_no_entry(sock)


def test_auto_picks_console_on_a_terminal(journal: tuple[socket.socket, str]) -> None:
    _, path = journal
    leader, follower = pty.openpty()
    try:
        assert run_child(follower, path, None) == "console"
        os.close(follower)
        follower = -1
        output = b""
        while b"\n" not in output:
            output += os.read(leader, 4096)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert b"hello" in output
    assert b"loja_id" in output
