"""`crmd doctor`: everything a first sync needs, checked one by one before it starts.

The configuration's credentials, the database and crmd's schema, each CRM account (which base
URL answers for its tokens, whether the situações and lojas the config names exist in it) and
every query of [sources] and [map_import] (it runs against this database; the columns it gives
are the ones crmd can send). Each check ends ok or with a problem that says what to change; the
CRM checks cost a few requests of each account's budget (a probe per base URL, the lists of
situações and lojas). Nothing is written anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import asyncpg

from crmd.config import CrmAccountSettings, Settings
from crmd.crm.errors import CrmError
from crmd.crm.providers.base import Provider
from crmd.crm.providers.gestaoclick import KNOWN_BASE_URLS
from crmd.model import ENTITIES
from crmd.ops import account
from crmd.ops.map_import import ENTITIES as IMPORTED
from crmd.store import db, erp, migrate
from crmd.store.db import DB_ERRORS

LISTING_COLUMNS = ("loja_id", "id", "data")


@dataclass
class Check:
    """One thing checked: `ok`, what it was and what was found; `notes` add detail lines."""

    subject: str
    ok: bool
    message: str
    notes: list[str] = field(default_factory=list)


Emit = Callable[[Check], None]


@dataclass
class _Run:
    settings: Settings
    emit: Emit
    checks: list[Check] = field(default_factory=list)
    columns: Callable[[str, Iterable[str]], list[str]] | None = None

    def add(self, subject: str, ok: bool, message: str, notes: list[str] | None = None) -> None:
        check = Check(subject, ok, message, notes or [])
        self.checks.append(check)
        self.emit(check)


async def diagnose(settings: Settings, emit: Emit = lambda _: None) -> list[Check]:
    """Every check, each handed to `emit` as soon as it is done (some take seconds)."""
    run = _Run(settings, emit)
    for key, reason in settings.problems_for_run():
        run.add("configuração", False, f"{key}: {reason}")
    conn = await _database(run)
    try:
        for name, acct in account.accounts(settings).items():
            await _account(run, name, acct, conn)
        if conn is not None:
            await _sources(run, conn)
    finally:
        if conn is not None:
            await conn.close()
    return run.checks


async def _database(run: _Run) -> asyncpg.Connection | None:
    """A connection when the database answers and holds crmd's current schema."""
    try:
        conn = await db.connect(run.settings.database)
    except db.DatabaseUnavailable as exc:
        run.add("banco de dados", False, f"{exc}")
        return None
    run.add("banco de dados", True, "conecta")
    try:
        missing = await migrate.pending(conn)
    except DB_ERRORS as exc:
        run.add("esquema do crmd", False, f"não foi possível ler: {exc}")
        await conn.close()
        return None
    if missing:
        names = ", ".join(map(str, missing))
        run.add("esquema do crmd", False, f"faltam as migrações {names}: rode crmd migrate")
    else:
        run.add("esquema do crmd", True, "atualizado")
    return conn


# --- CRM accounts ---------------------------------------------------------------------------


def candidate_urls(base_url: str) -> list[str]:
    """The base URLs worth probing, the configured one first: both known GestãoClick hosts with
    and without /api when it is one of them, else it and its host's root, with and without
    /api."""
    base = base_url.rstrip("/")
    bare = base.removesuffix("/api")
    known = {urlsplit(u).netloc for u in KNOWN_BASE_URLS}
    if urlsplit(base).netloc in known:
        return [base, *(u for u in KNOWN_BASE_URLS if u != base)]
    parts = urlsplit(base)
    origin = f"{parts.scheme}://{parts.netloc}"
    found = [base, bare, bare + "/api", origin, origin + "/api"]
    return list(dict.fromkeys(found))


async def _account(
    run: _Run, name: str, acct: CrmAccountSettings, conn: asyncpg.Connection | None
) -> None:
    subject = f"conta {name}"
    if account.missing_tokens(acct):
        return  # reported with the configuration; the account cannot be asked anything
    try:
        async with account.opened(name, acct, conn) as provider:
            if run.columns is None:
                run.columns = provider.check_columns
            if await _probes(run, name, provider, acct.base_url):
                await _mappings(run, subject, name, acct, provider)
    except account.AccountUnavailable as exc:
        run.add(subject, False, str(exc).removeprefix(f"{subject}: "))


async def _probes(run: _Run, name: str, provider: Provider, base_url: str) -> bool:
    """Which base URL answers for the tokens; True when the configured one does."""
    subject = f"conta {name}"
    probes = [await provider.probe(url) for url in candidate_urls(base_url)]
    notes = [f"{p.base_url}: {p.message}" for p in probes]
    configured, others = probes[0], [p for p in probes[1:] if p.accepted]
    key = f"[{account.section(name)}] base_url"
    if configured.accepted:
        run.add(subject, True, f"{configured.base_url} responde e aceita os tokens", notes)
        return True
    if others:
        better = ", ".join(p.base_url for p in others)
        message = (
            f"{key} = {configured.base_url!r} {configured.message}; aceita(m) os tokens: {better}"
        )
    else:
        message = f"nenhuma URL aceitou os tokens ({key} = {configured.base_url!r})"
    run.add(subject, False, message, notes)
    return False


async def _mappings(
    run: _Run, subject: str, name: str, acct: CrmAccountSettings, provider: Provider
) -> None:
    """The account's own ids the config names (situações, lojas) exist in the account."""
    try:
        problems = await provider.check_account()
    except CrmError as exc:
        run.add(subject, False, f"não foi possível ler situações e lojas: {exc.message}")
        return
    if run.settings.sync.on_delete == "inactivate" and not acct.venda_situacao_cancelada_id:
        problems.append(
            f"[{account.section(name)}] venda_situacao_cancelada_id está vazio e [sync] "
            'on_delete = "inactivate": uma venda excluída no ERP vai falhar (defina a situação '
            'de cancelamento, ou on_delete = "delete" ou "ignore")'
        )
    for problem in problems:
        run.add(subject, False, problem)
    if not problems:
        lojas = f" e {len(acct.lojas_crm)} loja(s)" if acct.lojas_crm else ""
        run.add(subject, True, f"as situações{lojas} do config existem na conta")


# --- queries ----------------------------------------------------------------------------------


async def _sources(run: _Run, conn: asyncpg.Connection) -> None:
    sources = run.settings.sources
    for entidade in ENTITIES:
        key = f"[sources] {entidade}"
        if not sources.load_query(entidade):
            key += " (a consulta padrão, do esquema de referência)"
        try:
            found = await erp.probe_load(conn, entidade, sources)
        except DB_ERRORS as exc:
            run.add(key, False, f"não roda: {exc}")
            continue
        problems = [] if "id" in found else ["falta a coluna id"]
        if run.columns is not None:
            problems += [p.split(": ", 1)[-1] for p in run.columns(entidade, found)]
        _report(run, key, found, problems)
    listings: list[tuple[str, str, tuple[str, ...]]] = [
        (f"[sources] {e}_enqueue", erp.listing(e, sources), LISTING_COLUMNS) for e in ENTITIES
    ]
    listings.append(("[sources] lojas", erp.lojas_listing(sources), ("id",)))
    own = bool(run.settings.crm.lojas)
    for entidade in IMPORTED:
        query = run.settings.map_import.query(entidade)
        if query:
            wanted = ("id", "external_id", *(("loja_id",) if own else ()))
            listings.append((f"[map_import] {entidade}", query, wanted))
    for key, listing, wanted in listings:
        default = key.startswith("[sources]") and not _configured(run.settings, key)
        label = key + (" (a consulta padrão, do esquema de referência)" if default else "")
        try:
            found = await erp.probe_listing(conn, listing)
        except DB_ERRORS as exc:
            run.add(label, False, f"não roda: {exc}")
            continue
        missing = [c for c in wanted if c not in found]
        _report(run, label, found, [f"falta a coluna {c}" for c in missing])


def _configured(settings: Settings, key: str) -> str:
    name = key.removeprefix("[sources] ")
    return str(getattr(settings.sources, name))


def _report(run: _Run, key: str, found: list[str], problems: list[str]) -> None:
    if problems:
        for problem in problems:
            run.add(key, False, problem)
    else:
        run.add(key, True, f"roda; colunas {', '.join(found)}")
