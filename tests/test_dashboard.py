"""The dashboard end to end in headless Chromium: load it, press "Sincronizar clientes", give the
token, see the queue grow in the database and on the page. Screenshots go to test-artifacts/.

Needs Debian's `chromium` (/usr/bin/chromium) and the `playwright` Python package (its own
browser download is not used); skips, saying which is missing, without them.
"""

from __future__ import annotations

import re
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
TIME = re.compile(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2} UTC(-03)?")

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
        schedule={"timezone": "America/Sao_Paulo"},
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


async def day_of_traffic(conn: asyncpg.Connection) -> None:
    """24 h of requests in the log (two accounts) and of depth samples, and one record with a
    history: a failed attempt with its exchange."""
    await conn.execute(
        """INSERT INTO crm_sync_log (conta, loja_id, entidade, entidade_id, acao, tentativa,
                                     status, http_status, mensagem, requisicoes, criado_em)
           SELECT CASE WHEN g % 3 = 0 THEN 'loja-2' ELSE 'default' END, 1, 'clientes',
                  1000 + g, 'upsert', 1, 'sucesso', 200, 'criado', 1 + g % 4,
                  now() - make_interval(mins => g)
             FROM generate_series(1, 1400) g"""
    )
    await conn.execute(
        """INSERT INTO crm_sync_amostra (minuto, pendentes, processando, falhas)
           SELECT date_trunc('minute', now()) - make_interval(mins => g),
                  1000014 - g * 600, 4, 1
             FROM generate_series(0, 1380) g"""
    )
    trocas = (
        '[{"metodo": "POST", "caminho": "/clientes", "http_status": 404, "duracao_ms": 31,'
        ' "enviado": "{\\"nome\\": \\"Cliente 3\\", \\"cpf\\": \\"123\\"}",'
        ' "recebido": "{\\"code\\": 404, \\"status\\": \\"error\\", \\"data\\":'
        ' {\\"erro\\": \\"Not Found\\", \\"mensagem\\": \\"CPF inválido\\"}}"}]'
    )
    await conn.execute(
        """UPDATE crm_sync_log SET trocas = $1::jsonb, requisicoes = 1
            WHERE entidade = 'clientes' AND entidade_id = 3""",
        trocas,
    )
    await conn.execute(
        """INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, estado, tentativas,
                                       ultimo_erro, processado_em)
           VALUES (1, 'clientes', 3, 'falhou', 3, 'HTTP 404: CPF inválido', now())"""
    )


async def test_chart_history_and_a_phone(
    conn: asyncpg.Connection, server: AdminServer, browser: Any
) -> None:
    await seed(conn)
    await day_of_traffic(conn)
    ARTIFACTS.mkdir(exist_ok=True)
    for width, height, name in ((1280, 900, "dashboard-24h"), (390, 844, "dashboard-24h-phone")):
        page = await browser.new_page(viewport={"width": width, "height": height})
        await page.goto(server.url + "/")
        # The chart is drawn, with data: a line per account, its limit, and the queue's depth.
        requests_chart = page.locator("#grafico-requisicoes")
        await playwright_api.expect(requests_chart).to_have_attribute("data-linhas", "2")
        assert await requests_chart.locator("polyline.serie").count() == 2
        assert await requests_chart.locator("line.limite").count() == 2
        points = await requests_chart.locator("polyline.serie").first.get_attribute("points")
        assert points is not None and len(points.split()) > 1000
        assert await page.locator("#grafico-fila polyline.serie").count() >= 1
        await playwright_api.expect(page.locator("#grafico")).to_contain_text("1.000.014")
        box = await page.locator("#grafico-requisicoes svg").bounding_box()
        assert box is not None and box["height"] > 80
        # Thousands separators, "processados hoje", the estimate; stable times after a refresh.
        await playwright_api.expect(page.locator("#fila")).to_contain_text("Total")
        await playwright_api.expect(page.locator('[data-field="drain"]')).not_to_be_empty()
        await playwright_api.expect(page.locator('[data-field="processed_today"]')).to_have_text(
            re.compile(r"^\d{1,3}(\.\d{3})*$")
        )
        first = await page.locator("#atualizado").text_content()
        assert first is not None and TIME.fullmatch(first), first
        when = await page.locator("#erros td").first.text_content()
        await page.wait_for_function(
            "t => document.getElementById('atualizado').textContent !== t", arg=first
        )
        after = await page.locator("#atualizado").text_content()
        assert after is not None and TIME.fullmatch(after), after
        assert await page.locator("#erros td").first.text_content() == when
        # Nothing wider than the screen: no sideways scrolling of the whole page.
        assert await page.evaluate("document.documentElement.scrollWidth") <= width
        table = await page.locator("#fila table").bounding_box()
        assert table is not None and table["width"] <= width
        await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        await page.close()

    # From an error to its record's page: the attempt, what was sent and what came back.
    page = await browser.new_page(viewport={"width": 390, "height": 844})
    await page.goto(server.url + "/")
    await page.locator("#erros").get_by_role("link", name="Clientes 3").click()
    await playwright_api.expect(page.locator("h1")).to_have_text("Histórico: Clientes 3")
    attempt = page.locator("article.tentativa").first
    await playwright_api.expect(attempt).to_contain_text("HTTP 404")
    await attempt.locator("summary").first.click()
    await playwright_api.expect(attempt.locator("pre").first).to_contain_text('"nome": "Cliente 3"')
    await playwright_api.expect(attempt.locator("pre").nth(1)).to_contain_text("CPF inválido")
    await playwright_api.expect(page.locator("main")).to_contain_text("falhou, 3 tentativas")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.screenshot(path=str(ARTIFACTS / "record-phone.png"), full_page=True)

    # Its button sends the record again (with the token).
    await page.get_by_role("button", name="Enviar de novo").click()
    await page.locator("#token-campo").fill(TOKEN)
    await page.get_by_role("button", name="Confirmar").click()
    await playwright_api.expect(page.locator("#mensagem")).to_have_text(
        "O item com falha voltou para a fila."
    )
    assert (
        await conn.fetchval(
            "SELECT estado FROM crm_sync_queue WHERE entidade = 'clientes' AND entidade_id = 3"
        )
        == "pendente"
    )
