"""What an installation of the old PHP system relies on: its troubleshooting guide's reset, the
`processado` and `tentativas` columns as its queries read them, and views for its monitoring
queries (migrations/core/0006_old_system.sql), against a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from crmd.config import CleanupSettings
from crmd.model import Entry, NewItem, Outcome, RetryPolicy
from crmd.ops import cleanup
from crmd.store import queue
from tests.test_ops import add_log
from tests.test_queue import enqueue, settle

RESET = "UPDATE crm_sync_queue SET tentativas = 0 WHERE tentativas >= 3"
"""Verbatim from the old system's troubleshooting guide."""


async def fail(
    conn: asyncpg.Connection, entidade: str, entidade_id: int, *, prio: int | None = None
) -> int:
    """An item that fails at its first attempt, through the engine's settle path."""
    await enqueue(conn, NewItem(1, entidade, entidade_id, prioridade=prio))
    [item] = await queue.claim(conn, 1, 60)
    await settle(conn, item, Outcome.failed("HTTP 422: CPF inválido", retryable=False))
    return item.id


async def row(conn: asyncpg.Connection, queue_id: int) -> asyncpg.Record | None:
    found: asyncpg.Record | None = await conn.fetchrow(
        "SELECT *, proxima_tentativa <= now() AS due FROM crm_sync_queue WHERE id = $1", queue_id
    )
    return found


async def test_a_failed_item_reads_as_the_old_guide_expects(conn: asyncpg.Connection) -> None:
    failed = await fail(conn, "clientes", 1)
    await enqueue(conn, NewItem(1, "clientes", 2))
    [done] = await queue.claim(conn, 1, 60)
    await settle(conn, done, Outcome.synced("9", "h", "criado"))

    old_failed = await conn.fetch(
        "SELECT id FROM crm_sync_queue WHERE NOT processado AND tentativas >= 3"
    )
    old_done = await conn.fetch("SELECT id FROM crm_sync_queue WHERE processado")
    assert [r["id"] for r in old_failed] == [failed]
    assert [r["id"] for r in old_done] == [done.id]


async def test_the_old_guides_reset_brings_failed_items_back_pending_and_due_now(
    conn: asyncpg.Connection, db_dsn: str
) -> None:
    first, second = await fail(conn, "clientes", 1), await fail(conn, "vendas", 7)
    await conn.execute("UPDATE crm_sync_queue SET adiamentos = 4 WHERE id = $1", second)
    listener = await asyncpg.connect(db_dsn)
    woken: list[str] = []
    await listener.add_listener("crm_sync", lambda *args: woken.append(args[1]))
    try:
        assert await conn.execute(RESET) == "UPDATE 2"
        await conn.execute("SELECT pg_sleep(0.1)")
    finally:
        await listener.close()

    for queue_id in (first, second):
        item = await row(conn, queue_id)
        assert item is not None
        assert (item["estado"], item["tentativas"], item["adiamentos"]) == ("pendente", 0, 0)
        assert item["due"] and item["processado_em"] is None and not item["processado"]
    assert woken  # the workers hear of it at once
    claimed = await queue.claim(conn, 10, 60)
    assert sorted(i.id for i in claimed) == sorted([first, second])
    # Fresh attempts: a new failure is retried again, as after `crmd retry`.
    entry = next(i for i in claimed if i.id == first)
    await queue.start(conn, [entry])
    [result] = await queue.settle(
        conn, [Entry(entry, "default", Outcome.failed("timeout", retryable=True))], RetryPolicy()
    )
    assert result == "retry"


async def test_the_reset_folds_a_failed_item_into_the_records_pending_one(
    conn: asyncpg.Connection,
) -> None:
    failed = await fail(conn, "vendas", 7, prio=5)
    await enqueue(conn, NewItem(1, "vendas", 7, prioridade=2))  # a newer change waits already

    await conn.execute(RESET)

    rows = await conn.fetch("SELECT id, estado, prioridade FROM crm_sync_queue")
    assert [(r["estado"], r["prioridade"]) for r in rows] == [("pendente", 5)]
    assert rows[0]["id"] != failed
    assert await conn.fetchval("SELECT count(*) FROM crm_sync_log") == 1  # its attempt stays


async def test_two_failed_items_of_one_record_reset_together_leave_one_pending(
    conn: asyncpg.Connection,
) -> None:
    await fail(conn, "produtos", 3)
    await fail(conn, "produtos", 3)

    await conn.execute(RESET)

    states = await conn.fetch("SELECT estado FROM crm_sync_queue WHERE entidade = 'produtos'")
    assert [r["estado"] for r in states] == ["pendente"]


async def test_the_reset_leaves_a_create_in_doubt_in_doubt(conn: asyncpg.Connection) -> None:
    await fail(conn, "clientes", 1)
    await conn.execute(
        "INSERT INTO crm_sync_map (conta, entidade, entidade_id) VALUES ('default', 'clientes', 1)"
    )

    await conn.execute(RESET)

    marker = await conn.fetchval("SELECT count(*) FROM crm_sync_map WHERE external_id IS NULL")
    assert marker == 1  # unlike `crmd retry`, the reset does not say a person checked the CRM


async def test_the_monitoring_views_answer_the_old_guides_questions(
    conn: asyncpg.Connection,
) -> None:
    await enqueue(conn, NewItem(1, "clientes", 1))
    await enqueue(conn, NewItem(1, "clientes", 2))
    await enqueue(conn, NewItem(1, "produtos", 1))
    await queue.claim(conn, 1, 60)  # clientes 1 goes in flight
    failed = await fail(conn, "vendas", 9)
    await add_log(conn, "sucesso", n=3)
    await add_log(conn, "erro", n=1, message="HTTP 422: inválido")
    await add_log(conn, "ignorado", n=2)
    await add_log(conn, "sucesso", n=5, acao="consulta")
    await add_log(conn, "erro", ago="25 hours", message="antigo")

    pendentes = {r["entidade"]: r for r in await conn.fetch("SELECT * FROM crm_sync_pendentes")}
    erros = await conn.fetch("SELECT * FROM crm_sync_erros")
    [taxa] = await conn.fetch("SELECT * FROM crm_sync_taxa_24h")
    ultimos = await conn.fetch("SELECT * FROM crm_sync_ultimos_erros LIMIT 10")

    assert {e: (r["pendentes"], r["processando"]) for e, r in pendentes.items()} == {
        "clientes": (2, 1),
        "produtos": (1, 0),
    }
    assert [(r["id"], r["tentativas"]) for r in erros] == [(failed, 3)]
    assert "CPF inválido" in erros[0]["ultimo_erro"]
    # The engine's own failure (settled above) is one more erro in the log.
    assert (taxa["tentativas"], taxa["sucessos"], taxa["erros"], taxa["ignorados"]) == (5, 3, 2, 2)
    assert float(taxa["taxa_sucesso"]) == 60.0
    assert [r["mensagem"] for r in ultimos][-1] == "antigo"
    assert len(ultimos) == 3


async def test_the_cleanup_removes_old_ignored_items_with_the_done_ones(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute(
        """INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, estado, processado_em)
           VALUES (1, 'atividades', 1, 'ignorado', now() - interval '8 days'),
                  (1, 'atividades', 2, 'ignorado', now()),
                  (1, 'clientes', 1, 'falhou', now() - interval '8 days')"""
    )

    result = await cleanup.cleanup(conn, CleanupSettings(), dry_run=False)

    assert result.queue_rows == 1
    left = await conn.fetch("SELECT entidade_id, estado FROM crm_sync_queue ORDER BY id")
    assert [(r["entidade_id"], r["estado"]) for r in left] == [(2, "ignorado"), (1, "falhou")]


async def test_the_readmes_postgresql_forms_of_the_guides_queries_run(
    conn: asyncpg.Connection,
) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("Views answer the same questions:", 1)[1].split("```sql", 1)[1]
    statements = [s.strip() for s in block.split("```", 1)[0].split(";") if s.strip()]
    await fail(conn, "clientes", 1)

    for statement in statements:
        await conn.fetch(statement)

    assert len(statements) == 8
