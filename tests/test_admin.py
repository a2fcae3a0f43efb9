"""The admin HTTP endpoint on 127.0.0.1 against a real PostgreSQL: health, readiness, metrics,
status, the sync and retry API with every auth case and bad input, and the dashboard's files."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from crmd.admin.server import AdminServer, start_admin
from crmd.config import Settings
from crmd.crm import transport
from crmd.crm.accounts import Account, build_accounts, close_accounts
from crmd.dev.devcrm.server import DevCrm, DevCrmConfig
from crmd.engine.work import Stats
from crmd.ops.schedule import TimerInfo
from crmd.service.view import DaemonView, ReloadInfo

TOKEN = "s3cret-admin-token"


@dataclass
class Harness:
    """A running admin server and the knobs a test turns."""

    server: AdminServer
    ctx: DaemonView
    session: aiohttp.ClientSession
    conn: asyncpg.Connection
    accounts: dict[str, Account]
    settings: Settings
    stats: Stats = field(default_factory=Stats)
    ready: bool = True
    reloads: ReloadInfo = field(default_factory=ReloadInfo)  # the context's own object
    timers: list[TimerInfo] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.server.url + path

    async def get(self, path: str) -> tuple[int, Any, aiohttp.ClientResponse]:
        async with self.session.get(self.url(path)) as resp:
            body = await resp.json() if resp.content_type == "application/json" else None
            if body is None:
                await resp.read()
            return resp.status, body, resp

    async def post(
        self, path: str, body: Any = None, *, token: str | None = TOKEN, raw: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        data = raw if raw is not None else None
        async with self.session.post(
            self.url(path), json=None if raw is not None else body, data=data, headers=headers
        ) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def crm() -> AsyncIterator[DevCrm]:
    # One request per minute: the second one gets GestãoClick's 429.
    async with DevCrm(
        DevCrmConfig(access_token="a", secret_access_token="b", limits=((1, 60),))
    ) as s:
        yield s


def make_settings(db_dsn: str, crm: DevCrm, token: str | None) -> Settings:
    return Settings(
        database={"dsn": db_dsn},
        crm={
            "base_url": crm.url,
            "access_token": "a",
            "secret_access_token": "b",
            "limits": [{"requests": 3, "per_seconds": 1}, {"requests": 100, "per_seconds": 60}],
        },
        admin={"listen": "", "token": token},  # the tests choose a free port
    )


async def start(
    pool: asyncpg.Pool, conn: asyncpg.Connection, settings: Settings
) -> AsyncIterator[Harness]:
    accounts = build_accounts(settings)
    holder: dict[str, Harness] = {}

    async def timers() -> list[TimerInfo]:
        return holder["h"].timers

    ctx = DaemonView(
        pool=lambda: pool,
        settings=lambda: holder["h"].settings,
        accounts=lambda: holder["h"].accounts,
        stats=lambda: holder["h"].stats,
        ready=lambda: holder["h"].ready,
        reloads=ReloadInfo(),
        timers=timers,
    )
    server = await start_admin(ctx, "127.0.0.1:0")
    assert server is not None
    async with aiohttp.ClientSession() as session:
        h = Harness(server, ctx, session, conn, accounts, settings, reloads=ctx.reloads)
        holder["h"] = h
        try:
            yield h
        finally:
            await server.stop()
            await close_accounts(accounts)


@pytest.fixture
async def admin(
    pool: asyncpg.Pool, conn: asyncpg.Connection, db_dsn: str, crm: DevCrm
) -> AsyncIterator[Harness]:
    async for h in start(pool, conn, make_settings(db_dsn, crm, TOKEN)):
        yield h


@pytest.fixture
async def tokenless(
    pool: asyncpg.Pool, conn: asyncpg.Connection, db_dsn: str, crm: DevCrm
) -> AsyncIterator[Harness]:
    async for h in start(pool, conn, make_settings(db_dsn, crm, None)):
        yield h


async def seed(conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO lojas (id, nome) VALUES (1, 'Centro'), (2, 'Praia')")
    await conn.execute(
        "INSERT INTO clientes (loja_id, nome)"
        " SELECT 1 + g % 2, 'C' || g FROM generate_series(1, 9) g"
    )
    await conn.execute("DELETE FROM crm_sync_queue")


async def make_failed(conn: asyncpg.Connection, entidade: str, entidade_id: int) -> int:
    return int(
        await conn.fetchval(
            """INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, estado, tentativas,
                                           ultimo_erro, processado_em)
               VALUES (1, $1, $2, 'falhou', 3, 'HTTP 404: inválido', now()) RETURNING id""",
            entidade,
            entidade_id,
        )
    )


def metric(text: str, line_start: str) -> float:
    """The value of the sample whose line starts with `line_start` (name and labels)."""
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {line_start} in /metrics")


# --- health -----------------------------------------------------------------------------------


async def test_healthz_and_readyz(admin: Harness) -> None:
    status, body, resp = await admin.get("/healthz")
    assert (status, body) == (200, {"status": "ok"})
    assert resp.headers["Server"] == "crmd"
    assert (await admin.get("/readyz"))[:2] == (200, {"ready": True})

    admin.ready = False  # shutting down, or the engine lost the database
    assert (await admin.get("/readyz"))[:2] == (503, {"ready": False, "reason": "não está pronto"})


async def test_readyz_is_503_and_status_503_when_the_database_is_gone(
    conn: asyncpg.Connection, db_dsn: str, crm: DevCrm
) -> None:
    pool = await asyncpg.create_pool(db_dsn, min_size=0, max_size=2)
    async for h in start(pool, conn, make_settings(db_dsn, crm, TOKEN)):
        await pool.close()
        status, body, _ = await h.get("/readyz")
        assert (status, body) == (503, {"ready": False, "reason": "banco de dados indisponível"})
        status, body, _ = await h.get("/api/status")
        assert status == 503 and body == {
            "error": "banco de dados indisponível; veja o log do daemon"
        }
        status, _, _ = await h.get("/metrics")
        assert status == 200  # still scrapeable: it says the database is down


async def test_disabled_when_listen_is_empty(pool: asyncpg.Pool) -> None:
    ctx = DaemonView(
        pool=lambda: pool,
        settings=Settings,
        accounts=dict,
        stats=lambda: None,
        ready=lambda: True,
        reloads=ReloadInfo(),
    )
    assert await start_admin(ctx, "") is None


async def test_a_busy_port_is_an_error(admin: Harness) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        ctx = DaemonView(
            pool=lambda: None,  # type: ignore[arg-type, return-value]
            settings=Settings,
            accounts=dict,
            stats=lambda: None,
            ready=lambda: True,
            reloads=ReloadInfo(),
        )
        with pytest.raises(OSError):
            await start_admin(ctx, f"127.0.0.1:{port}")


# --- metrics ----------------------------------------------------------------------------------


async def test_metrics_show_queue_requests_budget_pauses_reloads_and_timers(
    admin: Harness, crm: DevCrm
) -> None:
    await seed(admin.conn)
    await admin.conn.execute("SELECT crm_enqueue(1, 'clientes', 1), crm_enqueue(1, 'vendas', 2)")
    await make_failed(admin.conn, "produtos", 3)
    account = admin.accounts["default"]
    ok = await account.provider.transport.request("GET", "/clientes")
    limited = await account.provider.transport.request("GET", "/clientes")
    assert (ok.status, limited.status) == (200, 429)
    account.pause(30, 60, "429: O limite de requisicoes foi atingido", exact=30)
    admin.stats.succeeded = 4
    admin.stats.by_entity["clientes"] = 3
    admin.stats.by_entity["vendas"] = 1
    admin.stats.failed = 2
    admin.stats.failed_by_entity["produtos"] = 2
    admin.stats.ignored_by_entity["atividades"] = 5
    await admin.conn.execute(
        "INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, estado, processado_em)"
        " VALUES (1, 'atividades', 8, 'ignorado', now())"
    )
    admin.reloads.count, admin.reloads.last_ok, admin.reloads.last_at = 2, False, time.time()
    ran = datetime.now(UTC) - timedelta(hours=1)
    await admin.conn.execute(
        "INSERT INTO crm_sync_timer (nome, ultima_execucao, executado_em, resultado)"
        " VALUES ('cleanup', $1, $1, 'log: 3 removidos')",
        ran,
    )
    nxt = datetime.now(UTC) + timedelta(hours=5)
    admin.timers = [TimerInfo("cleanup", "0 3 * * *", ran, nxt)]

    status, _, resp = await admin.get("/metrics")
    text = await resp.text()

    assert status == 200 and resp.content_type == "text/plain"
    assert metric(text, 'crmd_queue_depth{entidade="clientes",estado="pendente"}') == 1
    assert metric(text, 'crmd_queue_depth{entidade="vendas",estado="pendente"}') == 1
    assert metric(text, 'crmd_queue_depth{entidade="produtos",estado="falhou"}') == 1
    assert metric(text, "crmd_database_up") == 1
    assert metric(text, 'crmd_items_done_total{entidade="clientes"}') == 3
    assert metric(text, 'crmd_items_failed_total{entidade="produtos"}') == 2
    assert metric(text, 'crmd_items_failed_total{entidade="clientes"}') == 0
    assert metric(text, 'crmd_items_ignored_total{entidade="atividades"}') == 5
    assert metric(text, 'crmd_queue_depth{entidade="atividades",estado="ignorado"}') == 1
    labels = 'account="default",entidade="clientes",method="GET"'
    assert metric(text, f'crmd_crm_requests_total{{{labels},status_class="2xx"}}') == 1
    assert metric(text, f'crmd_crm_requests_total{{{labels},status_class="4xx"}}') == 1
    assert metric(text, 'crmd_crm_rate_limited_total{account="default"}') == 1
    assert (
        metric(text, 'crmd_crm_request_duration_seconds_count{account="default",method="GET"}') == 2
    )
    assert metric(text, 'crmd_rate_limit_wait_seconds_count{account="default"}') == 2
    assert metric(text, 'crmd_rate_limit_used{account="default",window_seconds="60"}') == 2
    assert metric(text, 'crmd_rate_limit_limit{account="default",window_seconds="60"}') == 100
    assert metric(text, 'crmd_account_paused{account="default"}') == 1
    assert 25 < metric(text, 'crmd_account_pause_remaining_seconds{account="default"}') <= 30
    assert metric(text, "crmd_config_reloads_total") == 2
    assert metric(text, "crmd_config_last_reload_success") == 0
    assert metric(text, 'crmd_timer_last_success_timestamp_seconds{timer="cleanup"}') == (
        pytest.approx(ran.timestamp())
    )
    assert metric(text, 'crmd_timer_next_run_timestamp_seconds{timer="cleanup"}') == (
        pytest.approx(nxt.timestamp())
    )
    assert metric(text, "crmd_ready") == 1


async def test_the_request_observer_is_removed_on_stop(
    pool: asyncpg.Pool, conn: asyncpg.Connection, db_dsn: str, crm: DevCrm
) -> None:
    before = list(transport.observers)
    async for _ in start(pool, conn, make_settings(db_dsn, crm, TOKEN)):
        assert len(transport.observers) == len(before) + 1
    assert transport.observers == before


# --- status -----------------------------------------------------------------------------------


async def test_status_is_the_command_json_plus_accounts_and_timers(admin: Harness) -> None:
    await admin.conn.execute("SELECT crm_enqueue(1, 'vendas', 7, 5)")
    admin.accounts["default"].pause(10, 60, "429: limite", exact=10)
    when = datetime(2030, 1, 5, 2, 0, tzinfo=UTC)
    admin.timers = [TimerInfo("full_sync", "0 2 * * 0", None, when)]

    status, body, _ = await admin.get("/api/status")

    assert status == 200
    assert body["queue"]["pending"]["vendas"] == 1
    assert set(body) >= {"queue", "last_24h", "last_hour", "recent_errors", "accounts", "timers"}
    [account] = body["accounts"]
    assert account["name"] == "default" and account["paused"] is True
    assert account["reason"] == "429: limite"
    assert account["limits"] == [
        {"requests": 3, "per_seconds": 1.0, "used": 0},
        {"requests": 100, "per_seconds": 60.0, "used": 0},
    ]
    assert body["timers"] == [
        {"name": "full_sync", "cron": "0 2 * * 0", "last_run": None, "next_run": when.isoformat()}
    ]
    assert body["daemon"]["token_configured"] is True


# --- sync -------------------------------------------------------------------------------------


async def test_sync_enqueues_like_the_command(admin: Harness) -> None:
    await seed(admin.conn)

    status, body = await admin.post("/api/sync/clientes")
    assert status == 200
    assert body["per_loja"] == {"1": 4, "2": 5} and body["total"] == 9
    assert await admin.conn.fetchval("SELECT count(*) FROM crm_sync_queue") == 9

    status, body = await admin.post("/api/sync/clientes", {"lojas": [2], "priority": 8})
    assert (status, body["per_loja"], body["created"]) == (200, {"2": 5}, 0)
    assert (
        await admin.conn.fetchval("SELECT count(*) FROM crm_sync_queue WHERE prioridade = 8") == 5
    )


BAD_INPUT: list[tuple[str, Any, str | None, str]] = [
    ("/api/sync/pedidos", None, None, "entidade desconhecida 'pedidos'"),
    ("/api/sync/clientes", None, "{not json", "o corpo não é JSON"),
    ("/api/sync/clientes", [1, 2], None, "o corpo deve ser um objeto JSON"),
    ("/api/sync/clientes", {"loja": [1]}, None, "campo desconhecido loja"),
    ("/api/sync/clientes", {"lojas": 1}, None, "lojas deve ser uma lista de inteiros"),
    ("/api/sync/clientes", {"lojas": ["1"]}, None, "loja deve ser um inteiro"),
    ("/api/sync/clientes", {"lojas": [99]}, None, "nenhuma loja com id 99"),
    ("/api/sync/vendas", {"since_days": "30d"}, None, "since_days deve ser um inteiro"),
    ("/api/sync/vendas", {"priority": True}, None, "priority deve ser um inteiro"),
    ("/api/retry", {}, None, "escolha exatamente um de ids, entidade ou all_failed"),
    ("/api/retry", {"ids": [1], "entidade": "clientes"}, None, "exatamente um"),
    ("/api/retry", {"ids": "1"}, None, "ids deve ser uma lista de inteiros"),
    ("/api/retry", {"all_failed": "yes"}, None, "all_failed deve ser true ou false"),
    ("/api/retry", {"entidade": 3}, None, "entidade deve ser um texto"),
    ("/api/retry", {"entidade": "pedidos"}, None, "entidade desconhecida 'pedidos'"),
]


async def test_bad_input_is_400_with_a_message(admin: Harness) -> None:
    await seed(admin.conn)
    for path, body, raw, message in BAD_INPUT:
        status, answer = await admin.post(path, body, raw=raw)
        assert status == 400, (path, body, raw)
        assert message in answer["error"]
    assert await admin.conn.fetchval("SELECT count(*) FROM crm_sync_queue") == 0


# --- retry ------------------------------------------------------------------------------------


async def test_retry_by_ids_entity_and_all(admin: Harness) -> None:
    a = await make_failed(admin.conn, "clientes", 1)
    await make_failed(admin.conn, "clientes", 2)
    await make_failed(admin.conn, "vendas", 3)

    assert await admin.post("/api/retry", {"ids": [a]}) == (200, {"retried": 1})
    assert await admin.post("/api/retry", {"entidade": "vendas"}) == (200, {"retried": 1})
    assert await admin.post("/api/retry", {"all_failed": True}) == (200, {"retried": 1})
    assert (
        await admin.conn.fetchval(
            "SELECT count(*) FROM crm_sync_queue WHERE estado = 'pendente' AND tentativas = 0"
        )
        == 3
    )


# --- auth -------------------------------------------------------------------------------------


ChangeCall = tuple[str, dict[str, Any]]
CHANGES: list[ChangeCall] = [("/api/sync/clientes", {}), ("/api/retry", {"all_failed": True})]


@pytest.mark.parametrize(("path", "body"), CHANGES)
async def test_changes_need_the_right_token(admin: Harness, path: str, body: Any) -> None:
    await seed(admin.conn)
    for token in (None, "wrong", TOKEN[:-1], "", f"{TOKEN}x"):
        status, answer = await admin.post(path, body, token=token)
        assert status == 401, token
        assert answer == {
            "error": "token de administração ausente ou errado (Authorization: Bearer <token>)"
        }
    async with admin.session.post(
        admin.url(path), json=body, headers={"Authorization": f"Basic {TOKEN}"}
    ) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="crmd"'
    status, _ = await admin.post(path, body, token=TOKEN)
    assert status == 200
    assert await admin.conn.fetchval("SELECT count(*) FROM crm_sync_queue") == (
        9 if "sync" in path else 0
    )


@pytest.mark.parametrize(("path", "body"), CHANGES)
async def test_changes_are_off_without_a_configured_token(
    tokenless: Harness, path: str, body: Any
) -> None:
    await seed(tokenless.conn)
    for token in (None, TOKEN):
        status, answer = await tokenless.post(path, body, token=token)
        assert status == 403
        assert "defina [admin] token ou [admin] token_file" in answer["error"]
    assert await tokenless.conn.fetchval("SELECT count(*) FROM crm_sync_queue") == 0


async def test_read_only_endpoints_need_no_token(tokenless: Harness) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/api/status", "/"):
        assert (await tokenless.get(path))[0] == 200, path


# --- errors and the page ----------------------------------------------------------------------


async def test_unexpected_errors_are_a_plain_500(admin: Harness) -> None:
    secret = "password=hunter2 at /etc/crmd/config.toml"

    def broken() -> dict[str, Account]:
        raise RuntimeError(secret)

    admin.ctx.accounts = broken

    async with admin.session.get(admin.url("/api/status")) as resp:
        text = await resp.text()
    assert resp.status == 500
    assert text == '{"error": "erro interno; veja o log do daemon"}'
    assert "hunter2" not in text and "Traceback" not in text


async def test_dashboard_page_and_assets(admin: Harness) -> None:
    await seed(admin.conn)
    await admin.conn.execute("SELECT crm_enqueue(1, 'clientes', 1)")
    async with admin.session.get(admin.url("/")) as resp:
        page = await resp.text()
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    for label in (
        "Sincronizar clientes",
        "Sincronizar produtos",
        "Sincronizar vendas",
        "Reenviar falhas",
        "Fila por entidade",
        "Erros recentes",
        "Agendamentos",
    ):
        assert label in page
    assert '<span class="valor" data-field="pending_total">1</span>' in page
    await admin.conn.execute(
        "INSERT INTO crm_instance (id, host, pid, versao)"
        " VALUES (gen_random_uuid(), 'erp-1', 4242, '0.1.0'),"
        "        (gen_random_uuid(), 'erp-2', 77, '0.1.0')"
    )
    await admin.conn.execute(
        "UPDATE crm_instance SET visto_em = now() - interval '1 min' WHERE pid = 77"
    )
    async with admin.session.get(admin.url("/")) as resp:
        page = await resp.text()
    assert "Instâncias do crmd" in page
    assert "<td>erp-1</td><td>4242</td>" in page and "ativa, visto em" in page
    assert "<strong>sem sinal</strong>" in page  # erp-2's heartbeat is a minute old
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        async with admin.session.get(admin.url(f"/static/{name}")) as resp:
            assert (resp.status, resp.content_type) == (200, kind)
    for missing in ("/static/index.html", "/static/..%2f__init__.py", "/nada"):
        async with admin.session.get(admin.url(missing)) as resp:
            assert resp.status == 404, missing
