"""The development CRM speaks GestãoClick's API on the wire: envelopes, quirks, limits, faults.

Every test talks HTTP to a real server on 127.0.0.1 with aiohttp's client.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from crmd.dev.devcrm import cli, envelope
from crmd.dev.devcrm.ledger import LedgerEntry, max_in_window
from crmd.dev.devcrm.server import DevCrm, DevCrmConfig
from crmd.dev.devcrm.store import LOJAS, RESOURCES, SITUACOES

TOKENS = {"access-token": "tok", "secret-access-token": "sec"}
REPO = Path(__file__).resolve().parent.parent
SITUACAO = SITUACOES[1][0]
MATRIZ, FILIAL = LOJAS[0][0], LOJAS[1][0]

CLIENTE = {
    "tipo_pessoa": "PF",
    "nome": "João da Silva",
    "cpf": "477.182.526-20",
    "email": "joao@example.com",
    "telefone": "(11) 2533-3532",
    "ativo": "1",
    "contatos": [{"contato": {"nome": "Maria", "contato": "maria@example.com"}}],
    "enderecos": [{"endereco": {"cep": "31110-700", "logradouro": "Rua Itararé"}}],
}
PRODUTO = {
    "nome": "Óculos",
    "codigo_interno": "OC-1",
    "valor_custo": "80",
    "valor_venda": 120,
    "estoque": "5",
}


def config(**overrides: Any) -> DevCrmConfig:
    settings: dict[str, Any] = {
        "access_token": "tok",
        "secret_access_token": "sec",
        "limits": (),
        "seed": 1,
    }
    return DevCrmConfig(**{**settings, **overrides})


@pytest.fixture
async def crm() -> AsyncIterator[DevCrm]:
    async with DevCrm(config()) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=TOKENS) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, url, json=body) as response:
        if response.content_type != "application/json":
            return response.status, await response.text()
        return response.status, await response.json()


def entry(at: float, status: int = 200, counted: bool = True) -> LedgerEntry:
    return LedgerEntry(0, at, at, "GET", "/clientes", "", status, counted)


# --- authentication ---------------------------------------------------------------------------


async def test_requests_without_the_configured_token_pair_get_401(crm: DevCrm) -> None:
    async with aiohttp.ClientSession() as anonymous:
        status, body = await call(anonymous, "GET", f"{crm.url}/clientes")
    wrong = {**TOKENS, "secret-access-token": "nope"}
    async with aiohttp.ClientSession(headers=wrong) as session:
        status_wrong, _ = await call(session, "GET", f"{crm.url}/clientes")

    assert (status, status_wrong) == (401, 401)
    assert body["code"] == 401
    assert body["status"] == "error"
    assert body["data"]["mensagem"]
    assert [(e.status, e.counted) for e in crm.ledger] == [(401, False), (401, False)]


# --- records and envelope ---------------------------------------------------------------------


async def test_cliente_round_trip_answers_in_the_envelope_with_string_ids(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    status, created = await call(http, "POST", f"{crm.url}/clientes", CLIENTE)
    assert status == 200
    assert created["code"] == 200
    assert created["status"] == "success"
    cliente = created["data"]
    assert cliente["id"] == "1"
    assert cliente["ativo"] == "1"
    assert cliente["cnpj"] == ""
    assert cliente["contatos"] == CLIENTE["contatos"]
    assert cliente["enderecos"] == CLIENTE["enderecos"]
    assert cliente["cadastrado_em"] == cliente["modificado_em"]

    status, got = await call(http, "GET", f"{crm.url}/clientes/1")
    assert (status, got["data"]) == (200, cliente)

    edit = {"tipo_pessoa": "PF", "nome": "João da Silva", "email": "j@x.com"}
    status, updated = await call(http, "PUT", f"{crm.url}/clientes/1", edit)
    assert status == 200
    assert updated["data"]["email"] == "j@x.com"
    assert updated["data"]["telefone"] == "(11) 2533-3532"
    assert updated["data"]["cadastrado_em"] == cliente["cadastrado_em"]

    status, deleted = await call(http, "DELETE", f"{crm.url}/clientes/1")
    assert (status, deleted["status"]) == (200, "success")
    assert isinstance(deleted["data"], str)
    status, gone = await call(http, "GET", f"{crm.url}/clientes/1")
    assert status == 404
    assert envelope.is_missing_record(gone)

    created_ids = [(e.method, e.created_id) for e in crm.ledger if e.created_id]
    assert created_ids == [("POST", "1")]


async def test_ids_count_up_per_resource_and_are_never_reused(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    _, first = await call(http, "POST", f"{crm.url}/clientes", CLIENTE)
    await call(http, "DELETE", f"{crm.url}/clientes/{first['data']['id']}")
    _, second = await call(http, "POST", f"{crm.url}/clientes", CLIENTE)
    _, produto = await call(http, "POST", f"{crm.url}/produtos", PRODUTO)

    assert (first["data"]["id"], second["data"]["id"], produto["data"]["id"]) == ("1", "2", "1")
    assert [r["id"] for r in crm.records("clientes")] == ["2"]


async def test_produto_answers_money_as_4_decimal_strings_and_estoque_as_a_number(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    status, body = await call(http, "POST", f"{crm.url}/produtos", {**PRODUTO, "ativo": 0})

    assert status == 200
    produto = body["data"]
    assert produto["valor_custo"] == "80.0000"
    assert produto["valor_venda"] == "120.0000"
    assert produto["estoque"] == 5
    assert produto["ativo"] == "0"
    assert produto["codigo_interno"] == "OC-1"


async def test_venda_keeps_string_foreign_keys_but_numeric_item_produto_id(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    await call(http, "POST", f"{crm.url}/clientes", CLIENTE)
    await call(http, "POST", f"{crm.url}/produtos", PRODUTO)
    venda = {
        "cliente_id": 1,
        "data": "2025-01-18",
        "situacao_id": SITUACAO,
        "produtos": [{"produto": {"produto_id": "1", "quantidade": "2", "valor_venda": "60"}}],
    }

    status, body = await call(http, "POST", f"{crm.url}/vendas", venda)

    assert status == 200
    data = body["data"]
    assert (data["id"], data["cliente_id"], data["situacao_id"]) == ("1", "1", SITUACAO)
    item = data["produtos"][0]["produto"]
    assert item["produto_id"] == 1
    assert item["valor_venda"] == "60.0000"
    assert data["valor_total"] == "120.0000"


# --- validation versus missing records --------------------------------------------------------


async def test_validation_failure_is_a_404_with_erro_unlike_a_missing_record(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    status, refused = await call(http, "POST", f"{crm.url}/clientes", {"tipo_pessoa": "PF"})
    assert status == 404
    assert refused["code"] == 404
    assert refused["data"]["erro"] == "Not Found"
    assert "nome" in refused["data"]["mensagem"]
    assert envelope.is_validation_error(refused)
    assert not envelope.is_missing_record(refused)

    for method in ("GET", "PUT", "DELETE"):
        status, missing = await call(http, method, f"{crm.url}/clientes/99", CLIENTE)
        assert status == 404
        assert missing == {
            "code": 404,
            "status": "error",
            "data": {"mensagem": "Registro não encontrado"},
        }
        assert envelope.is_missing_record(missing)
        assert not envelope.is_validation_error(missing)
    assert crm.records("clientes") == []


async def test_an_invalid_update_changes_nothing(crm: DevCrm, http: aiohttp.ClientSession) -> None:
    await call(http, "POST", f"{crm.url}/clientes", CLIENTE)

    status, body = await call(http, "PUT", f"{crm.url}/clientes/1", {"tipo_pessoa": "XX"})

    assert status == 404
    assert envelope.is_validation_error(body)
    assert crm.records("clientes")[0]["tipo_pessoa"] == "PF"


@pytest.mark.parametrize(
    ("venda", "complaint"),
    [
        ({"cliente_id": "7", "data": "2025-01-18", "situacao_id": SITUACAO}, "Cliente"),
        ({"cliente_id": "1", "data": "18/01/2025", "situacao_id": SITUACAO}, "data"),
        ({"cliente_id": "1", "data": "2025-01-18", "situacao_id": "1"}, "Situação"),
        (
            {
                "cliente_id": "1",
                "data": "2025-01-18",
                "situacao_id": SITUACAO,
                "produtos": [{"produto": {"produto_id": 9, "quantidade": 1, "valor_venda": 1}}],
            },
            "Produto",
        ),
    ],
)
async def test_venda_needs_an_existing_cliente_situacao_produtos_and_a_valid_date(
    crm: DevCrm, http: aiohttp.ClientSession, venda: dict[str, Any], complaint: str
) -> None:
    await call(http, "POST", f"{crm.url}/clientes", CLIENTE)

    status, body = await call(http, "POST", f"{crm.url}/vendas", venda)

    assert status == 404
    assert envelope.is_validation_error(body)
    assert complaint in body["data"]["mensagem"]
    assert crm.records("vendas") == []


async def test_a_body_that_is_not_json_is_refused_as_validation(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{crm.url}/clientes", data=b"{not json") as response:
        body = await response.json()
    assert response.status == 404
    assert envelope.is_validation_error(body)


# --- lists ------------------------------------------------------------------------------------


async def test_lists_are_paged_20_by_default_at_most_100(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    for n in range(45):
        crm.store.create("clientes", {**CLIENTE, "nome": f"Cliente {n}"})

    _, first = await call(http, "GET", f"{crm.url}/clientes")
    _, last = await call(http, "GET", f"{crm.url}/clientes?pagina=3")
    _, big = await call(http, "GET", f"{crm.url}/clientes?limite=500")

    assert [c["id"] for c in first["data"]] == [str(i) for i in range(1, 21)]
    meta = first["meta"]
    assert meta["total_registros"] == 45
    assert meta["total_da_pagina"] == 20
    assert meta["pagina_atual"] == 1
    assert meta["limite_por_pagina"] == 20
    assert meta["pagina_anterior"] is None
    assert meta["proxima_pagina"] == 2
    assert meta["proxima_url"].endswith("/api/clientes?pagina=2")
    assert len(last["data"]) == 5
    assert last["meta"]["proxima_pagina"] is None
    assert last["meta"]["proxima_url"] is None
    assert last["meta"]["pagina_anterior"] == 2
    assert len(big["data"]) == 45
    assert big["meta"]["limite_por_pagina"] == 100


async def test_list_meta_keys_differ_by_resource_as_documented(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    crm.store.create("clientes", CLIENTE)
    crm.store.create("produtos", PRODUTO)
    crm.store.create("vendas", {"cliente_id": "1", "data": "2025-01-18", "situacao_id": SITUACAO})

    metas = {r: (await call(http, "GET", f"{crm.url}/{r}"))[1]["meta"] for r in RESOURCES}

    for resource in ("clientes", "vendas"):
        assert metas[resource]["total_da_pagina"] == 1
        assert "total_paginas" not in metas[resource]
        assert "total_registros_pagina" not in metas[resource]
    assert metas["produtos"]["total_paginas"] == 1
    assert metas["produtos"]["total_registros_pagina"] == 1
    assert "total_da_pagina" not in metas["produtos"]
    assert all(m["proxima_pagina"] is None and m["proxima_url"] is None for m in metas.values())


async def test_an_empty_list_is_the_string_by_default_or_an_array_when_asked(
    http: aiohttp.ClientSession,
) -> None:
    async with DevCrm(config()) as crm:
        _, quirky = await call(http, "GET", f"{crm.url}/produtos")
    async with DevCrm(config(empty_list_as_string=False)) as crm:
        _, plain = await call(http, "GET", f"{crm.url}/produtos")

    assert quirky["data"] == "Não há dados!"
    assert quirky["meta"]["total_registros"] == 0
    assert plain["data"] == []


async def test_cpf_cnpj_filter_compares_digits_of_either_field(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    crm.store.create("clientes", CLIENTE)
    crm.store.create(
        "clientes", {"tipo_pessoa": "PJ", "nome": "Ótica", "cnpj": "11.222.333/0001-81"}
    )
    crm.store.create("clientes", {"tipo_pessoa": "PF", "nome": "Inativo", "ativo": "0"})

    _, by_cpf = await call(http, "GET", f"{crm.url}/clientes?cpf_cnpj=47718252620")
    _, by_cnpj = await call(http, "GET", f"{crm.url}/clientes?cpf_cnpj=11222333000181")
    _, nobody = await call(http, "GET", f"{crm.url}/clientes?cpf_cnpj=00000000000")
    _, inactive = await call(http, "GET", f"{crm.url}/clientes?situacao=0")

    assert [c["id"] for c in by_cpf["data"]] == ["1"]
    assert [c["id"] for c in by_cnpj["data"]] == ["2"]
    assert nobody["data"] == "Não há dados!"
    assert [c["nome"] for c in inactive["data"]] == ["Inativo"]


async def test_codigo_filter_matches_codigo_interno(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    crm.store.create("produtos", PRODUTO)
    crm.store.create("produtos", {**PRODUTO, "codigo_interno": "OC-2"})

    _, found = await call(http, "GET", f"{crm.url}/produtos?codigo=OC-2")

    assert [p["id"] for p in found["data"]] == ["2"]
    assert found["meta"]["total_registros"] == 1


async def test_paths_with_the_api_prefix_reach_the_same_records(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    status, created = await call(http, "POST", f"{crm.url}/api/clientes", CLIENTE)
    _, got = await call(http, "GET", f"{crm.url}/clientes/{created['data']['id']}")
    _, listed = await call(http, "GET", f"{crm.url}/api/clientes")

    assert status == 200
    assert got["data"]["nome"] == "João da Silva"
    assert len(listed["data"]) == 1


async def test_loose_filters_match_by_substring_when_asked(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    for code in ("OC-1", "OC-10", "OC-11"):
        crm.store.create("produtos", {**PRODUTO, "codigo_interno": code})
    _, exact = await call(http, "GET", f"{crm.url}/produtos?codigo=OC-1")
    crm.set_faults(loose_filters=True)
    _, loose = await call(http, "GET", f"{crm.url}/produtos?codigo=OC-1")

    assert [p["codigo_interno"] for p in exact["data"]] == ["OC-1"]
    assert [p["codigo_interno"] for p in loose["data"]] == ["OC-1", "OC-10", "OC-11"]


# --- GestãoClick's documented shapes ----------------------------------------------------------


async def test_delete_answers_as_documented_per_resource(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    crm.store.create("clientes", CLIENTE)
    crm.store.create("produtos", PRODUTO)
    crm.store.create("vendas", {"cliente_id": "1", "data": "2025-01-18", "situacao_id": SITUACAO})

    async with http.delete(f"{crm.url}/produtos/1") as response:
        produto = (response.status, await response.read())
    _, venda = await call(http, "DELETE", f"{crm.url}/vendas/1")
    _, cliente = await call(http, "DELETE", f"{crm.url}/clientes/1")

    assert produto == (200, b"")
    assert (cliente["status"], type(cliente["data"])) == ("success", str)
    assert (venda["status"], type(venda["data"])) == ("success", str)
    assert all(crm.records(r) == [] for r in RESOURCES)


@pytest.mark.parametrize(
    ("resource", "body", "missing"),
    [
        ("clientes", {"nome": "Só o nome"}, "tipo_pessoa"),
        ("produtos", {"nome": "Óculos", "codigo_interno": "OC-1"}, "valor_custo"),
        ("vendas", {"cliente_id": "1", "data": "2025-01-19"}, "situacao_id"),
    ],
)
async def test_put_requires_the_fields_post_requires(
    crm: DevCrm, http: aiohttp.ClientSession, resource: str, body: dict[str, Any], missing: str
) -> None:
    crm.store.create("clientes", CLIENTE)
    crm.store.create("produtos", PRODUTO)
    crm.store.create("vendas", {"cliente_id": "1", "data": "2025-01-18", "situacao_id": SITUACAO})
    before = crm.records(resource)

    status, refused = await call(http, "PUT", f"{crm.url}/{resource}/1", body)

    assert status == 404
    assert envelope.is_validation_error(refused)
    assert missing in refused["data"]["mensagem"]
    assert crm.records(resource) == before


async def test_produto_prices_change_through_valores_only(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    _, created = await call(http, "POST", f"{crm.url}/produtos", {**PRODUTO, "valor_custo": 80})
    produto = created["data"]
    assert produto["valor_venda"] == "120.0000"
    [valor] = produto["valores"]
    assert valor["valor_venda"] == "120.0000"
    assert set(valor) >= {"tipo_id", "nome_tipo"}
    assert (produto["variacoes"], produto["fiscal"]) == ([], {})

    required = {k: PRODUTO[k] for k in ("nome", "codigo_interno", "valor_custo")}
    _, kept = await call(http, "PUT", f"{crm.url}/produtos/1", {**required, "valor_venda": "99"})
    new_price = [{"tipo_id": valor["tipo_id"], "valor_venda": "130.1234"}]
    _, changed = await call(
        http, "PUT", f"{crm.url}/produtos/1", {**required, "valores": new_price}
    )
    status, wrapped = await call(
        http, "PUT", f"{crm.url}/produtos/1", {**required, "valores": [{"valor": new_price[0]}]}
    )

    assert kept["data"]["valor_venda"] == "120.0000"
    assert changed["data"]["valor_venda"] == "130.1234"
    assert changed["data"]["valores"][0]["valor_venda"] == "130.1234"
    assert changed["data"]["valor_custo"] == "80.0000"
    assert status == 404 and envelope.is_validation_error(wrapped)


async def test_produto_keeps_variacoes_and_fiscal(crm: DevCrm, http: aiohttp.ClientSession) -> None:
    body = {
        **PRODUTO,
        "codigo_barra": "7891234567895",
        "variacoes": [{"variacao": {"nome": "Azul", "estoque": "2"}}],
        "fiscal": {"ncm": "9004.10.00"},
    }
    _, created = await call(http, "POST", f"{crm.url}/produtos", body)
    status, refused = await call(
        http, "POST", f"{crm.url}/produtos", {**PRODUTO, "variacoes": [{"nome": "Azul"}]}
    )

    assert created["data"]["variacoes"] == body["variacoes"]
    assert created["data"]["fiscal"] == {"ncm": "9004.10.00"}
    assert created["data"]["codigo_barra"] == "7891234567895"
    assert status == 404 and "variacao" in refused["data"]["mensagem"]


async def test_vendas_are_numbered_by_the_account_after_its_own(
    http: aiohttp.ClientSession,
) -> None:
    async with DevCrm(config(existing_vendas=5)) as crm:
        own = crm.records("vendas")
        _, cliente = await call(http, "POST", f"{crm.url}/clientes", CLIENTE)
        venda = {"cliente_id": cliente["data"]["id"], "data": "2025-01-18", "situacao_id": SITUACAO}
        _, numbered = await call(http, "POST", f"{crm.url}/vendas", venda)
        _, named = await call(http, "POST", f"{crm.url}/vendas", {**venda, "codigo": "crmd-3"})
        _, by_codigo = await call(http, "GET", f"{crm.url}/vendas?codigo=3")
        crm.reset()
        after_reset = crm.records("vendas")

    assert [v["codigo"] for v in own] == ["1", "2", "3", "4", "5"]
    assert {v["nome_cliente"] for v in own} == {"Cliente de outra origem"}
    assert numbered["data"]["codigo"] == "6"
    assert named["data"]["codigo"] == "crmd-3"
    # The account's own venda 3, not ours: a lookup by codigo must check what comes back.
    assert [v["codigo"] for v in by_codigo["data"]] == ["3"]
    assert len(after_reset) == 5


async def test_the_account_lists_its_situacoes_and_lojas(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    _, situacoes = await call(http, "GET", f"{crm.url}/situacoes_vendas")
    _, lojas = await call(http, "GET", f"{crm.url}/api/lojas")
    _, one = await call(http, "GET", f"{crm.url}/situacoes_vendas/{SITUACAO}")
    status, _ = await call(http, "POST", f"{crm.url}/lojas", {"nome": "Nova"})

    assert [(s["id"], s["nome"], s["tipo_lancamento"]) for s in situacoes["data"]] == list(
        SITUACOES
    )
    assert "1" not in {s["id"] for s in situacoes["data"]}
    assert [(loja["id"], loja["nome"]) for loja in lojas["data"]] == list(LOJAS)
    assert one["data"]["id"] == SITUACAO
    assert status == 405


async def test_loja_id_is_kept_and_lists_are_per_loja_defaulting_to_the_matriz(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    _, in_matriz = await call(http, "POST", f"{crm.url}/clientes", CLIENTE)
    _, in_filial = await call(http, "POST", f"{crm.url}/clientes", {**CLIENTE, "loja_id": FILIAL})
    status, refused = await call(http, "POST", f"{crm.url}/clientes", {**CLIENTE, "loja_id": "9"})
    key = "cpf_cnpj=47718252620"
    _, matriz_list = await call(http, "GET", f"{crm.url}/clientes?{key}")
    _, filial_list = await call(http, "GET", f"{crm.url}/clientes?{key}&loja_id={FILIAL}")

    assert (in_matriz["data"]["loja_id"], in_filial["data"]["loja_id"]) == (MATRIZ, FILIAL)
    assert status == 404 and "Loja" in refused["data"]["mensagem"]
    assert [c["id"] for c in matriz_list["data"]] == [in_matriz["data"]["id"]]
    assert [c["id"] for c in filial_list["data"]] == [in_filial["data"]["id"]]


# --- rate limits ------------------------------------------------------------------------------


async def test_requests_over_the_limit_get_429_and_do_not_count(
    http: aiohttp.ClientSession,
) -> None:
    async with DevCrm(config(limits=((3, 1.0),))) as crm:
        answers = await asyncio.gather(
            *(call(http, "GET", f"{crm.url}/clientes") for _ in range(8))
        )
        await asyncio.sleep(1.05)
        after, _ = await call(http, "GET", f"{crm.url}/clientes")

        statuses = sorted(status for status, _ in answers)
        assert statuses == [200] * 3 + [429] * 5
        assert max_in_window(crm.ledger, 1.0, all_requests=True) == 8
        refused = next(body for status, body in answers if status == 429)
        assert refused == {
            "code": 429,
            "status": "error",
            "data": {"mensagem": "O limite de requisicoes foi atingido"},
        }
        assert after == 200
        assert max_in_window(crm.ledger, 1.0) == 3


async def test_stacked_sliding_windows_are_never_exceeded(http: aiohttp.ClientSession) -> None:
    limits = ((3, 0.3), (6, 1.0))
    async with DevCrm(config(limits=limits)) as crm:
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            await call(http, "GET", f"{crm.url}/produtos")
            await asyncio.sleep(0.02)

        ledger = crm.ledger
        assert any(e.status == 429 for e in ledger)
        assert max_in_window(ledger, 0.3) <= 3
        assert max_in_window(ledger, 1.0) <= 6
        assert all(e.counted == (e.status == 200) for e in ledger)


async def test_retry_after_is_sent_only_when_configured(http: aiohttp.ClientSession) -> None:
    for retry_after, expected in ((None, None), (1.5, "2")):
        async with DevCrm(config(limits=((1, 60.0),), retry_after=retry_after)) as crm:
            await call(http, "GET", f"{crm.url}/clientes")
            async with http.get(f"{crm.url}/clientes") as response:
                assert response.status == 429
                assert response.headers.get("Retry-After") == expected


def test_max_in_window_counts_arrivals_less_than_the_window_apart() -> None:
    entries = [entry(0.0), entry(0.5), entry(0.99), entry(1.0), entry(1.2, 429, counted=False)]

    assert max_in_window(entries, 1.0) == 3
    assert max_in_window(entries, 0.5) == 2
    assert max_in_window(entries, 1.0, all_requests=True) == 4
    assert max_in_window([], 1.0) == 0


# --- faults -----------------------------------------------------------------------------------


async def test_latency_delays_every_answer(crm: DevCrm, http: aiohttp.ClientSession) -> None:
    crm.set_faults(latency=0.2)
    started = time.monotonic()
    async with aiohttp.ClientSession() as anonymous:
        status, _ = await call(anonymous, "GET", f"{crm.url}/clientes")
    assert status == 401
    assert time.monotonic() - started >= 0.2


async def test_error_rate_answers_server_errors(crm: DevCrm, http: aiohttp.ClientSession) -> None:
    crm.faults.error_rate = 1.0
    statuses = {(await call(http, "GET", f"{crm.url}/clientes"))[0] for _ in range(12)}

    assert statuses <= {500, 502, 503}
    assert len(statuses) > 1
    assert all(e.fault == "error" and e.counted for e in crm.ledger)


async def test_outage_answers_503_until_cleared_or_over(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    crm.set_faults(outage=True)
    during, body = await call(http, "GET", f"{crm.url}/clientes")
    crm.set_faults(outage=False)
    cleared, _ = await call(http, "GET", f"{crm.url}/clientes")
    crm.set_faults(outage_seconds=0.5)
    timed, _ = await call(http, "GET", f"{crm.url}/clientes")
    await asyncio.sleep(0.55)
    over, _ = await call(http, "GET", f"{crm.url}/clientes")

    assert (during, cleared, timed, over) == (503, 200, 503, 200)
    assert body["code"] == 503
    assert [e.fault for e in crm.ledger] == ["outage", None, "outage", None]


async def test_dropped_requests_close_the_connection_without_an_answer(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    crm.set_faults(drop_rate=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(http, "POST", f"{crm.url}/clientes", CLIENTE)
    crm.set_faults(drop_rate=0.0)
    status, _ = await call(http, "GET", f"{crm.url}/clientes")

    assert status == 200
    assert crm.records("clientes") == []
    first = crm.ledger[0]
    assert (first.status, first.fault, first.counted) == (None, "drop", False)


async def test_a_burst_answers_the_next_requests_429(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    crm.set_faults(burst_429=2)
    statuses = [(await call(http, "GET", f"{crm.url}/clientes"))[0] for _ in range(3)]

    assert statuses == [429, 429, 200]
    assert crm.faults.burst_429 == 0


async def test_auth_fault_refuses_the_right_tokens(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    crm.set_faults(auth_fail=True)
    status, body = await call(http, "GET", f"{crm.url}/clientes")

    assert status == 401
    assert body["data"]["mensagem"]


async def test_faults_from_the_config_apply_from_the_start(http: aiohttp.ClientSession) -> None:
    async with DevCrm(config(error_rate=1.0)) as crm:
        status, _ = await call(http, "GET", f"{crm.url}/clientes")
    assert status in (500, 502, 503)


# --- control endpoints ------------------------------------------------------------------------


async def test_control_endpoints_need_no_auth_and_stay_out_of_the_ledger(
    crm: DevCrm, http: aiohttp.ClientSession
) -> None:
    assert not crm.url.endswith(":0")
    await call(http, "POST", f"{crm.url}/clientes", CLIENTE)
    await call(http, "GET", f"{crm.url}/clientes/1")
    async with aiohttp.ClientSession() as dev:
        status, health = await call(dev, "GET", f"{crm.url}/_dev/health")
        assert (status, health["status"]) == (200, "ok")

        _, ledger = await call(dev, "GET", f"{crm.url}/_dev/ledger")
        _, tail = await call(dev, "GET", f"{crm.url}/_dev/ledger?since=1")
        assert [(e["method"], e["status"], e["created_id"]) for e in ledger] == [
            ("POST", 200, "1"),
            ("GET", 200, None),
        ]
        assert [e["index"] for e in tail] == [1]
        assert {"wall", "monotonic", "path", "query", "counted"} <= set(ledger[0])

        _, records = await call(dev, "GET", f"{crm.url}/_dev/records/clientes")
        assert [r["nome"] for r in records] == ["João da Silva"]
        status, _ = await call(dev, "GET", f"{crm.url}/_dev/records/atividades")
        assert status == 404

        status, faults = await call(dev, "POST", f"{crm.url}/_dev/faults", {"latency": 0.01})
        assert (status, faults["latency"], faults["error_rate"]) == (200, 0.01, 0.0)
        status, problem = await call(dev, "POST", f"{crm.url}/_dev/faults", {"error_rate": 2})
        assert status == 400
        assert problem["problems"]
        status, _ = await call(dev, "POST", f"{crm.url}/_dev/faults", {"typo": 1})
        assert status == 400

        status, _ = await call(dev, "POST", f"{crm.url}/_dev/reset")
        assert status == 200
    assert len(crm.ledger) == 0
    assert crm.records("clientes") == []
    assert crm.faults.latency == 0.0
    _, again = await call(http, "POST", f"{crm.url}/clientes", CLIENTE)
    assert again["data"]["id"] == "1"


async def test_reset_clears_the_rate_limit_counters(http: aiohttp.ClientSession) -> None:
    async with DevCrm(config(limits=((1, 60.0),))) as crm:
        first, _ = await call(http, "GET", f"{crm.url}/clientes")
        crm.reset()
        second, _ = await call(http, "GET", f"{crm.url}/clientes")
    assert (first, second) == (200, 200)


# --- command line -----------------------------------------------------------------------------


def test_limit_flags_parse_and_reject_nonsense() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)

    args = parser.parse_args(["--limit", "3/1", "--limit", "100/60", "--error-rate", "0.1"])

    assert args.limit == [(3, 1.0), (100, 60.0)]
    assert args.error_rate == 0.1
    defaults = parser.parse_args([])
    assert (defaults.port, defaults.empty_list_as_string, defaults.existing_vendas) == (
        8800,
        True,
        0,
    )
    assert parser.parse_args(["--empty-list-as-array"]).empty_list_as_string is False
    for bad in (["--limit", "3"], ["--limit", "0/1"], ["--drop-rate", "1.5"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_the_command_serves_until_sigterm() -> None:
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crmd", "dev", "crm", "--port", str(port), "--limit", "50/1",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=10)).decode()
        assert f"http://127.0.0.1:{port}" in line

        headers = {
            "access-token": "dev-access-token",
            "secret-access-token": "dev-secret-access-token",
        }
        async with aiohttp.ClientSession(headers=headers) as session:
            status, body = await call(session, "GET", f"http://127.0.0.1:{port}/api/clientes")
        assert (status, body["data"]) == (200, "Não há dados!")

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_records_are_kept_across_restarts_in_the_state_file(tmp_path: Path) -> None:
    state = tmp_path / "devcrm.json"
    config = DevCrmConfig(limits=(), state_file=str(state))
    async with DevCrm(config) as crm, aiohttp.ClientSession() as http:
        headers = {
            "access-token": config.access_token,
            "secret-access-token": config.secret_access_token,
        }
        body = {"tipo_pessoa": "PF", "nome": "Maria Souza"}
        async with http.post(f"{crm.url}/clientes", json=body, headers=headers) as resp:
            assert resp.status == 200
    assert state.exists()
    async with DevCrm(config) as again:
        assert [c["nome"] for c in again.records("clientes")] == ["Maria Souza"]
        assert again.store.create("clientes", {"tipo_pessoa": "PF", "nome": "B"})["id"] == "2"
