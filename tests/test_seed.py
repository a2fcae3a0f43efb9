"""`crmd dev seed`: valid documents, consistent vendas, repeatable data, one queue item each."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import asyncpg
import pytest

from crmd.dev import seed_data
from crmd.dev.seed import (
    cnpj_check_digits,
    cpf_check_digits,
    format_cep,
    format_cnpj,
    format_cpf,
    seed,
    valid_cnpj,
    valid_cpf,
)

# --- check digits and formatting ----------------------------------------------------------------


@pytest.mark.parametrize("cpf", ["529.982.247-25", "52998224725", "111.444.777-35"])
def test_known_cpfs_are_valid(cpf: str) -> None:
    assert valid_cpf(cpf)


@pytest.mark.parametrize("cnpj", ["11.222.333/0001-81", "11222333000181", "00.000.000/0001-91"])
def test_known_cnpjs_are_valid(cnpj: str) -> None:
    assert valid_cnpj(cnpj)


def test_check_digits_of_known_numbers() -> None:
    assert cpf_check_digits("529982247") == "25"
    assert cnpj_check_digits("112223330001") == "81"


@pytest.mark.parametrize(
    "cpf", ["529.982.247-24", "529.982.247-35", "111.111.111-11", "529.982.247", "", "abc"]
)
def test_wrong_digits_repeated_digits_and_wrong_lengths_are_invalid_cpfs(cpf: str) -> None:
    assert not valid_cpf(cpf)


@pytest.mark.parametrize("cnpj", ["11.222.333/0001-80", "00.000.000/0000-00", "11.222.333/0001"])
def test_wrong_digits_repeated_digits_and_wrong_lengths_are_invalid_cnpjs(cnpj: str) -> None:
    assert not valid_cnpj(cnpj)


def test_check_digits_reject_a_base_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="9 digits"):
        cpf_check_digits("1234")
    with pytest.raises(ValueError, match="12 digits"):
        cnpj_check_digits("11.222.333/0001")


def test_formats_are_the_usual_brazilian_masks() -> None:
    assert format_cpf("52998224725") == "529.982.247-25"
    assert format_cnpj("11222333000181") == "11.222.333/0001-81"
    assert format_cep(1310100) == "01310-100"


# --- against PostgreSQL -------------------------------------------------------------------------


async def _count_by_loja(conn: asyncpg.Connection, table: str) -> dict[int, int]:
    rows = await conn.fetch(f"SELECT loja_id, count(*) AS n FROM {table} GROUP BY loja_id")
    return {r["loja_id"]: r["n"] for r in rows}


async def test_counts_are_per_loja_and_returned(conn: asyncpg.Connection) -> None:
    counts = await seed(conn, lojas=2, clientes=30, produtos=10, vendas=20, seed=1)

    itens = await conn.fetchval("SELECT count(*) FROM venda_itens")
    assert counts == {"lojas": 2, "clientes": 60, "produtos": 20, "vendas": 40, "itens": itens}
    lojas = [r["id"] for r in await conn.fetch("SELECT id FROM lojas ORDER BY id")]
    assert len(lojas) == 2
    assert await _count_by_loja(conn, "clientes") == dict.fromkeys(lojas, 30)
    assert await _count_by_loja(conn, "produtos") == dict.fromkeys(lojas, 10)
    assert await _count_by_loja(conn, "vendas") == dict.fromkeys(lojas, 20)
    names = {r["nome"] for r in await conn.fetch("SELECT nome FROM lojas")}
    assert names == {"Loja Centro", "Loja Shopping"}


async def test_clientes_look_brazilian_and_every_document_is_valid(
    conn: asyncpg.Connection,
) -> None:
    await seed(conn, lojas=1, clientes=1000, produtos=0, vendas=0, seed=2)
    rows = await conn.fetch("SELECT * FROM clientes")
    pf = [r for r in rows if r["tipo_pessoa"] == "PF"]
    pj = [r for r in rows if r["tipo_pessoa"] == "PJ"]
    inactive = [r for r in rows if not r["ativo"]]

    assert 0.62 < len(pf) / len(rows) < 0.78
    assert 0.02 < len(inactive) / len(rows) < 0.09
    assert all(valid_cpf(r["cpf"]) and r["cnpj"] is None for r in pf)
    assert all(re.fullmatch(r"\d{3}\.\d{3}\.\d{3}-\d{2}", r["cpf"]) for r in pf)
    assert all(valid_cnpj(r["cnpj"]) and r["cpf"] is None for r in pj)
    assert all(re.fullmatch(r"\d{2}\.\d{3}\.\d{3}/\d{4}-\d{2}", r["cnpj"]) for r in pj)
    assert all(re.search(r" (LTDA|ME|EIRELI|S\.A\.)$", r["razao_social"]) for r in pj)
    assert len({r["cpf"] or r["cnpj"] for r in rows}) == len(rows)
    assert len({r["email"] for r in rows}) == len(rows)
    assert all(re.fullmatch(r"[a-z0-9._]+@[a-z0-9.]+\.[a-z]+", r["email"]) for r in rows)

    cities = {c.nome: c for c in seed_data.CITIES}
    for r in rows:
        city = cities[r["cidade"]]
        assert r["uf"] == city.uf
        assert re.fullmatch(r"\d{5}-\d{3}", r["cep"])
        assert city.cep_min <= int(r["cep"].replace("-", "")) <= city.cep_max
        for phone in (r["telefone"], r["celular"]):
            assert phone is None or re.fullmatch(rf"\({city.ddd}\) 9?\d{{4}}-\d{{4}}", phone)
        assert r["logradouro"] and r["numero"] and r["bairro"]
    loja_cnpj = await conn.fetchval("SELECT cnpj FROM lojas")
    assert valid_cnpj(loja_cnpj)


async def test_produtos_cost_less_than_they_sell_for(conn: asyncpg.Connection) -> None:
    await seed(conn, lojas=2, clientes=0, produtos=200, vendas=0, seed=3)
    assert (
        await conn.fetchval("SELECT count(*) FROM produtos WHERE valor_custo >= valor_venda") == 0
    )
    assert await conn.fetchval("SELECT count(*) FROM produtos WHERE valor_custo <= 0") == 0
    # Unique across lojas too: every loja's produtos go to the same CRM account.
    assert await conn.fetchval("SELECT count(DISTINCT codigo_interno) FROM produtos") == 400


async def test_vendas_have_one_to_five_items_of_their_own_lojas_produtos(
    conn: asyncpg.Connection,
) -> None:
    await seed(conn, lojas=3, clientes=20, produtos=15, vendas=100, seed=4)

    foreign = await conn.fetchval(
        """
        SELECT count(*) FROM venda_itens i
          JOIN vendas v ON v.id = i.venda_id
          JOIN produtos p ON p.id = i.produto_id
          JOIN clientes c ON c.id = v.cliente_id
         WHERE p.loja_id <> v.loja_id OR c.loja_id <> v.loja_id
        """
    )
    assert foreign == 0
    per_venda = await conn.fetch(
        """
        SELECT count(*) AS n, count(DISTINCT produto_id) AS distinct_produtos
          FROM vendas v LEFT JOIN venda_itens i ON i.venda_id = v.id GROUP BY v.id
        """
    )
    assert all(1 <= r["n"] <= 5 and r["n"] == r["distinct_produtos"] for r in per_venda)


async def test_valor_total_is_the_sum_of_the_items(conn: asyncpg.Connection) -> None:
    await seed(conn, lojas=2, clientes=10, produtos=10, vendas=50, seed=5)
    mismatched = await conn.fetchval(
        """
        SELECT count(*) FROM vendas v
         WHERE v.valor_total <> (SELECT sum(quantidade * valor_venda) FROM venda_itens
                                  WHERE venda_id = v.id)
        """
    )
    assert mismatched == 0


async def test_vendas_span_the_last_90_days_with_some_in_the_last_30(
    conn: asyncpg.Connection,
) -> None:
    await seed(conn, lojas=1, clientes=10, produtos=10, vendas=200, seed=6)
    today: date = await conn.fetchval("SELECT current_date")
    dates = [r["data"] for r in await conn.fetch("SELECT data FROM vendas")]
    assert all(today - timedelta(days=89) <= d <= today for d in dates)
    recent = sum(d >= today - timedelta(days=30) for d in dates)
    assert 0.2 < recent / len(dates) < 0.5


async def _snapshot(conn: asyncpg.Connection, loja_ids: list[int]) -> list[Any]:
    """One seeding run's rows with database ids replaced by positions, for comparing runs."""
    position: dict[tuple[str, int], int] = {}
    out: list[Any] = []
    lojas = await conn.fetch(
        "SELECT id, nome, cnpj FROM lojas WHERE id = ANY($1) ORDER BY id", loja_ids
    )
    for table in ("clientes", "produtos", "vendas"):
        rows = await conn.fetch(
            f"SELECT * FROM {table} WHERE loja_id = ANY($1) ORDER BY id", loja_ids
        )
        for n, r in enumerate(rows):
            position[table, r["id"]] = n
        skip = {"id", "loja_id", "cliente_id", "created_at", "updated_at"}
        out += [
            (
                table,
                loja_ids.index(r["loja_id"]),
                position.get(("clientes", r.get("cliente_id", 0))),
                # A produto's code carries its loja's id (unique within a CRM account).
                [
                    v.removeprefix(f"L{r['loja_id']}-") if k == "codigo_interno" else v
                    for k, v in r.items()
                    if k not in skip
                ],
            )
            for r in rows
        ]
    items = await conn.fetch(
        "SELECT venda_id, produto_id, quantidade, valor_venda FROM venda_itens "
        "WHERE venda_id = ANY($1) ORDER BY id",
        [venda_id for (table, venda_id) in position if table == "vendas"],
    )
    out += [
        (
            position["vendas", i["venda_id"]],
            position["produtos", i["produto_id"]],
            i["quantidade"],
            i["valor_venda"],
        )
        for i in items
    ]
    return [(r["nome"], r["cnpj"]) for r in lojas] + out


async def test_the_same_seed_gives_the_same_data_and_seeding_twice_works(
    conn: asyncpg.Connection,
) -> None:
    sizes = {"lojas": 2, "clientes": 25, "produtos": 10, "vendas": 30}
    await seed(conn, **sizes, seed=42)
    first = [r["id"] for r in await conn.fetch("SELECT id FROM lojas ORDER BY id")]
    await seed(conn, **sizes, seed=42)
    second = [
        r["id"]
        for r in await conn.fetch("SELECT id FROM lojas WHERE NOT id = ANY($1) ORDER BY id", first)
    ]
    await seed(conn, **sizes, seed=43)
    third = [
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM lojas WHERE NOT id = ANY($1) ORDER BY id", first + second
        )
    ]

    assert len(second) == len(third) == 2
    assert await _snapshot(conn, first) == await _snapshot(conn, second)
    assert await _snapshot(conn, first) != await _snapshot(conn, third)


async def test_triggers_enqueue_one_item_per_record_and_items_coalesce_into_their_venda(
    conn: asyncpg.Connection,
) -> None:
    await seed(conn, lojas=2, clientes=15, produtos=8, vendas=25, seed=7)

    queue = await conn.fetch(
        """
        SELECT entidade, count(*) AS n, count(DISTINCT entidade_id) AS records,
               min(prioridade) AS min_p, max(prioridade) AS max_p,
               bool_and(estado = 'pendente' AND acao = 'upsert') AS pending_upserts
          FROM crm_sync_queue GROUP BY entidade
        """
    )
    assert {r["entidade"]: (r["n"], r["records"], r["min_p"], r["max_p"]) for r in queue} == {
        "clientes": (30, 30, 3, 3),
        "produtos": (16, 16, 3, 3),
        "vendas": (50, 50, 5, 5),
    }
    assert all(r["pending_upserts"] for r in queue)
    wrong_loja = await conn.fetchval(
        """
        SELECT count(*) FROM crm_sync_queue q
          LEFT JOIN clientes c ON q.entidade = 'clientes' AND c.id = q.entidade_id
          LEFT JOIN produtos p ON q.entidade = 'produtos' AND p.id = q.entidade_id
          LEFT JOIN vendas v ON q.entidade = 'vendas' AND v.id = q.entidade_id
         WHERE q.loja_id IS DISTINCT FROM coalesce(c.loja_id, p.loja_id, v.loja_id)
        """
    )
    assert wrong_loja == 0


async def test_a_failure_leaves_nothing_behind(conn: asyncpg.Connection) -> None:
    # Items are copied last: make them fail, and the lojas, clientes and queue rows must go too.
    await conn.execute("ALTER TABLE venda_itens ADD CONSTRAINT refuse CHECK (quantidade < 0)")

    with pytest.raises(asyncpg.CheckViolationError):
        await seed(conn, lojas=1, clientes=10, produtos=5, vendas=5, seed=8)

    for table in ("lojas", "clientes", "produtos", "vendas", "crm_sync_queue"):
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_empty_sizes_are_fine(conn: asyncpg.Connection) -> None:
    assert await seed(conn, lojas=0, clientes=10, produtos=10, vendas=10) == {
        "lojas": 0,
        "clientes": 0,
        "produtos": 0,
        "vendas": 0,
        "itens": 0,
    }
    assert await seed(conn, lojas=1, clientes=0, produtos=0, vendas=0) == {
        "lojas": 1,
        "clientes": 0,
        "produtos": 0,
        "vendas": 0,
        "itens": 0,
    }


@pytest.mark.parametrize(
    ("sizes", "named"),
    [
        ({"lojas": -1}, "lojas"),
        ({"clientes": -5}, "clientes"),
        ({"produtos": -1}, "produtos"),
        ({"vendas": -1}, "vendas"),
        ({"clientes": 0}, "clientes"),
        ({"produtos": 0}, "produtos"),
    ],
)
async def test_bad_arguments_are_rejected_naming_the_argument(
    conn: asyncpg.Connection, sizes: dict[str, int], named: str
) -> None:
    args = {"lojas": 1, "clientes": 5, "produtos": 5, "vendas": 5} | sizes
    with pytest.raises(ValueError, match=rf"^--{named} deve ser"):
        await seed(conn, **args)
    assert await conn.fetchval("SELECT count(*) FROM lojas") == 0
