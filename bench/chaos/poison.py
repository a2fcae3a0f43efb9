"""Poisoned rows among ordinary ones: each bad record fails alone, with a message naming what is
wrong; odd but valid text goes through; the ordinary records all reach the CRM."""

from __future__ import annotations

import asyncpg

from bench.chaos.common import Crmd, add_lojas, config_text, dev_crm, drained, until, verdict
from bench.chaos.result import Result
from bench.pg import PgServer

CPF = ("529.982.247-25", "111.444.777-35", "390.533.447-05", "935.411.347-80")

# (entidade, id, what must appear in its error): the records that must fail.
EXPECTED = [
    ("clientes", 3, "coluna nome: texto de 10.000.000"),
    ("clientes", 6, "já está vinculado a clientes 5"),
    ("produtos", 2, "coluna valor_venda"),
    ("vendas", 1, "coluna data"),
    ("vendas", 2, "que não existe mais no ERP"),
]


async def poisoned_rows(pg: PgServer, crmd: Crmd, quick: bool) -> Result:
    async with pg.fresh_database("poison") as db, dev_crm() as crm:
        conn = await asyncpg.connect(db.dsn)
        try:
            await add_lojas(conn)
            clientes = [
                (1, "Nulos em tudo", None, None, None),
                (2, "Controle \u0001\u001f e emoji 🍕🇧🇷 e \u200b", CPF[1], "a@b.c", "+55 (81)"),
                (3, "x" * 10_000_000, None, None, None),
                (4, "Dependência apagada", CPF[2], None, None),
                (5, "Original do CPF", CPF[0], None, None),
            ]
            await conn.executemany(
                "INSERT INTO clientes (id, loja_id, nome, cpf, email, telefone)"
                " VALUES ($1, 1, $2, $3, $4, $5)",
                clientes,
            )
            await conn.execute(
                """INSERT INTO produtos (id, loja_id, codigo_interno, nome, valor_custo,
                                         valor_venda)
                   VALUES (1, 1, 'OK-1', 'Café', 1, 2), (2, 1, 'NAN-1', 'Preço NaN', 1, 'NaN')"""
            )
            await conn.execute(
                """INSERT INTO vendas (id, loja_id, cliente_id, data)
                   VALUES (1, 1, 5, '12000-01-01'), (2, 1, 4, current_date),
                          (3, 1, 5, current_date)"""
            )
            await conn.execute("UPDATE clientes SET deleted_at = now() WHERE id = 4")
            config = crmd.workdir / "poison.toml"
            config.write_text(config_text(db.dsn, crm.url))
            crmd.start(config)
            await until(await drained(conn), 60, "the first round")
            # The twin arrives once the original is in the CRM.
            await conn.execute(
                "INSERT INTO clientes (id, loja_id, nome, cpf) VALUES (6, 1, 'Gêmea', $1)", CPF[0]
            )
            await until(await drained(conn), 60, "the queue to drain")
            await crmd.stop()
            failed = {
                (r["entidade"], r["entidade_id"]): r["ultimo_erro"]
                for r in await conn.fetch(
                    "SELECT entidade, entidade_id, ultimo_erro FROM crm_sync_queue"
                    " WHERE estado = 'falhou'"
                )
            }
            v = await verdict(conn, crm, expected_failures=[(e, i) for e, i, _ in EXPECTED])
        finally:
            await conn.close()
    wrong = [
        f"{e} {i}: {failed.get((e, i))!r}"
        for e, i, words in EXPECTED
        if words not in (failed.get((e, i)) or "")
    ]
    line = (
        f"{len(EXPECTED)} poisoned records failed alone, {len(EXPECTED) - len(wrong)} naming the"
        f" cause; {v.line()}" + (f"; wrong: {wrong}" if wrong else "")
    )
    return Result("poisoned rows", line, v.holds and not wrong, failed)
