"""The dashboard end to end in headless Chromium: load it, press "Sincronizar clientes", give the
token, see the queue grow in the database and on the page. Screenshots go to test-artifacts/.

Needs Debian's `chromium` (/usr/bin/chromium) and the `playwright` Python package (its own
browser download is not used); skips, saying which is missing, without them.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from crmd.admin.server import AdminServer, start_admin
from crmd.config import Settings
from crmd.crm.accounts import build_accounts, close_accounts
from crmd.ops.schedule import TimerInfo
from crmd.service.view import DaemonView, ReloadInfo

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TOKEN = "painel-token"

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (pip install playwright)"
)
if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
    pytest.skip(
        f"{CHROMIUM} is missing (Debian: apt-get install chromium)", allow_module_level=True
    )


@pytest.fixture
async def server(pool: asyncpg.Pool, db_dsn: str) -> AsyncIterator[AdminServer]:
    settings = Settings(
        database={"dsn": db_dsn},
        admin={"listen": "", "token": TOKEN},
        crm={
            "access_token": "a",
            "secret_access_token": "b",
            "lojas": {2: {"access_token": "c", "secret_access_token": "d"}},
        },
    )
    accounts = build_accounts(settings)  # idle: no request is sent, their budgets show
    accounts["loja-2"].pause(600, 600, "429: O limite de requisicoes foi atingido", exact=600)
    now = datetime.now(UTC)
    timers = [
        TimerInfo("cleanup", "0 3 * * *", now - timedelta(hours=20), now + timedelta(hours=4)),
        TimerInfo("full_sync", "0 2 * * 0", None, now + timedelta(days=3)),
    ]

    async def timer_info() -> list[TimerInfo]:
        return timers

    ctx = DaemonView(
        pool=lambda: pool,
        settings=lambda: settings,
        accounts=lambda: accounts,
        stats=lambda: None,
        ready=lambda: True,
        reloads=ReloadInfo(),
        timers=timer_info,
    )
    admin = await start_admin(ctx, "127.0.0.1:0")
    assert admin is not None
    yield admin
    await admin.stop()
    await close_accounts(accounts)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        await b.close()


async def seed(conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO lojas (id, nome) VALUES (1, 'Centro'), (2, 'Praia')")
    await conn.execute(
        "INSERT INTO clientes (loja_id, nome)"
        " SELECT 1 + g % 2, 'Cliente ' || g FROM generate_series(1, 25) g"
    )
    await conn.execute(
        """INSERT INTO crm_sync_log (conta, loja_id, entidade, entidade_id, acao, tentativa,
                                     status, http_status, mensagem)
           VALUES ('default', 1, 'clientes', 3, 'upsert', 3, 'erro', 404, 'CPF inválido')"""
    )
    await conn.execute("DELETE FROM crm_sync_queue")


async def test_sync_button_enqueues_clientes(
    conn: asyncpg.Connection, server: AdminServer, browser: Any
) -> None:
    await seed(conn)
    ARTIFACTS.mkdir(exist_ok=True)
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(server.url + "/")
    pending = page.locator('[data-field="pending_total"]')
    await playwright_api.expect(pending).to_have_text("0")
    await playwright_api.expect(page.locator("#erros")).to_contain_text("CPF inválido")
    await playwright_api.expect(page.locator("#contas")).to_contain_text("Pausada até")
    await playwright_api.expect(page.locator("#agendamentos")).to_contain_text("Limpeza")

    await page.get_by_role("button", name="Sincronizar clientes").click()
    await page.locator("#token-campo").fill(TOKEN)
    await page.get_by_role("button", name="Confirmar").click()

    message = page.locator("#mensagem")
    await playwright_api.expect(message).to_contain_text("Total enfileirado: 25")
    await playwright_api.expect(message).to_contain_text("Loja 1: 12 clientes encontrados")
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM crm_sync_queue"
            " WHERE entidade = 'clientes' AND estado = 'pendente'"
        )
        == 25
    )
    await playwright_api.expect(pending).to_have_text("25")
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # The token stays for the tab: the next button asks nothing.
    await page.get_by_role("button", name="Reenviar falhas").click()
    await playwright_api.expect(message).to_contain_text("0 itens com falha voltaram")


async def test_wrong_token_is_refused_and_forgotten(
    conn: asyncpg.Connection, server: AdminServer, browser: Any
) -> None:
    await seed(conn)
    page = await browser.new_page()
    await page.goto(server.url + "/")
    await page.get_by_role("button", name="Sincronizar vendas").click()
    await page.locator("#token-campo").fill("errado")
    await page.get_by_role("button", name="Confirmar").click()

    await playwright_api.expect(page.locator("#mensagem")).to_contain_text("Token recusado")
    assert await page.evaluate("sessionStorage.getItem('crmd-admin-token')") is None
    assert await conn.fetchval("SELECT count(*) FROM crm_sync_queue") == 0


async def test_reads_well_on_a_phone(
    conn: asyncpg.Connection, server: AdminServer, browser: Any
) -> None:
    await seed(conn)
    page = await browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    await page.goto(server.url + "/")
    await playwright_api.expect(page.locator("#erros")).to_contain_text("CPF inválido")
    # Nothing wider than the screen: no sideways scrolling of the whole page.
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
