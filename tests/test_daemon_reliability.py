"""`crmd run` under the faults production brings: a reload to a database that does not answer,
a stop while items wait for the rate limiter, a connection cut after the CRM did its work."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import asyncpg
import pytest

from crmd.config import CrmAccountSettings
from crmd.crm.errors import CrmError
from crmd.crm.limiter import RateLimiter
from crmd.crm.transport import Transport
from crmd.dev.devcrm.server import DevCrm
from tests.test_daemon import (
    NotifySocket,
    add_loja,
    add_produtos,
    all_done,
    crm,
    daemon_config,
    daemons,
    notify,
    rewrite,
    until,
    workdir,
)

__all__ = ["crm", "daemons", "notify", "workdir"]  # fixtures, shared with test_daemon

pytestmark = pytest.mark.slow


async def test_a_reload_to_a_database_that_does_not_answer_changes_nothing(
    db_dsn: str, conn: asyncpg.Connection, crm: DevCrm, notify: NotifySocket, daemons: Any
) -> None:
    config = daemon_config(db_dsn, crm.url)
    daemon = daemons(config, {"NOTIFY_SOCKET": notify.path}).start()
    await until(lambda: notify.with_field("READY", "1"), "READY=1")

    moved = json.loads(json.dumps(config))
    moved["database"]["dsn"] = "postgresql://crmd@127.0.0.1:1/nowhere"  # valid, unreachable
    moved["database"]["connect_timeout_seconds"] = 1.0
    moved["crm"]["limits"] = [{"requests": 1, "per_seconds": 1.0}]
    rewrite(daemon, moved)
    daemon.send(signal.SIGHUP)
    [reloading] = await until(lambda: notify.with_field("RELOADING", "1"), "RELOADING=1")
    [ready] = await until(
        lambda: [d for d in notify.with_field("READY", "1") if d.at >= reloading.at],
        "READY=1 after the refused reload",
    )
    assert "reload FALHOU" in ready.fields["STATUS"]
    assert "127.0.0.1:1" in ready.fields["STATUS"]
    await daemon.wait_event("reload_failed")

    # None of the new file applied: the loose limit still holds on the old database.
    await add_loja(conn)
    await add_produtos(conn, 1, 6)
    started = time.monotonic()
    await until(lambda: all_done(conn, 6), "the produtos to sync on the old config")
    assert time.monotonic() - started < 4, "12 requests at 1/s would take 12 s"
    daemon.send(signal.SIGTERM)
    assert await daemon.exit_code() == 0


async def four_waiting_for_the_limiter(
    db_dsn: str, conn: asyncpg.Connection, crm: DevCrm, notify: NotifySocket, daemons: Any
) -> Any:
    """A ready daemon allowed 1 request per 30 s, with 5 produtos: one sent, four waiting."""
    config = daemon_config(
        db_dsn,
        crm.url,
        crm={"concurrency": 4, "limits": [{"requests": 1, "per_seconds": 30.0}]},
        sync={"shutdown_timeout_seconds": 20, "lookup_unknown": False},
    )
    daemon = daemons(config, {"NOTIFY_SOCKET": notify.path}).start()
    await until(lambda: notify.with_field("READY", "1"), "READY=1")
    await add_loja(conn)
    await add_produtos(conn, 1, 5)
    await until(lambda: len(crm.ledger) == 1, "the one request the limit allows")
    await asyncio.sleep(0.3)  # the other four now wait for a slot 30 s away
    return daemon


async def test_sigterm_gives_back_at_once_what_waits_for_the_rate_limiter(
    db_dsn: str, conn: asyncpg.Connection, crm: DevCrm, notify: NotifySocket, daemons: Any
) -> None:
    daemon = await four_waiting_for_the_limiter(db_dsn, conn, crm, notify, daemons)

    daemon.send(signal.SIGTERM)
    signalled = time.monotonic()
    assert await daemon.exit_code(timeout=20) == 0
    assert time.monotonic() - signalled < 3, "items not yet sent were waited for"
    rows = await conn.fetch("SELECT estado, tentativas FROM crm_sync_queue ORDER BY id")
    assert sorted(r["estado"] for r in rows) == ["concluido"] + ["pendente"] * 4
    assert all(r["tentativas"] == 0 for r in rows if r["estado"] == "pendente")


async def test_kill_9_while_items_wait_for_the_rate_limiter_spends_none_of_their_attempts(
    db_dsn: str, conn: asyncpg.Connection, crm: DevCrm, notify: NotifySocket, daemons: Any
) -> None:
    # Killed three times so, an item once ended failed ("processo interrompido durante o
    # envio") though nothing of it had been sent: the chaos suite's kill -9 saw 10 of 480.
    daemon = await four_waiting_for_the_limiter(db_dsn, conn, crm, notify, daemons)
    await until(lambda: all_done(conn, 1), "the first produto")
    await asyncio.sleep(0.2)  # any start of the waiting four would be written by now

    daemon.stop_hard()  # SIGKILL: nothing is given back
    rows = await conn.fetch("SELECT estado, tentativas FROM crm_sync_queue ORDER BY id")
    assert sorted(r["estado"] for r in rows) == ["concluido"] + ["processando"] * 4
    assert [r["tentativas"] for r in rows if r["estado"] == "processando"] == [0] * 4


async def test_a_request_is_never_sent_twice_on_one_grant() -> None:
    """aiohttp would send a GET again by itself when a kept-alive connection breaks after the
    CRM read it: that second request would hold no grant of the rate limiter."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await reader.readuntil(b"\r\n\r\n"):
            seen.append(request.split(b"\r\n", 1)[0])
            if len(seen) == 2:  # the CRM did the work, and the connection breaks
                writer.close()
                return
            body = b'{"code": 200, "status": "success", "data": []}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = CrmAccountSettings(base_url=f"http://127.0.0.1:{port}")
    limiter = RateLimiter([(100, 1.0)])
    transport = Transport("default", settings, limiter, {})
    try:
        await transport.request("GET", "/clientes")
        with pytest.raises(CrmError) as failed:
            await transport.request("GET", "/clientes")
        assert failed.value.delivered
        await asyncio.sleep(0.2)
        assert len(seen) == 2, seen
        assert limiter.used(1.0) == 2
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()
