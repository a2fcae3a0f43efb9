"""Configuration: one TOML file, overridden by `CRMD_*` environment variables.

Every section forbids unknown keys, so a typo in the file or in an environment variable is an error
that names the key instead of a setting silently left at its default.
"""

from __future__ import annotations

import os
import re
import tomllib
import zoneinfo
from pathlib import Path
from typing import Any, Literal, Self

from croniter import croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from crmd import dsn as libpq
from crmd.model import ENTITIES, Entity, RetryPolicy

DEFAULT_CONFIG_PATH = Path("/etc/crmd/config.toml")
_PARAMETER = re.compile(r"\$\d")


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` holds (key path, reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {reason}" for key, reason in problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def _check_secret_pairs(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) is not None and getattr(self, f"{name}_file") is not None:
                raise ValueError(f"defina {name} ou {name}_file, não os dois")

    def _read_secret_files(self, prefix: str, *names: str) -> list[tuple[str, str]]:
        """Fill `name` from `name_file`, when asked for (see `Settings.read_secrets`): a
        command that does not need a secret never reads its file. Returns the problems."""
        problems = []
        for name in names:
            file: str | None = getattr(self, f"{name}_file")
            if file is None or getattr(self, name) is not None:
                continue
            try:
                text = read_secret_file(file)
            except ValueError as exc:
                problems.append((f"{prefix}.{name}_file", str(exc)))
                continue
            object.__setattr__(self, name, SecretStr(text))
        return problems


_UNSET_VAR = re.compile(r"\$\{?(\w+)\}?")


def read_secret_file(file: str) -> str:
    """A secret's file (environment variables such as $CREDENTIALS_DIRECTORY expanded); a
    ValueError says what to do when it cannot be read."""
    path_text = os.path.expandvars(file)
    unset = _UNSET_VAR.search(path_text)
    if unset and unset[1] == "CREDENTIALS_DIRECTORY":
        raise ValueError(
            f"{file}: $CREDENTIALS_DIRECTORY não está definido; ele só existe dentro da unit do "
            "systemd (LoadCredential=). Fora dela, aponte para os arquivos, como root: "
            "CREDENTIALS_DIRECTORY=/etc/crmd/credentials crmd ..."
        )
    if unset:
        raise ValueError(f"{file}: a variável ${unset[1]} não está definida")
    path = Path(path_text)
    try:
        text = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"não foi possível ler {path}: {_os_reason(exc)}") from None
    if not text:
        raise ValueError(f"{path} está vazio")
    return text


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "o arquivo não existe"
    if isinstance(exc, PermissionError):
        return "permissão negada"
    if isinstance(exc, IsADirectoryError):
        return "é uma pasta"
    return exc.strerror or type(exc).__name__


class DatabaseSettings(_Section):
    dsn: str = ""  # no default: a forgotten DSN must not quietly reach some other database
    password: SecretStr | None = None
    password_file: str | None = None
    pool_min_size: int = Field(1, ge=0)
    pool_max_size: int = Field(10, ge=1)
    connect_timeout_seconds: float = Field(10.0, gt=0)

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, value: str) -> str:
        return libpq.check(value) if value else value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool_min_size não pode passar de pool_max_size")
        self._check_secret_pairs("password")
        return self


class QueueSettings(_Section):
    batch_size: int = Field(100, ge=1, le=10_000)
    lease_seconds: float = Field(300.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    retry_initial_delay_seconds: float = Field(2.0, ge=0)
    retry_multiplier: float = Field(2.0, ge=1)
    retry_max_delay_seconds: float = Field(3600.0, gt=0)
    retry_jitter: float = Field(0.1, ge=0, le=1)
    poll_interval_seconds: float = Field(30.0, gt=0)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            self.max_attempts,
            self.retry_initial_delay_seconds,
            self.retry_multiplier,
            self.retry_max_delay_seconds,
            self.retry_jitter,
        )


class RateLimit(_Section):
    requests: int = Field(gt=0)
    per_seconds: float = Field(gt=0)


DEFAULT_LIMITS = (
    RateLimit(requests=3, per_seconds=1),
    RateLimit(requests=100, per_seconds=60),
    RateLimit(requests=30_000, per_seconds=86_400),
)


class CrmAccountSettings(_Section):
    """One CRM account: where to send, with which credentials, under which limits, and how the
    ERP's situações and lojas translate to the account's own ids."""

    provider: Literal["gestaoclick"] = "gestaoclick"
    base_url: str = "https://api.gestaoclick.com"
    access_token: SecretStr | None = None
    access_token_file: str | None = None
    secret_access_token: SecretStr | None = None
    secret_access_token_file: str | None = None
    limits: tuple[RateLimit, ...] = DEFAULT_LIMITS
    limit_margin_seconds: float = Field(0.0, ge=0, le=10)
    bulk_share: float = Field(0.5, gt=0, le=1)
    concurrency: int = Field(4, ge=1, le=256)
    venda_situacao_id: str = ""
    venda_situacao_cancelada_id: str = ""
    situacoes: dict[str, str] = Field(default_factory=dict)
    lojas_crm: dict[int, str] = Field(default_factory=dict)
    venda_codigo_prefix: str = "crmd-"
    produto_valor_tipo_id: str = ""
    timeout_seconds: float = Field(30.0, gt=0)
    connect_timeout_seconds: float = Field(10.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("deve começar com http:// ou https://")
        return value.rstrip("/")

    @field_validator("venda_situacao_id", "venda_situacao_cancelada_id", "produto_valor_tipo_id")
    @classmethod
    def _optional_id(cls, value: str) -> str:
        value = value.strip()
        if value and not value.isdigit():
            raise ValueError(f"{value!r} não é um id do GestãoClick (dígitos, ou vazio)")
        return value

    @field_validator("situacoes")
    @classmethod
    def _situacoes(cls, value: dict[str, str]) -> dict[str, str]:
        for key, crm_id in value.items():
            if not key.strip():
                raise ValueError("uma situação vazia do ERP não pode ser mapeada")
            if not crm_id.strip().isdigit():
                raise ValueError(
                    f"{key}: {crm_id!r} não é um id de situação do GestãoClick (dígitos)"
                )
        return {key: crm_id.strip() for key, crm_id in value.items()}

    @field_validator("lojas_crm")
    @classmethod
    def _lojas_crm(cls, value: dict[int, str]) -> dict[int, str]:
        for loja, crm_id in value.items():
            if not crm_id.strip().isdigit():
                raise ValueError(
                    f"loja {loja} do ERP: {crm_id!r} não é um id de loja do GestãoClick (dígitos)"
                )
        return {loja: crm_id.strip() for loja, crm_id in value.items()}

    @field_validator("venda_codigo_prefix")
    @classmethod
    def _codigo_prefix(cls, value: str) -> str:
        # GestãoClick numbers vendas 1, 2, 3...: a prefix with a non-digit can never be one.
        if value and (value.isdigit() or any(c.isspace() for c in value) or len(value) > 20):
            raise ValueError(
                "precisa ter um caractere que não seja dígito, nenhum espaço e no máximo 20 "
                "caracteres (ou ficar vazio: nenhum codigo é enviado e vendas não são procuradas)"
            )
        return value

    @field_validator("limits")
    @classmethod
    def _limits(cls, value: tuple[RateLimit, ...]) -> tuple[RateLimit, ...]:
        if not value:
            raise ValueError("é preciso ao menos uma entrada [[crm.limits]]")
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        self._check_secret_pairs("access_token", "secret_access_token")
        return self


class CrmSettings(CrmAccountSettings):
    """The default account, plus accounts of their own for some lojas (`[crm.lojas.N]`)."""

    lojas: dict[int, CrmAccountSettings] = Field(default_factory=dict)

    def account_name(self, loja_id: int) -> str:
        return f"loja-{loja_id}" if loja_id in self.lojas else "default"

    def accounts(self) -> dict[str, CrmAccountSettings]:
        named: dict[str, CrmAccountSettings] = {"default": self}
        named.update({f"loja-{loja}": acct for loja, acct in self.lojas.items()})
        return named


class SyncSettings(_Section):
    # A record deleted in the ERP: its CRM record is made inactive (clientes and produtos
    # `ativo` "0", vendas the account's cancel situação), deleted, or left as it is.
    on_delete: Literal["inactivate", "delete", "ignore"] = "inactivate"
    # An item of an entity the CRM has no resource for: done as "ignorado", or failed.
    on_unsupported: Literal["ignore", "fail"] = "ignore"
    skip_unchanged: bool = True
    lookup_unknown: bool = True
    dependency_wait_seconds: float = Field(2.0, ge=0)
    max_dependency_waits: int = Field(30, ge=1)
    auth_pause_seconds: float = Field(60.0, gt=0)
    failure_pause_seconds: float = Field(30.0, gt=0)
    max_pause_seconds: float = Field(900.0, gt=0)
    breaker_threshold: int = Field(5, ge=1)
    shutdown_timeout_seconds: float = Field(30.0, ge=0)


class SourcesSettings(_Section):
    """How crmd reads the ERP: one query per job, empty for the reference schema's (see
    `crmd/store/sql/erp.sql`).

    `<entidade>`: the rows of the records whose ids are in $1 (an array), with the columns the
    provider maps. `<entidade>_enqueue`: every record `crmd enqueue` and the full sync put in
    the queue, as columns `loja_id`, `id` and `data` (the date `--since` filters on), with no
    parameters: crmd adds the filters and reads it in chunks. `lojas`: every loja's `id`.
    """

    clientes: str = ""
    produtos: str = ""
    vendas: str = ""
    atividades: str = ""
    clientes_enqueue: str = ""
    produtos_enqueue: str = ""
    vendas_enqueue: str = ""
    atividades_enqueue: str = ""
    lojas: str = ""

    @field_validator(*ENTITIES)
    @classmethod
    def _load_query(cls, value: str) -> str:
        if value and "$1" not in value:
            raise ValueError("a consulta deve filtrar por $1, a lista de ids a carregar")
        return value

    @field_validator(*(f"{e}_enqueue" for e in ENTITIES), "lojas")
    @classmethod
    def _listing_query(cls, value: str) -> str:
        if _PARAMETER.search(value):
            raise ValueError(
                "a consulta não recebe parâmetros ($1...): o crmd acrescenta os filtros"
            )
        return value

    def load_query(self, entidade: str) -> str | None:
        """The configured query that loads records by id, None for the default."""
        return str(getattr(self, entidade)) or None

    def enqueue_query(self, entidade: str) -> str | None:
        """The configured query that lists the records to enqueue, None for the default."""
        return str(getattr(self, f"{entidade}_enqueue")) or None

    def lojas_query(self) -> str | None:
        return self.lojas or None


class MapImportSettings(_Section):
    """`crmd map import`: per entity, a query over the ERP's own tables returning `id` (the ERP
    record) and `external_id` (the CRM id the old system stored), and `loja_id` when some lojas
    have CRM accounts of their own; no parameters."""

    clientes: str = ""
    produtos: str = ""
    vendas: str = ""

    @field_validator("clientes", "produtos", "vendas")
    @classmethod
    def _query(cls, value: str) -> str:
        if _PARAMETER.search(value):
            raise ValueError("the query takes no parameters ($1...)")
        return value.strip()

    def query(self, entidade: str) -> str | None:
        return str(getattr(self, entidade, "")) or None


class CleanupSettings(_Section):
    log_retention_days: int = Field(30, ge=1)
    queue_retention_days: int = Field(7, ge=1)
    batch_size: int = Field(5000, ge=1)


class ScheduleSettings(_Section):
    timezone: str = "America/Sao_Paulo"
    cleanup: str = "0 3 * * *"
    full_sync: str = "0 2 * * 0"
    full_sync_entities: tuple[Entity, ...] = ("clientes",)
    full_sync_priority: int = 1

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"fuso horário desconhecido {value!r}") from None
        return value

    @field_validator("cleanup", "full_sync")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(
                f"{value!r} não é uma expressão cron (minuto hora dia mês dia-da-semana)"
            )
        return value


class AdminSettings(_Section):
    listen: str = "127.0.0.1:9464"
    token: SecretStr | None = None
    token_file: str | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value:
            split_hostport(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        self._check_secret_pairs("token")
        return self


def split_hostport(value: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) as (host, port); port 0 picks a free one. ValueError
    naming the value otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} não é HOST:PORTA (vazio desliga)")
    return host.strip("[]"), int(port)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json", "journal"] = "auto"
    summary_interval_seconds: float = Field(60.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CRMD_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    database: DatabaseSettings = DatabaseSettings()
    queue: QueueSettings = QueueSettings()
    crm: CrmSettings = CrmSettings()
    sync: SyncSettings = SyncSettings()
    sources: SourcesSettings = SourcesSettings()
    map_import: MapImportSettings = MapImportSettings()
    cleanup: CleanupSettings = CleanupSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    admin: AdminSettings = AdminSettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment overrides it, key by key.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _required(self) -> Self:
        if not self.database.dsn:
            raise ValueError("database.dsn: não definido ([database] dsn, ou CRMD_DATABASE__DSN)")
        return self

    def read_secrets(self, *parts: SecretPart) -> None:
        """Read the `*_file` secrets of `parts` ("database", "crm", "admin"); ConfigError names
        each one that cannot be read and says how to provide it. Reading is left to the commands
        that need a secret, so `crmd status` on a host where the CRM's tokens exist only inside
        the unit ($CREDENTIALS_DIRECTORY) still works."""
        problems: list[tuple[str, str]] = []
        if "database" in parts:
            problems += self.database._read_secret_files("database", "password")
        if "crm" in parts:
            for prefix, acct in self._accounts():
                problems += acct._read_secret_files(prefix, "access_token", "secret_access_token")
        if "admin" in parts:
            problems += self.admin._read_secret_files("admin", "token")
        if problems:
            raise ConfigError(problems)

    def _accounts(self) -> list[tuple[str, CrmAccountSettings]]:
        accounts: list[tuple[str, CrmAccountSettings]] = [("crm", self.crm)]
        accounts += [(f"crm.lojas.{n}", acct) for n, acct in sorted(self.crm.lojas.items())]
        return accounts

    def problems_for_run(self) -> list[tuple[str, str]]:
        """What syncing needs beyond a valid file, as (key, reason): each account's credentials,
        inline or as a file (`read_secrets("crm")` reads the files). Commands that only read the
        database do not ask for them."""
        problems = []
        for prefix, acct in self._accounts():
            for key in ("access_token", "secret_access_token"):
                if getattr(acct, key) is None and getattr(acct, f"{key}_file") is None:
                    problems.append(
                        (
                            f"{prefix}.{key}",
                            f"o {acct.provider} precisa dele: defina {key} ou {key}_file",
                        )
                    )
        return problems


SecretPart = Literal["database", "crm", "admin"]
ALL_SECRETS: tuple[SecretPart, ...] = ("database", "crm", "admin")
"""What the daemon and `check-config` read; other commands read only the database's."""


def resolve_path(explicit: str | None) -> tuple[Path, bool]:
    """The config file to read and whether someone asked for it (then it must exist)."""
    if explicit:
        return Path(explicit), True
    from_env = os.environ.get("CRMD_CONFIG")
    if from_env:
        return Path(from_env), True
    return DEFAULT_CONFIG_PATH, False


def load_settings(
    explicit_path: str | None = None, *, secrets: tuple[SecretPart, ...] = ("database",)
) -> tuple[Settings, Path | None]:
    """Read and validate the whole configuration, and the secret files of `secrets`; returns
    it and the file it came from."""
    path, required = resolve_path(explicit_path)
    data: dict[str, Any] = {}
    source: Path | None = None
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
        source = path
    except FileNotFoundError:
        if required:
            raise ConfigError([("config", f"o arquivo {path} não existe")]) from None
    except OSError as exc:
        raise ConfigError([("config", f"não foi possível ler {path}: {_os_reason(exc)}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("config", f"{path} não é um TOML válido: {exc}")]) from None
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None
    settings.read_secrets(*secrets)
    return settings, source


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        key = ""
        for part in err["loc"]:
            key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
        msg = _message(err["type"], err["msg"], err.get("ctx") or {})
        # Section validators say "field: reason"; fold the field into the key path.
        field, sep, reason = msg.partition(": ")
        if sep and all(part.isidentifier() for part in field.split(".")):
            key, msg = f"{key}.{field}" if key else field, reason
        problems.append((key or "config", msg))
    return problems


_MESSAGES = {
    "missing": "obrigatório",
    "extra_forbidden": "chave desconhecida (confira a grafia)",
    "greater_than": "deve ser maior que {gt}",
    "greater_than_equal": "deve ser maior ou igual a {ge}",
    "less_than": "deve ser menor que {lt}",
    "less_than_equal": "deve ser menor ou igual a {le}",
    "int_parsing": "deve ser um número inteiro",
    "int_type": "deve ser um número inteiro",
    "int_from_float": "deve ser um número inteiro",
    "float_parsing": "deve ser um número",
    "float_type": "deve ser um número",
    "bool_parsing": "deve ser true ou false",
    "bool_type": "deve ser true ou false",
    "string_type": "deve ser um texto (entre aspas)",
    "list_type": "deve ser uma lista",
    "tuple_type": "deve ser uma lista",
    "dict_type": "deve ser uma seção (tabela TOML)",
    "model_type": "deve ser uma seção (tabela TOML)",
    "model_attributes_type": "deve ser uma seção (tabela TOML)",
}


def _message(kind: str, english: str, ctx: dict[str, Any]) -> str:
    """Pydantic's message in the operators' language; our validators' own already are."""
    if kind == "value_error":
        return english.removeprefix("Value error, ")
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace(" or ", " ou ")
        return f"deve ser {expected}"
    template = _MESSAGES.get(kind)
    if template is None:
        return f"valor inválido ({kind})"
    return template.format(**{k: ctx.get(k) for k in ("gt", "ge", "lt", "le")})


def effective(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret masked."""
    data = settings.model_dump(mode="json")
    data["database"]["dsn"] = libpq.redact(settings.database.dsn)
    return data
