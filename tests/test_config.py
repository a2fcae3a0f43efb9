"""Configuration: file discovery, environment overrides, secrets, and errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crmd.config import ALL_SECRETS, ConfigError, load_settings
from crmd.dsn import redact
from tests.conftest import run_crmd

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CRMD_"):
            monkeypatch.delenv(name)


DSN = '[database]\ndsn = "postgresql://crmd@localhost/erp"\n'


def write(tmp_path: Path, text: str, *, dsn: bool = True) -> str:
    """A config file; one that says nothing of [database] gets a DSN (it is required)."""
    path = tmp_path / "config.toml"
    path.write_text(text if "[database]" in text or not dsn else DSN + text, encoding="utf-8")
    return str(path)


def problems(text: str, tmp_path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    return dict(info.value.problems)


def test_shipped_config_is_valid_and_matches_the_defaults_it_documents() -> None:
    settings, source = load_settings(str(REPO / "config.toml"))
    assert source == REPO / "config.toml"
    assert settings.queue.batch_size == 100
    assert settings.queue.max_attempts == 3
    assert settings.queue.retry_initial_delay_seconds == 2
    assert settings.queue.retry_multiplier == 2
    assert [(lim.requests, lim.per_seconds) for lim in settings.crm.limits] == [
        (3, 1),
        (100, 60),
        (30000, 86400),
    ]
    assert settings.cleanup.log_retention_days == 30
    assert settings.cleanup.queue_retention_days == 7
    assert settings.schedule.cleanup == "0 3 * * *"
    assert settings.schedule.full_sync == "0 2 * * 0"
    assert settings.schedule.timezone == "America/Sao_Paulo"


def test_missing_file_that_was_asked_for_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(str(missing))
    assert str(missing) in str(info.value)


def test_crmd_config_env_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMD_CONFIG", write(tmp_path, "[queue]\nbatch_size = 7\n"))
    settings, _ = load_settings(None)
    assert settings.queue.batch_size == 7
    monkeypatch.setenv("CRMD_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_settings(None)


def test_environment_overrides_file_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[database]\ndsn = "postgresql://a@h/db"\npool_max_size = 3\n')
    monkeypatch.setenv("CRMD_DATABASE__DSN", "postgresql://b@h/other")
    monkeypatch.setenv("CRMD_CRM__ACCESS_TOKEN", "from-env")
    settings, _ = load_settings(path)
    assert settings.database.dsn == "postgresql://b@h/other"
    assert settings.database.pool_max_size == 3
    assert settings.crm.access_token is not None
    assert settings.crm.access_token.get_secret_value() == "from-env"


def test_unknown_keys_are_errors_in_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = problems("[queue]\nbatch_sise = 10\n[bogus]\nx = 1\n", tmp_path)
    assert found == {
        "queue.batch_sise": "chave desconhecida (confira a grafia)",
        "bogus": "chave desconhecida (confira a grafia)",
    }
    monkeypatch.setenv("CRMD_QUEUE__MAX_ATEMPTS", "5")
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, ""))
    assert dict(info.value.problems) == {
        "queue.max_atempts": "chave desconhecida (confira a grafia)"
    }


def test_every_problem_is_reported_with_its_key_path(tmp_path: Path) -> None:
    found = problems(
        """
[queue]
batch_size = -1
max_attempts = "three"
[[crm.limits]]
requests = 0
per_seconds = 1
[schedule]
cleanup = "every day"
timezone = "Mars/Olympus"
[log]
level = "loud"
""",
        tmp_path,
    )
    assert found == {
        "queue.batch_size": "deve ser maior ou igual a 1",
        "queue.max_attempts": "deve ser um número inteiro",
        "crm.limits[0].requests": "deve ser maior que 0",
        "schedule.cleanup": "'every day' não é uma expressão cron (minuto hora dia mês "
        "dia-da-semana)",
        "schedule.timezone": "fuso horário desconhecido 'Mars/Olympus'",
        "log.level": "deve ser 'debug', 'info', 'warning' ou 'error'",
    }


def test_section_validators_name_the_field(tmp_path: Path) -> None:
    found = problems('[schedule]\ntimezone = "Mars/Olympus"\n', tmp_path)
    assert found == {"schedule.timezone": "fuso horário desconhecido 'Mars/Olympus'"}
    found = problems('[schedule]\nfull_sync = "61 * * * *"\n', tmp_path)
    assert list(found) == ["schedule.full_sync"]
    found = problems('[admin]\nlisten = "localhost"\n', tmp_path)
    assert list(found) == ["admin.listen"]
    found = problems('[database]\ndsn = "mysql://x"\n', tmp_path)
    assert list(found) == ["database.dsn"]


def test_the_operator_keys_default_safely_and_name_bad_values(tmp_path: Path) -> None:
    settings, _ = load_settings(write(tmp_path, ""))
    assert (settings.sync.on_delete, settings.sync.on_unsupported) == ("inactivate", "ignore")
    assert settings.crm.venda_situacao_cancelada_id == ""
    assert settings.map_import.query("clientes") is None

    found = problems(
        '[sync]\non_delete = "remove"\non_unsupported = "skip"\n'
        '[crm]\nvenda_situacao_cancelada_id = "Cancelada"\n'
        '[map_import]\nclientes = "SELECT id, external_id FROM c WHERE id = $1"\n',
        tmp_path,
    )
    assert set(found) == {
        "sync.on_delete",
        "sync.on_unsupported",
        "crm.venda_situacao_cancelada_id",
        "map_import.clientes",
    }
    assert "'Cancelada' não é um id do GestãoClick" in found["crm.venda_situacao_cancelada_id"]


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[queue\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert path in str(info.value) and "não é um TOML válido" in str(info.value)


def test_secret_from_file_with_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "crm_access_token").write_text("s3cr3t-token\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    path = write(
        tmp_path, '[crm]\naccess_token_file = "${CREDENTIALS_DIRECTORY}/crm_access_token"\n'
    )
    settings, _ = load_settings(path, secrets=ALL_SECRETS)
    assert settings.crm.access_token is not None
    assert settings.crm.access_token.get_secret_value() == "s3cr3t-token"
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings.model_dump())


def test_secret_file_problems_are_named(tmp_path: Path) -> None:
    path = write(tmp_path, f'[crm]\nsecret_access_token_file = "{tmp_path}/none"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, secrets=ALL_SECRETS)
    found = dict(info.value.problems)
    assert list(found) == ["crm.secret_access_token_file"]
    assert f"{tmp_path}/none" in found["crm.secret_access_token_file"]
    assert "o arquivo não existe" in found["crm.secret_access_token_file"]
    (tmp_path / "tok").write_text("x")
    found = problems(f'[crm]\naccess_token = "a"\naccess_token_file = "{tmp_path}/tok"\n', tmp_path)
    assert found == {"crm": "defina access_token ou access_token_file, não os dois"}


def test_commands_that_use_only_the_database_never_read_the_crms_secret_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = write(
        tmp_path,
        '[crm]\naccess_token_file = "${CREDENTIALS_DIRECTORY}/crm_access_token"\n'
        'secret_access_token_file = "${CREDENTIALS_DIRECTORY}/crm_secret_access_token"\n'
        '[admin]\ntoken_file = "${CREDENTIALS_DIRECTORY}/admin_token"\n',
    )
    settings, _ = load_settings(path)  # what migrate, status, retry... load
    assert settings.crm.access_token is None and settings.admin.token is None
    # Those that need them say why they cannot have them, and how to provide them.
    with pytest.raises(ConfigError) as info:
        load_settings(path, secrets=ALL_SECRETS)
    found = dict(info.value.problems)
    assert set(found) == {
        "crm.access_token_file",
        "crm.secret_access_token_file",
        "admin.token_file",
    }
    assert "só existe dentro da unit do systemd" in found["crm.access_token_file"]
    assert "CREDENTIALS_DIRECTORY=/etc/crmd/credentials crmd" in found["crm.access_token_file"]
    result = run_crmd("check-config", "--config", path)
    assert result.returncode == 78 and "CREDENTIALS_DIRECTORY=/etc/crmd" in result.stderr
    # A reload's check reads the file, not the secrets the unit started with.
    result = run_crmd("check-config", "--quiet", "--without-secrets", "--config", path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_per_loja_accounts(tmp_path: Path) -> None:
    settings, _ = load_settings(
        write(tmp_path, '[crm.lojas.2]\nbase_url = "https://other.example"\n')
    )
    assert settings.crm.account_name(2) == "loja-2"
    assert settings.crm.account_name(1) == "default"
    assert set(settings.crm.accounts()) == {"default", "loja-2"}
    assert settings.crm.accounts()["loja-2"].base_url == "https://other.example"


def test_redact_dsn_hides_every_form_of_password_libpq_takes() -> None:
    assert redact("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact("postgresql://u:p@ss@h/db") == "postgresql://u:***@h/db"
    assert redact("postgresql://u:pa?ss@h/db") == "postgresql://u:***@h/db"
    assert (
        redact("postgresql://u@h/db?sslmode=require&password=hunter2&sslpassword=k3y")
        == "postgresql://u@h/db?sslmode=require&password=***&sslpassword=***"
    )
    assert redact("host=db password=hunter2 user=u") == "host=db password=*** user=u"
    assert redact("host=db password='hun ter2' user=u") == "host=db password=*** user=u"


@pytest.mark.parametrize(
    ("dsn", "reason"),
    [
        ("postgresql://u@db:99999/erp", "a porta '99999' do host db não é uma porta"),
        ("postgresql://u@a:5432,b:0/erp", "a porta '0' do host b não é uma porta"),
        ("postgresql://u@db/erp?port=70000", "a porta '70000' do parâmetro port"),
        ("mysql://u@db/erp", "deve começar com postgresql://"),
    ],
)
def test_a_dsn_that_cannot_connect_is_refused_naming_the_problem(
    tmp_path: Path, dsn: str, reason: str
) -> None:
    found = problems(f'[database]\ndsn = "{dsn}"\n', tmp_path)
    assert list(found) == ["database.dsn"]
    assert reason in found["database.dsn"]


def test_an_empty_file_is_refused_rather_than_run_against_some_default_database(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "", dsn=False)
    found = problems_of(path)
    assert list(found) == ["database.dsn"] and "não definido" in found["database.dsn"]
    result = run_crmd("check-config", "--config", path)
    assert result.returncode == 78 and "database.dsn: não definido" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_without_crm_tokens_exits_78_naming_the_keys(tmp_path: Path) -> None:
    path = write(tmp_path, '[crm.lojas.2]\naccess_token = "a"\n')
    for command in (("check-config",), ("run", "--once")):
        result = run_crmd(*command, "--config", path)
        assert result.returncode == 78, (command, result.stderr)
        assert "Traceback" not in result.stderr
        for key in (
            "crm.access_token",
            "crm.secret_access_token",
            "crm.lojas.2.secret_access_token",
        ):
            assert f"{key}: o gestaoclick precisa dele" in result.stderr, (command, key)
        assert "crm.lojas.2.access_token:" not in result.stderr


def problems_of(path: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return dict(info.value.problems)


# --- the check-config command ----------------------------------------------------------------


def test_check_config_accepts_the_shipped_file_and_masks_secrets() -> None:
    result = run_crmd("check-config", "--config", str(REPO / "config.toml"))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["queue"]["batch_size"] == 100
    assert data["crm"]["access_token"] == "**********"
    assert "dev-access-token" not in result.stdout + result.stderr


def test_check_config_quiet_prints_nothing_for_a_good_file() -> None:
    result = run_crmd("check-config", "--quiet", "--config", str(REPO / "config.toml"))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_production_example_is_valid_and_takes_every_secret_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name in ("crm_access_token", "crm_secret_access_token", "admin_token"):
        (creds / name).write_text(f"{name}-value\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    settings, _ = load_settings(str(REPO / "config.example.toml"), secrets=ALL_SECRETS)
    assert settings.problems_for_run() == []
    assert settings.admin.token is not None
    assert settings.admin.token.get_secret_value() == "admin_token-value"
    text = (REPO / "config.example.toml").read_text()
    assert "access_token =" not in text and 'token = "' not in text


def test_check_config_rejects_a_broken_file_with_exit_78(tmp_path: Path) -> None:
    path = write(tmp_path, "[queue]\nbatch_size = 0\nmax_attempts = 2\nlease = 3\n")
    result = run_crmd("check-config", "--config", path)
    assert result.returncode == 78
    assert "queue.batch_size" in result.stderr
    assert "queue.lease: chave desconhecida" in result.stderr
    assert result.stdout == ""


def test_check_config_missing_file_exits_78_naming_it(tmp_path: Path) -> None:
    result = run_crmd("check-config", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 78
    assert "absent.toml" in result.stderr and "não existe" in result.stderr


def test_check_config_never_prints_a_database_password(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[database]\ndsn = "postgresql://crmd:hunter2@db/erp?password=hunter3"\n'
        '[crm]\naccess_token = "a"\nsecret_access_token = "b"\n',
    )
    result = run_crmd("check-config", "--config", path)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert "hunter3" not in result.stdout + result.stderr
    assert "postgresql://crmd:***@db/erp?password=***" in result.stdout
