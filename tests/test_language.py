"""One language for operators: everything the `crmd` command prints (--help of every command,
results, errors, argparse's own messages) is Portuguese. The test runs the commands and greps
what they print for English words; identifiers are left out first (options, config keys, paths,
command names), and so are log lines (JSON: event names and field keys are an interface)."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from pathlib import Path

import asyncpg

from crmd import ptbr
from crmd.cli import build_parser
from tests.conftest import run_crmd

ENGLISH = frozenset(
    {
        "the",
        "and",
        "not",
        "is",
        "are",
        "with",
        "without",
        "from",
        "this",
        "that",
        "should",
        "must",
        "cannot",
        "can't",
        "invalid",
        "found",
        "items",
        "usage",
        "options",
        "arguments",
        "show",
        "help",
        "message",
        "exit",
        "nothing",
        "applied",
        "inserted",
        "never",
        "unknown",
        "missing",
        "required",
        "expected",
        "choose",
        "database",
        "configuration",
        "secrets",
        "masked",
        "environment",
        "every",
        "only",
        "when",
        "which",
        "please",
        "error",
        "errors",
        "pending",
        "waiting",
        "records",
        "seconds",
        "minutes",
        "hours",
        "days",
        "success",
        "rate",
        "last",
        "next",
        "schema",
        "date",
        "time",
        "none",
        "enqueued",
        "failures",
        "attempts",
        "requests",
    }
)
COMMANDS = {"run", "status", "failed", "retry", "cleanup", "enqueue", "history", "schedule"}
IDENTIFIER = re.compile(
    r"--?[\w-]+"  # options
    r"|\[[\w. ]+\]"  # config sections
    r"|\$?\b\w*_\w*\b"  # config keys, $ENV_VARS, table names
    r"|\S*/\S*"  # paths and URLs
    r"|\bcrmd (?:dev )?\w+"  # "crmd retry", "crmd dev seed"
    r"|\{[^}]*\}"  # argparse's choices
    r"|'[^']*'"  # quoted values
)


def english_words(text: str) -> set[str]:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("{")]
    plain = IDENTIFIER.sub(" ", "\n".join(lines))
    return {w for w in re.findall(r"[A-Za-z']+", plain) if w.lower() in ENGLISH}


def all_helps() -> dict[str, str]:
    """`--help` of `crmd` and of every subcommand, as argparse prints it."""
    found: dict[str, str] = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        found[name] = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}")

    walk(build_parser(), "crmd")
    return found


def test_every_help_is_portuguese() -> None:
    helps = all_helps()
    assert {"crmd", "crmd status", "crmd history", "crmd dev seed", "crmd dev crm"} <= set(helps)
    found = {name: english_words(text) for name, text in helps.items()}
    assert not {name: words for name, words in found.items() if words}
    assert "uso: crmd" in helps["crmd"] and "mostra esta ajuda e sai" in helps["crmd status"]


async def test_what_the_commands_print_is_portuguese(
    conn: asyncpg.Connection, db_dsn: str, tmp_path: Path
) -> None:
    env = {"CRMD_DATABASE__DSN": db_dsn, "CRMD_CONFIG": os.devnull, "CRMD_ADMIN__LISTEN": ""}
    broken = tmp_path / "broken.toml"
    broken.write_text('[queue]\nbatch_size = 0\nlease = 3\n[log]\nlevel = "loud"\n[crm]\n')
    seed_argv = (
        "dev",
        "seed",
        "--lojas",
        "1",
        "--clientes",
        "3",
        "--produtos",
        "2",
        "--vendas",
        "2",
    )
    seeded = await asyncio.to_thread(run_crmd, *seed_argv, env=env)
    runs = [
        ("enqueue", "vendas", "--since", "3650"),
        ("enqueue", "clientes", "--loja", "99"),
        ("enqueue", "vendas", "--since", "ontem"),
        ("enqueue", "pedidos"),
        ("status",),
        ("failed",),
        ("retry", "--all-failed"),
        ("retry",),
        ("history", "clientes", "1"),
        ("cleanup", "--dry-run"),
        ("schedule",),
        ("migrate",),
        ("run", "--once"),
        ("check-config",),
        ("check-config", "--config", str(broken)),
        ("check-config", "--config", str(tmp_path / "absent.toml")),
        ("nonsense",),
    ]
    await conn.execute(
        "INSERT INTO crm_sync_log (conta, loja_id, entidade, entidade_id, acao, tentativa,"
        " status, http_status, mensagem) VALUES ('default', 1, 'clientes', 1, 'upsert', 1,"
        " 'erro', 422, 'CPF inválido')"
    )
    results = await asyncio.gather(*(asyncio.to_thread(run_crmd, *argv, env=env) for argv in runs))
    unreachable = await asyncio.to_thread(
        run_crmd,
        "status",
        env={**env, "CRMD_DATABASE__DSN": "postgresql://crmd@127.0.0.1:1/x"},
    )
    found = {}
    outputs = [
        (seed_argv, seeded),
        *zip(runs, results, strict=True),
        (("status", "(fora)"), unreachable),
    ]
    for argv, result in outputs:
        words = english_words(result.stdout + result.stderr)
        if words:
            found[" ".join(argv)] = (sorted(words), result.stdout + result.stderr)
    assert not found
    by_argv = dict(zip(runs, results, strict=True))
    assert seeded.stdout.startswith("Inseridos: 1 loja, 3 clientes, 2 produtos, 2 vendas")
    assert (
        "Loja 1: 2 vendas encontradas" in by_argv[("enqueue", "vendas", "--since", "3650")].stdout
    )
    assert "Total enfileirado: 2" in by_argv[("enqueue", "vendas", "--since", "3650")].stdout
    assert "crm.access_token: o gestaoclick precisa dele" in by_argv[("run", "--once")].stderr


def test_numbers_plurals_and_times_read_as_in_brazil() -> None:
    assert ptbr.number(1_000_014) == "1.000.014"
    assert ptbr.percent(0.9876) == "98,8 %"
    assert ptbr.counted(2, "vendas", "encontrado") == "2 vendas encontradas"
    assert ptbr.counted(1, "clientes", "encontrado") == "1 cliente encontrado"
    assert ptbr.count(1, "tentativas") == "1 tentativa"
    assert ptbr.count(1, "itens") == "1 item"
    assert ptbr.duration(12_000) == "3 h 20 min"
    assert ptbr.duration(45) == "45 s"
    assert ptbr.duration(0.01) == "menos de 1 s"
    assert ptbr.duration(3 * 86400 + 7200) == "3 dias 2 h"
    assert ptbr.moment("2025-03-14T12:05:09+00:00", "America/Sao_Paulo") == (
        "14/03/2025 09:05:09 UTC-03"
    )
    assert ptbr.moment("2025-03-14T12:05:09+00:00", "Asia/Kolkata").endswith("UTC+05:30")


def test_the_grep_catches_english_and_leaves_identifiers() -> None:
    assert english_words("3 items pending for the queue") == {"items", "pending", "the"}
    assert not english_words("--dry-run crm_sync_queue [admin] /api/status 'the'")
