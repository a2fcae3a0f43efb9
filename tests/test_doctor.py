"""`crmd doctor`, `crmd crm situacoes` and `crmd crm lojas` as an operator runs them: real
subprocesses against a real PostgreSQL and the development CRM on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from crmd import cli
from crmd.dev.devcrm.server import DevCrm, DevCrmConfig
from crmd.dev.devcrm.store import LOJAS, SITUACOES
from crmd.ops.doctor import candidate_urls
from tests.test_engine import TOKENS

SITUACAO, CANCELADA = SITUACOES[1][0], SITUACOES[2][0]
MATRIZ, FILIAL = LOJAS[0][0], LOJAS[1][0]


@pytest.fixture
async def crm() -> AsyncIterator[DevCrm]:
    async with DevCrm(DevCrmConfig(**TOKENS, limits=())) as server:
        yield server


@dataclass
class Run:
    code: int
    out: str
    err: str

    def lines(self, mark: str) -> list[str]:
        return [line for line in self.out.splitlines() if line.startswith(mark)]


def toml_value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value).lower() if isinstance(value, bool) else str(value)


def write_config(
    tmp_path: Path, db_dsn: str, crm: DevCrm, *, crm_keys: dict[str, Any] | None = None, **more: Any
) -> Path:
    """A config file for the development CRM; `more` adds sections ({"sources": {...}}); a key
    of `crm_keys` set to None is left out."""
    keys = {
        "base_url": crm.url,
        **TOKENS,
        "venda_situacao_id": SITUACAO,
        "venda_situacao_cancelada_id": CANCELADA,
        **(crm_keys or {}),
    }
    situacoes = keys.pop("situacoes", {"concretizada": SITUACAO, "cancelada": CANCELADA})
    lojas_crm = keys.pop("lojas_crm", {})
    text = [f'[database]\ndsn = "{db_dsn}"\n', '[admin]\nlisten = ""\n', "[crm]"]
    text += [f"{k} = {toml_value(v)}" for k, v in keys.items() if v is not None]
    text += ["[[crm.limits]]", "requests = 1000", "per_seconds = 1.0", "[crm.situacoes]"]
    text += [f"{k} = {toml_value(v)}" for k, v in situacoes.items()]
    text += ["[crm.lojas_crm]"] + [f"{k} = {toml_value(v)}" for k, v in lojas_crm.items()]
    for section, values in more.items():
        text += [f"[{section}]"] + [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


async def crmd(config: Path, *args: str) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMD_")}
    env["CRMD_LOG__FORMAT"] = "json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crmd",
        *args,
        "--config",
        str(config),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


# --- doctor -----------------------------------------------------------------------------------


async def test_doctor_passes_a_sound_installation_and_says_which_url_answers(
    db_dsn: str, crm: DevCrm, tmp_path: Path
) -> None:
    config = write_config(tmp_path, db_dsn, crm)

    run = await crmd(config, "doctor")

    assert run.code == 0, run.out
    assert run.lines("PROBLEMA") == []
    assert run.out.rstrip().endswith("Tudo certo.")
    assert f"ok        conta default: {crm.url} responde e aceita os tokens" in run.out
    assert f"{crm.url}/api: responde e aceita os tokens" in run.out
    assert "ok        [sources] vendas (a consulta padrão, do esquema de referência): roda" in (
        run.out
    )
    assert "ok        esquema do crmd: atualizado" in run.out
    # A probe per URL and the list of situações; nothing written to the CRM.
    assert {e.method for e in crm.ledger} == {"GET"}
    assert TOKENS["secret_access_token"] not in run.out + run.err


async def test_doctor_names_each_problem_and_exits_1(
    db_dsn: str, conn: asyncpg.Connection, crm: DevCrm, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path,
        db_dsn,
        crm,
        crm_keys={
            "venda_situacao_cancelada_id": "",
            "situacoes": {"concretizada": "99"},
            "lojas_crm": {1: MATRIZ, 2: "55"},
        },
        sources={
            "clientes": "SELECT id, nome, 'x' AS apelido FROM clientes"
            " WHERE id = ANY($1::bigint[])",
            "produtos": "SELECT * FROM produtos_que_nao_existem WHERE id = ANY($1::bigint[])",
            "vendas_enqueue": "SELECT id FROM vendas",
        },
        map_import={"clientes": "SELECT id FROM clientes"},
    )

    run = await crmd(config, "doctor")
    problems = run.lines("PROBLEMA")

    assert run.code == 1
    assert run.out.rstrip().endswith(f"{len(problems)} problemas encontrados.")
    joined = "\n".join(problems)
    assert "[crm.situacoes] 'concretizada' = '99': a conta não tem essa situação" in joined
    assert "[crm.lojas_crm] 2 = '55': a empresa não tem essa loja" in joined
    assert "venda_situacao_cancelada_id está vazio" in joined
    assert "[sources] clientes: a coluna 'apelido' não é mapeada pelo crmd" in joined
    assert '[sources] produtos: não roda: relation "produtos_que_nao_existem"' in joined
    assert "[sources] vendas_enqueue: falta a coluna loja_id" in joined
    assert "[sources] vendas_enqueue: falta a coluna data" in joined
    assert "[map_import] clientes: falta a coluna external_id" in joined


async def test_doctor_tells_tokens_refused_and_a_database_away(crm: DevCrm, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        "postgresql://crmd@127.0.0.1:1/ecletech",
        crm,
        crm_keys={"access_token": "revogado"},
    )

    run = await crmd(config, "doctor")

    assert run.code == 1
    [database] = [line for line in run.lines("PROBLEMA") if "banco de dados" in line]
    assert "não foi possível conectar a postgresql://crmd@127.0.0.1:1/ecletech" in database
    [url] = [line for line in run.lines("PROBLEMA") if "conta default" in line]
    assert "nenhuma URL aceitou os tokens ([crm] base_url" in url
    assert "responde mas recusa os tokens (401" in run.out
    assert "revogado" not in run.out + run.err


async def test_doctor_reports_missing_tokens_once_and_checks_the_rest(
    db_dsn: str, crm: DevCrm, tmp_path: Path
) -> None:
    config = write_config(tmp_path, db_dsn, crm, crm_keys={"secret_access_token": None})

    run = await crmd(config, "doctor")

    assert run.code == 1
    assert run.lines("PROBLEMA") == [
        "PROBLEMA  configuração: crm.secret_access_token: o gestaoclick precisa dele: defina "
        "secret_access_token ou secret_access_token_file"
    ]
    assert "ok        [sources] clientes" in run.out
    assert crm.ledger == []


async def test_doctor_points_at_the_base_url_that_works(
    db_dsn: str, crm: DevCrm, tmp_path: Path
) -> None:
    config = write_config(tmp_path, db_dsn, crm, crm_keys={"base_url": crm.url + "/nada"})

    run = await crmd(config, "doctor")

    [problem] = [line for line in run.lines("PROBLEMA") if "conta default" in line]
    assert f"[crm] base_url = '{crm.url}/nada' HTTP 404 sem o envelope JSON" in problem
    assert f"aceita(m) os tokens: {crm.url}, {crm.url}/api" in problem


async def test_doctor_refuses_an_invalid_file_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[database]\ndsn = "postgresql://x@h/db"\n[sync]\non_delete = "x"\n')

    run = await crmd(path, "doctor")

    assert run.code == 78
    assert run.out.startswith("PROBLEMA  configuração: sync.on_delete:")


async def test_doctor_on_a_database_without_crmds_schema(
    crm: DevCrm, tmp_path: Path, pg_server: Any
) -> None:
    admin = await asyncpg.connect(pg_server.admin_dsn)
    name = f"crmd_doctor_empty_{os.getpid()}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        run = await crmd(write_config(tmp_path, pg_server.dsn_for(name), crm), "doctor")
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()

    assert run.code == 1
    assert "esquema do crmd: faltam as migrações core/0001_queue" in run.out
    assert "rode crmd migrate" in run.out


def test_the_probed_urls_cover_both_hosts_with_and_without_api() -> None:
    real = candidate_urls("https://api.beteltecnologia.com/")
    dev = candidate_urls("http://127.0.0.1:8800/api")

    assert real[0] == "https://api.beteltecnologia.com"
    assert sorted(real) == sorted(
        [
            "https://api.gestaoclick.com",
            "https://api.gestaoclick.com/api",
            "https://api.beteltecnologia.com",
            "https://api.beteltecnologia.com/api",
        ]
    )
    assert dev == ["http://127.0.0.1:8800/api", "http://127.0.0.1:8800"]
    assert candidate_urls("http://h:1/x")[1:] == [
        "http://h:1/x/api",
        "http://h:1",
        "http://h:1/api",
    ]


# --- crm situacoes, crm lojas -----------------------------------------------------------------


async def test_crm_situacoes_lists_the_accounts_own_with_tipo_lancamento_and_config_keys(
    db_dsn: str, crm: DevCrm, tmp_path: Path
) -> None:
    run = await crmd(write_config(tmp_path, db_dsn, crm), "crm", "situacoes")

    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == "Situações de venda da conta default:"
    assert lines[1].split() == ["id", "nome", "tipo_lancamento", "no", "config"]
    assert lines[2].split() == ["3150", "Em", "aberto", "0"]
    assert lines[3].split()[:3] == ["3151", "Concretizada", "1"]
    assert "venda_situacao_id, [crm.situacoes] concretizada" in lines[3]
    assert "venda_situacao_cancelada_id, [crm.situacoes] cancelada" in lines[4]


async def test_crm_lojas_lists_the_companys_lojas_and_the_mapping(
    db_dsn: str, crm: DevCrm, tmp_path: Path
) -> None:
    config = write_config(tmp_path, db_dsn, crm, crm_keys={"lojas_crm": {1: MATRIZ, 3: MATRIZ}})

    run = await crmd(config, "crm", "lojas", "--loja", "1")

    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == "Lojas da conta default:"
    assert lines[2].split()[:2] == [MATRIZ, "Matriz"]
    assert lines[2].endswith("[crm.lojas_crm] 1, [crm.lojas_crm] 3")
    assert lines[3].split() == [FILIAL, "Filial", "Centro"]


async def test_crm_lists_exit_69_naming_the_account_that_cannot_be_read(
    db_dsn: str, crm: DevCrm, tmp_path: Path
) -> None:
    config = write_config(tmp_path, db_dsn, crm, crm_keys={"access_token": "revogado"})

    run = await crmd(config, "crm", "lojas")

    assert run.code == 69
    assert run.err.startswith("crmd: conta default:")
    assert "revogado" not in run.err


@pytest.mark.parametrize(
    "argv",
    [
        ["doctor"],
        ["crm", "situacoes"],
        ["crm", "lojas"],
        ["map", "import"],
        ["plan"],
    ],
    ids=" ".join,
)
def test_the_new_commands_have_help_in_portuguese(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--config ARQUIVO" in text
    assert any(word in text for word in (" da ", " do ", " de ", " que "))
