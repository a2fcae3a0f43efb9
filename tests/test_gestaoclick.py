"""The GestãoClick provider against the faithful development CRM, one section per issue item.

Provider-level tests call the provider over HTTP on 127.0.0.1; the engine-level ones run
`crmd run --once` against a real PostgreSQL and look at the CRM's records and the wire.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import ValidationError

from crmd.config import ConfigError, CrmAccountSettings, Settings, load_settings
from crmd.crm.errors import CrmError, ErrorKind
from crmd.crm.limiter import RateLimiter
from crmd.crm.providers.gestaoclick import KNOWN_BASE_URLS, GestaoClick
from crmd.crm.providers.gestaoclick.provider import MAX_LOOKUP_PAGES
from crmd.dev.devcrm.server import DevCrm, DevCrmConfig
from crmd.dev.devcrm.store import LOJAS, SITUACOES
from tests.test_engine import TOKENS, drain, make_settings, mapped, requests, seed_small

SITUACAO, CANCELADA = SITUACOES[1][0], SITUACOES[2][0]
MATRIZ, FILIAL = LOJAS[0][0], LOJAS[1][0]
CLIENTE_ROW: dict[str, Any] = {
    "id": 1,
    "loja_id": 1,
    "tipo_pessoa": "PF",
    "nome": "Maria Souza",
    "cpf": "529.982.247-25",
    "email": "maria@example.com",
    "cidade": "Recife",
    "uf": "PE",
}
PRODUTO_ROW: dict[str, Any] = {
    "id": 1,
    "loja_id": 1,
    "codigo_interno": "P-001",
    "nome": "Café 500g",
    "valor_custo": Decimal("10.5000"),
    "valor_venda": Decimal("18.9875"),
    "estoque": Decimal("40.000"),
    "ativo": True,
}


def dev_config(**overrides: Any) -> DevCrmConfig:
    tokens = {
        "access_token": TOKENS["access_token"],
        "secret_access_token": TOKENS["secret_access_token"],
    }
    return DevCrmConfig(**{**tokens, "limits": (), **overrides})


@pytest.fixture
async def crm() -> AsyncIterator[DevCrm]:
    async with DevCrm(dev_config()) as server:
        yield server


def account(crm: DevCrm, **overrides: Any) -> CrmAccountSettings:
    values: dict[str, Any] = {
        "base_url": crm.url,
        **TOKENS,
        "limits": [{"requests": 1000, "per_seconds": 1}],
        "venda_situacao_id": SITUACAO,
        **overrides,
    }
    return CrmAccountSettings(**values)


@contextlib.asynccontextmanager
async def provider_for(
    crm: DevCrm, name: str = "default", **overrides: Any
) -> AsyncIterator[GestaoClick]:
    settings = account(crm, **overrides)
    provider = GestaoClick(name, settings, RateLimiter(settings.limits))
    try:
        yield provider
    finally:
        await provider.transport.close()


@pytest.fixture
async def gc(crm: DevCrm) -> AsyncIterator[GestaoClick]:
    async with provider_for(crm) as provider:
        yield provider


def queries(crm: DevCrm, path: str) -> list[str]:
    return [e.query for e in crm.ledger if e.method == "GET" and e.path == path]


async def send_all(gc: GestaoClick) -> tuple[str, str, str]:
    """A cliente, a produto and a venda of both, created through the provider."""
    cliente = await gc.create("clientes", gc.build("clientes", CLIENTE_ROW, {}).payload)
    produto = await gc.create("produtos", gc.build("produtos", PRODUTO_ROW, {}).payload)
    resolved = {("clientes", 1): cliente, ("produtos", 1): produto}
    venda = await gc.create("vendas", gc.build("vendas", venda_row(), resolved).payload)
    return cliente, produto, venda


def venda_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": 1,
        "loja_id": 1,
        "cliente_id": 1,
        "data": "2026-11-20",
        "observacoes": None,
        "valor_total": Decimal("37.98"),
        "itens": [{"produto_id": 1, "quantidade": 2, "valor_venda": 18.99}],
    }
    return {**row, **overrides}


# --- round trips: POST, lookup and PUT of each entity in the documented shapes -------------------


async def test_cliente_round_trips_with_wrapped_enderecos_and_string_flags(
    crm: DevCrm, gc: GestaoClick
) -> None:
    prepared = gc.build("clientes", CLIENTE_ROW, {})
    created = await gc.create("clientes", prepared.payload)
    found = await gc.find("clientes", str(prepared.natural_key), prepared.scope)
    edited = gc.build("clientes", {**CLIENTE_ROW, "nome": "Maria S. Lima"}, {})
    await gc.update("clientes", created, edited.payload)

    assert prepared.natural_key == "52998224725"
    assert found == created
    [record] = crm.records("clientes")
    assert record["nome"] == "Maria S. Lima"
    assert record["ativo"] == "1"
    assert record["enderecos"] == [
        {
            "endereco": {
                "cep": "",
                "logradouro": "",
                "numero": "",
                "complemento": "",
                "bairro": "",
                "nome_cidade": "Recife",
                "estado": "PE",
            }
        }
    ]
    assert queries(crm, "/clientes") == ["cpf_cnpj=52998224725"]


async def test_produto_round_trips_with_valores_and_4_decimal_money(
    crm: DevCrm, gc: GestaoClick
) -> None:
    prepared = gc.build("produtos", PRODUTO_ROW, {})
    created = await gc.create("produtos", prepared.payload)
    found = await gc.find("produtos", "P-001", prepared.scope)
    changed = gc.build("produtos", {**PRODUTO_ROW, "valor_venda": Decimal("21.1234")}, {})
    await gc.update("produtos", created, changed.payload)

    assert prepared.payload["valores"] == [{"valor_venda": "18.9875"}]
    assert prepared.payload["estoque"] == "40"
    assert found == created
    [record] = crm.records("produtos")
    assert (record["valor_custo"], record["valor_venda"]) == ("10.5000", "21.1234")
    assert record["valores"][0]["valor_venda"] == "21.1234"
    assert record["estoque"] == 40
    assert queries(crm, "/produtos") == ["codigo=P-001"]


async def test_venda_round_trips_with_wrapped_items_and_our_codigo(
    crm: DevCrm, gc: GestaoClick
) -> None:
    cliente, produto, venda = await send_all(gc)
    resolved = {("clientes", 1): cliente, ("produtos", 1): produto}
    prepared = gc.build("vendas", venda_row(observacoes="entregar à tarde"), resolved)
    found = await gc.find("vendas", str(prepared.natural_key), prepared.scope)
    await gc.update("vendas", venda, prepared.payload)

    assert found == venda
    [record] = crm.records("vendas")
    assert record["codigo"] == "crmd-1"
    assert (record["cliente_id"], record["situacao_id"]) == (cliente, SITUACAO)
    assert record["observacoes"] == "entregar à tarde"
    item = record["produtos"][0]["produto"]
    assert (item["produto_id"], item["valor_venda"]) == (int(produto), "18.9900")
    assert "valor_total" not in prepared.payload
    assert queries(crm, "/vendas") == ["codigo=crmd-1"]


# --- 1: a venda is never linked to a record crmd cannot prove is its own -----------------------


async def test_a_venda_is_never_linked_to_the_accounts_own_venda_of_the_same_number(
    conn: asyncpg.Connection, db_dsn: str
) -> None:
    async with DevCrm(dev_config(existing_vendas=5)) as crm:
        own = {v["id"]: v for v in crm.records("vendas")}
        settings = make_settings(db_dsn, crm)
        await seed_small(conn)  # ERP venda 1, while the account has its own venda number 1
        await drain(settings)

        vendas = crm.records("vendas")
        ours = [v for v in vendas if v["id"] not in own]
        assert [v["codigo"] for v in ours] == ["crmd-1"]
        assert await mapped(conn, "vendas", 1) == ours[0]["id"]
        assert [v for v in vendas if v["id"] in own] == list(own.values())
        assert not [r for r in requests(crm, "PUT") if r.startswith("PUT /vendas")]
        assert queries(crm, "/vendas") == ["codigo=crmd-1"]


async def test_a_venda_key_is_never_one_of_the_accounts_own_numbers() -> None:
    async with (
        DevCrm(dev_config(existing_vendas=12, loose_filters=True)) as crm,
        provider_for(crm) as gc,
    ):
        key = gc.build("vendas", venda_row(), {("clientes", 1): "1", ("produtos", 1): "1"})
        # Even a loose filter on our key finds none of the account's vendas 1..12 ...
        assert key.natural_key == "crmd-1"
        assert await gc.find("vendas", "crmd-1") is None
        # ... and a bare number, the account's own numbering, is never looked up at all.
        assert await gc.find("vendas", "1") is None
        assert queries(crm, "/vendas") == ["codigo=crmd-1"]


async def test_without_a_codigo_prefix_vendas_carry_no_codigo_and_are_never_looked_up(
    conn: asyncpg.Connection, db_dsn: str
) -> None:
    async with DevCrm(dev_config(existing_vendas=5)) as crm:
        settings = make_settings(db_dsn, crm, crm={"venda_codigo_prefix": ""})
        await seed_small(conn)
        await drain(settings)
        ours = [v for v in crm.records("vendas") if v["nome_cliente"] == "Maria Souza"]
        assert [v["codigo"] for v in ours] == ["6"]  # the account's next number
        assert queries(crm, "/vendas") == []


@pytest.mark.parametrize("prefix", ["123", "crmd 1", "x" * 21])
def test_a_codigo_prefix_that_could_collide_is_refused_naming_the_key(prefix: str) -> None:
    with pytest.raises(ValidationError, match="venda_codigo_prefix"):
        CrmAccountSettings(venda_codigo_prefix=prefix)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[crm.situacoes]\nconcretizada = "Concretizada"', "crm.situacoes.concretizada"),
        ('[crm]\nvenda_situacao_id = "um"', "crm.venda_situacao_id"),
        ('[crm.lojas_crm]\n1 = "matriz"', "crm.lojas_crm"),
        ('[crm]\nproduto_valor_tipo_id = "varejo"', "crm.produto_valor_tipo_id"),
        ('[crm.lojas.2]\nvenda_codigo_prefix = "2024"', "crm.lojas.2.venda_codigo_prefix"),
    ],
)
def test_ids_in_the_config_must_be_gestaoclick_ids_and_errors_name_the_key(
    tmp_path: Path, toml: str, key: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml + "\n", encoding="utf-8")

    with pytest.raises(ConfigError) as raised:
        load_settings(str(path))

    assert [k for k, _ in raised.value.problems] == [key]


# --- 2: lookups verify every candidate and follow the pages ------------------------------------


async def test_a_loose_filter_match_is_never_linked(gc: GestaoClick, crm: DevCrm) -> None:
    crm.set_faults(loose_filters=True)
    crm.store.create("clientes", {"tipo_pessoa": "PF", "nome": "Outro", "cpf": "152998224725"})
    crm.store.create("produtos", {"nome": "Outro", "codigo_interno": "P-0011", "valor_custo": 1})

    assert await gc.find("clientes", "52998224725") is None
    assert await gc.find("produtos", "P-001") is None
    assert await gc.find("produtos", "p-0011") is None  # codigo_interno compared exactly


async def test_cpf_and_cnpj_are_compared_as_digits_whatever_their_punctuation(
    gc: GestaoClick, crm: DevCrm
) -> None:
    pj = crm.store.create(
        "clientes", {"tipo_pessoa": "PJ", "nome": "Padaria", "cnpj": "11.222.333/0001-81"}
    )
    pf = crm.store.create("clientes", {"tipo_pessoa": "PF", "nome": "Maria", "cpf": "52998224725"})

    assert await gc.find("clientes", "11222333000181") == pj["id"]
    assert await gc.find("clientes", "529.982.247-25") == pf["id"]


async def test_a_lookup_follows_proxima_pagina_to_the_verified_candidate(
    gc: GestaoClick, crm: DevCrm
) -> None:
    crm.set_faults(loose_filters=True)
    for n in range(45):
        crm.store.create(
            "produtos", {"nome": "Parecido", "codigo_interno": f"P-001-{n}", "valor_custo": 1}
        )
    ours = crm.store.create(
        "produtos", {"nome": "Café", "codigo_interno": "P-001", "valor_custo": 1}
    )

    assert await gc.find("produtos", "P-001") == ours["id"]
    assert queries(crm, "/produtos") == [
        "codigo=P-001",
        "codigo=P-001&pagina=2",
        "codigo=P-001&pagina=3",
    ]


async def test_a_lookup_that_never_ends_gives_up_without_linking(
    gc: GestaoClick, crm: DevCrm
) -> None:
    crm.set_faults(loose_filters=True)
    for n in range(20 * MAX_LOOKUP_PAGES + 1):
        crm.store.create(
            "produtos", {"nome": "X", "codigo_interno": f"P-001-{n}", "valor_custo": 1}
        )

    with pytest.raises(CrmError) as raised:
        await gc.find("produtos", "P-001")

    assert raised.value.kind is ErrorKind.PERMANENT
    assert len(queries(crm, "/produtos")) == MAX_LOOKUP_PAGES


async def test_an_empty_answer_is_no_match(gc: GestaoClick, crm: DevCrm) -> None:
    assert await gc.find("clientes", "52998224725") is None  # "data": "Não há dados!"
    crm.set_faults(empty_list_as_string=False)
    assert await gc.find("clientes", "52998224725") is None  # "data": []


# --- 3: situação from the config's mapping, validated against the account ----------------------


async def test_the_situacao_comes_from_the_mapping_or_the_default_never_a_guess(
    crm: DevCrm,
) -> None:
    resolved = {("clientes", 1): "1", ("produtos", 1): "1"}
    async with provider_for(crm, situacoes={"cancelada": CANCELADA}) as gc:
        mapped_one = gc.build("vendas", venda_row(situacao="cancelada"), resolved)
        default = gc.build("vendas", venda_row(), resolved)
        direct = gc.build("vendas", venda_row(situacao_id=SITUACAO), resolved)
        with pytest.raises(CrmError, match=r"\[crm\.situacoes\]") as unmapped:
            gc.build("vendas", venda_row(situacao="em espera"), resolved)
    async with provider_for(crm, venda_situacao_id="") as gc:
        with pytest.raises(CrmError, match="venda_situacao_id") as no_default:
            gc.build("vendas", venda_row(), resolved)

    assert mapped_one.payload["situacao_id"] == CANCELADA
    assert default.payload["situacao_id"] == SITUACAO
    assert direct.payload["situacao_id"] == SITUACAO
    assert "em espera" in unmapped.value.message
    assert unmapped.value.kind is no_default.value.kind is ErrorKind.PERMANENT
    assert CrmAccountSettings().venda_situacao_id == ""


async def test_situacoes_lists_the_accounts_own_with_their_tipo_lancamento(
    gc: GestaoClick,
) -> None:
    listed = await gc.situacoes()

    assert [(s.id, s.nome, s.tipo_lancamento) for s in listed] == list(SITUACOES)


async def test_check_account_names_every_id_the_account_does_not_have(crm: DevCrm) -> None:
    async with provider_for(
        crm,
        venda_situacao_id="1",
        situacoes={"concretizada": SITUACAO, "devolvida": "99"},
        lojas_crm={1: MATRIZ, 2: "55"},
    ) as gc:
        problems = await gc.check_account()
    async with provider_for(crm, situacoes={"concretizada": SITUACAO}) as gc:
        clean = await gc.check_account()
    async with provider_for(crm, "loja-2", venda_situacao_id="") as gc:
        per_loja = await gc.check_account()

    assert len(problems) == 3
    assert problems[0].startswith("[crm] venda_situacao_id = '1': a conta não tem essa situação")
    assert problems[1].startswith("[crm.situacoes] 'devolvida' = '99'")
    assert problems[2].startswith("[crm.lojas_crm] 2 = '55': a empresa não tem essa loja")
    assert all(f"{SITUACAO} Concretizada" in p for p in problems[:2])
    assert clean == []
    assert per_loja[0].startswith("[crm.lojas.2] venda_situacao_id está vazio")


async def test_check_account_checks_the_cancel_situacao_too(crm: DevCrm) -> None:
    async with provider_for(crm, venda_situacao_cancelada_id="77") as gc:
        problems = await gc.check_account()
    async with provider_for(crm, venda_situacao_cancelada_id=CANCELADA) as gc:
        clean = await gc.check_account()

    assert [p.split(":")[0] for p in problems] == ["[crm] venda_situacao_cancelada_id = '77'"]
    assert clean == []


# --- 4: loja_id mapped, sent on bodies and lookups ---------------------------------------------


async def test_loja_id_goes_on_every_body_and_lookup(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    in_matriz = crm.store.create(
        "clientes", {"tipo_pessoa": "PF", "nome": "Maria (matriz)", "cpf": "52998224725"}
    )
    in_filial = crm.store.create(
        "clientes",
        {"tipo_pessoa": "PJ", "nome": "Padaria", "cnpj": "11222333000181", "loja_id": FILIAL},
    )
    settings = make_settings(db_dsn, crm, crm={"lojas_crm": {1: FILIAL}})
    await seed_small(conn)
    await drain(settings)

    records = crm.records("clientes") + crm.records("produtos") + crm.records("vendas")
    assert {r["loja_id"] for r in records if r["id"] != in_matriz["id"]} == {FILIAL}
    assert await mapped(conn, "clientes", 2) == in_filial["id"]  # found in its loja
    assert await mapped(conn, "clientes", 1) != in_matriz["id"]  # another loja's: not linked
    lookups = [e.query for e in crm.ledger if e.method == "GET"]
    assert lookups and all(f"loja_id={FILIAL}" in q for q in lookups)


async def test_an_erp_loja_missing_from_the_mapping_fails_naming_the_key(crm: DevCrm) -> None:
    async with provider_for(crm, lojas_crm={1: FILIAL}) as gc:
        with pytest.raises(CrmError, match=r"loja 3 .*\[crm\.lojas_crm\]") as raised:
            gc.build("clientes", {**CLIENTE_ROW, "loja_id": 3}, {})
    async with provider_for(crm) as gc:
        unmapped = gc.build("clientes", {**CLIENTE_ROW, "loja_id": 3}, {})

    assert raised.value.kind is ErrorKind.PERMANENT
    assert "loja_id" not in unmapped.payload and unmapped.scope == {}


async def test_lojas_lists_the_companys_lojas(gc: GestaoClick) -> None:
    assert [(loja.id, loja.nome) for loja in await gc.lojas()] == list(LOJAS)


def test_a_loja_with_an_account_of_its_own_keeps_working_beside_the_mapping() -> None:
    settings = Settings(
        database={"dsn": "postgresql://crmd@localhost/erp"},
        crm={
            "lojas_crm": {1: "7201", 2: "7202"},
            "lojas": {3: {"base_url": "https://api.beteltecnologia.com", "lojas_crm": {3: "9"}}},
        },
    )

    accounts = settings.crm.accounts()
    assert set(accounts) == {"default", "loja-3"}
    assert accounts["default"].lojas_crm == {1: "7201", 2: "7202"}
    assert accounts["loja-3"].lojas_crm == {3: "9"}
    assert settings.crm.account_name(3) == "loja-3"


# --- 5: prices through valores, money with 4 decimals ------------------------------------------


async def test_a_price_change_reaches_the_crm_through_valores_with_4_decimals(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    settings = make_settings(db_dsn, crm, crm={"produto_valor_tipo_id": "90858"})
    await seed_small(conn)
    await drain(settings)
    await conn.execute(
        "UPDATE produtos SET valor_venda = 19.9875, valor_custo = 11.1234 WHERE id = 1"
    )
    await drain(settings)

    produto = next(p for p in crm.records("produtos") if p["codigo_interno"] == "P-001")
    assert (produto["valor_venda"], produto["valor_custo"]) == ("19.9875", "11.1234")
    assert produto["valores"] == [
        {"tipo_id": "90858", "nome_tipo": "Varejo", "valor_venda": "19.9875"}
    ]


# --- 6: emptied fields are cleared; a PUT carries every required field -------------------------


async def test_a_field_emptied_in_the_erp_is_cleared_in_the_crm(
    conn: asyncpg.Connection, crm: DevCrm, settings: Settings
) -> None:
    await seed_small(conn)
    await drain(settings)
    ext = await mapped(conn, "clientes", 1)
    await conn.execute("UPDATE clientes SET email = NULL, cidade = NULL WHERE id = 1")
    await drain(settings)

    [maria] = [c for c in crm.records("clientes") if c["id"] == ext]
    assert maria["email"] == ""
    assert maria["enderecos"][0]["endereco"]["nome_cidade"] == ""
    assert maria["enderecos"][0]["endereco"]["estado"] == "PE"
    assert requests(crm)[-1] == f"PUT /clientes/{ext}"


@pytest.fixture
def settings(db_dsn: str, crm: DevCrm) -> Settings:
    return make_settings(db_dsn, crm)


async def test_every_payload_carries_the_required_fields_and_empty_ones_as_empty_strings(
    gc: GestaoClick,
) -> None:
    bare_cliente = gc.build("clientes", {"id": 1, "loja_id": 1, "nome": "Zé"}, {}).payload
    bare_produto = gc.build(
        "produtos", {"id": 1, "loja_id": 1, "codigo_interno": "Z", "nome": "Z"}, {}
    ).payload

    assert bare_cliente == {
        "tipo_pessoa": "PF",
        "nome": "Zé",
        "razao_social": "",
        "cpf": "",
        "cnpj": "",
        "email": "",
        "telefone": "",
        "celular": "",
        "data_nascimento": "",
        "ativo": "1",
    }
    assert {k: bare_produto[k] for k in ("nome", "codigo_interno", "valor_custo", "descricao")} == {
        "nome": "Z",
        "codigo_interno": "Z",
        "valor_custo": "0.0000",
        "descricao": "",
    }


# --- 7: an empty 2xx body is success -----------------------------------------------------------


async def test_deleting_a_produto_succeeds_on_the_empty_answer(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str, gc: GestaoClick
) -> None:
    settings = make_settings(db_dsn, crm, sync={"on_delete": "delete"})
    await seed_small(conn)
    await drain(settings)
    ext = await mapped(conn, "produtos", 2)
    await conn.execute("DELETE FROM venda_itens WHERE produto_id = 2")
    await conn.execute("DELETE FROM produtos WHERE id = 2")
    await drain(settings)

    log = await conn.fetch(
        "SELECT status, tentativa, http_status FROM crm_sync_log"
        " WHERE entidade = 'produtos' AND acao = 'delete'"
    )
    assert [(r["status"], r["tentativa"], r["http_status"]) for r in log] == [("sucesso", 1, 200)]
    assert requests(crm, "DELETE") == [f"DELETE /produtos/{ext}"]
    cliente = crm.store.create("clientes", {"tipo_pessoa": "PF", "nome": "X"})
    await gc.delete("clientes", cliente["id"])  # a string message in data: success too


# --- 9: documented extra columns pass, typed; unknown ones are errors naming them --------------


async def test_documented_extra_columns_pass_into_the_payload_typed(gc: GestaoClick) -> None:
    cliente = gc.build(
        "clientes",
        {
            **CLIENTE_ROW,
            "rg": "12.345.678-9",
            "inscricao_estadual": None,
            "vendedor_id": 7,
            "contatos": json.dumps([{"nome": "Ana", "contato": "ana@example.com"}]),
            "enderecos": [{"cep": "50000-000"}, {"endereco": {"cep": "59000-000"}}],
        },
        {},
    ).payload
    produto = gc.build(
        "produtos",
        {**PRODUTO_ROW, "codigo_barra": 7891234567895, "fiscal": '{"ncm": "0901.21.00"}'},
        {},
    ).payload
    venda = gc.build(
        "vendas",
        venda_row(
            vendedor_id="12",
            valor_frete=Decimal("9.9"),
            pagamentos=[
                {"pagamento": {"valor": Decimal("47.88"), "data_vencimento": "2026-12-20"}}
            ],
        ),
        {("clientes", 1): "1", ("produtos", 1): "1"},
    ).payload

    assert (cliente["rg"], cliente["inscricao_estadual"], cliente["vendedor_id"]) == (
        "12.345.678-9",
        "",
        "7",
    )
    assert cliente["contatos"] == [{"contato": {"nome": "Ana", "contato": "ana@example.com"}}]
    assert cliente["enderecos"] == [
        {"endereco": {"cep": "50000-000"}},
        {"endereco": {"cep": "59000-000"}},
    ]
    assert produto["codigo_barra"] == "7891234567895"
    assert produto["fiscal"] == {"ncm": "0901.21.00"}
    assert (venda["vendedor_id"], venda["valor_frete"]) == ("12", "9.9000")
    assert venda["pagamentos"] == [
        {"pagamento": {"valor": "47.88", "data_vencimento": "2026-12-20"}}
    ]


@pytest.mark.parametrize(
    ("entidade", "column", "value", "complaint"),
    [
        ("clientes", "apelido", "Zé", "'apelido'"),
        ("clientes", "vendedor_id", "abc", "'vendedor_id'"),
        ("clientes", "contatos", "not json", "'contatos'"),
        ("produtos", "fiscal", "[1, 2]", "'fiscal'"),
        ("vendas", "codigo", "795", "'codigo'"),
    ],
)
async def test_an_unknown_or_mistyped_column_is_an_error_naming_it(
    gc: GestaoClick, entidade: str, column: str, value: Any, complaint: str
) -> None:
    rows = {"clientes": CLIENTE_ROW, "produtos": PRODUTO_ROW, "vendas": venda_row()}
    resolved = {("clientes", 1): "1", ("produtos", 1): "1"}

    with pytest.raises(CrmError) as raised:
        gc.build(entidade, {**rows[entidade], column: value}, resolved)

    assert raised.value.kind is ErrorKind.PERMANENT
    assert complaint in raised.value.message


async def test_check_columns_names_each_column_it_cannot_send(gc: GestaoClick) -> None:
    problems = gc.check_columns("clientes", ["id", "nome", "rg", "apelido", "deleted_at"])

    assert [p.split(":")[1].split("'")[1] for p in problems] == ["apelido", "deleted_at"]
    assert all(p.startswith("[sources] clientes:") for p in problems)
    assert gc.check_columns("produtos", ["id", "nome", "codigo_barra", "fiscal"]) == []


async def test_a_source_query_with_a_documented_extra_column_reaches_the_crm(
    conn: asyncpg.Connection, crm: DevCrm, db_dsn: str
) -> None:
    query = (
        "SELECT id, loja_id, tipo_pessoa, nome, cpf, cnpj, 'MG-' || id AS rg FROM clientes"
        " WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL"
    )
    settings = make_settings(db_dsn, crm, sources={"clientes": query})
    await seed_small(conn)
    await drain(settings)

    assert sorted(c["rg"] for c in crm.records("clientes")) == ["MG-1", "MG-2"]


# --- 10: the base URL, with or without /api, and a probe ---------------------------------------


async def test_a_base_url_with_or_without_api_reaches_the_same_account(crm: DevCrm) -> None:
    async with provider_for(crm, base_url=crm.url + "/api/") as gc:
        created = await gc.create("clientes", gc.build("clientes", CLIENTE_ROW, {}).payload)
    async with provider_for(crm) as gc:
        found = await gc.find("clientes", "52998224725")

    assert found == created
    assert [e.path for e in crm.ledger] == ["/api/clientes", "/clientes"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_the_probe_tells_which_base_url_answers_for_the_tokens(crm: DevCrm) -> None:
    async with provider_for(crm) as gc:
        plain = await gc.probe()
        with_api = await gc.probe(crm.url + "/api")
        elsewhere = await gc.probe(crm.url + "/nada")
        nobody = await gc.probe(f"http://127.0.0.1:{_closed_port()}")
    async with provider_for(crm, access_token="revogado") as gc:
        refused = await gc.probe()

    assert (plain.answers, plain.accepted, plain.status) == (True, True, 200)
    assert (with_api.answers, with_api.accepted) == (True, True)
    assert (elsewhere.answers, elsewhere.accepted, elsewhere.status) == (False, False, 404)
    assert (nobody.answers, nobody.accepted, nobody.status) == (False, False, None)
    assert (refused.answers, refused.accepted, refused.status) == (True, False, 401)
    assert "revogado" not in refused.message
    assert {"https://api.gestaoclick.com", "https://api.beteltecnologia.com/api"} <= set(
        KNOWN_BASE_URLS
    )
