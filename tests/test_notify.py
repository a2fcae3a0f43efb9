"""sd_notify: the exact datagrams systemd would receive, on a socket the test owns."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from crmd.service.notify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket in a temp dir, playing systemd's notify socket."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def receive(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def assert_nothing_queued(sock: socket.socket) -> None:
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


def test_ready_status_watchdog_stopping_are_exact_datagrams(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})

    assert notifier.ready()
    assert receive(sock) == b"READY=1\n"
    assert notifier.ready("processing the queue")
    assert receive(sock) == b"READY=1\nSTATUS=processing the queue\n"
    assert notifier.status("processed 3/5, 2 errors")
    assert receive(sock) == b"STATUS=processed 3/5, 2 errors\n"
    assert notifier.watchdog()
    assert receive(sock) == b"WATCHDOG=1\n"
    assert notifier.stopping("draining")
    assert receive(sock) == b"STOPPING=1\nSTATUS=draining\n"
    notifier.close()


def test_reloading_carries_monotonic_usec_in_the_same_datagram(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    lines = receive(sock).decode().splitlines()
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert before <= int(lines[1].removeprefix("MONOTONIC_USEC=")) <= after
    assert len(lines) == 2
    assert_nothing_queued(sock)


def test_send_joins_fields_and_keeps_each_value_on_one_line(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})

    assert notifier.send(STATUS="config rejected:\ncrm.rate", EXTEND_TIMEOUT_USEC=5_000_000)
    assert receive(sock) == b"STATUS=config rejected: crm.rate\nEXTEND_TIMEOUT_USEC=5000000\n"


def test_abstract_namespace_socket_is_reached_through_a_leading_at() -> None:
    name = f"crmd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        assert Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1\n"
    finally:
        sock.close()


def test_unset_notify_socket_sends_nothing() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.reloading()
    assert not notifier.watchdog()


def test_a_missing_or_dead_socket_never_raises(tmp_path: Path) -> None:
    missing = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-here")})
    assert not missing.ready()  # ENOENT

    dead_path = tmp_path / "dead"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(dead_path))
    dead.close()  # the file stays, nobody reads: ECONNREFUSED
    refused = Notifier.from_env({"NOTIFY_SOCKET": str(dead_path)})
    assert not refused.watchdog()
    assert not refused.watchdog()

    assert not Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).ready()


def test_a_full_socket_buffer_does_not_block(listener: tuple[socket.socket, str]) -> None:
    _, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    started = time.monotonic()
    results = [notifier.status("x" * 1000) for _ in range(5000)]  # nobody reads meanwhile
    assert time.monotonic() - started < 5
    assert results[0] is True
    assert results[-1] is False  # EAGAIN: dropped, not waited for


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "1000"}, 0.0005),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process(
    environ: dict[str, str], interval: float | None
) -> None:
    assert Notifier.from_env(environ).watchdog_interval() == interval


def test_from_env_reads_the_process_environment(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = Notifier.from_env()
    assert notifier.watchdog_interval() == 10.0
    assert notifier.watchdog()
    assert receive(sock) == b"WATCHDOG=1\n"
