"""`crmd map import`: link the ERP records the old system already created in the CRM.

The old system stored each record's CRM id in a column of the ERP's own tables. Importing those
ids into `crm_sync_map` makes crmd update those CRM records instead of creating them again. A
query per entity ([map_import] or the command line) returns `id` and `external_id` (and
`loja_id` when some lojas have CRM accounts of their own); rows are linked under the account the
engine sends that loja's records to. Running it again changes nothing; a row that would link
something already linked otherwise is reported and left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
import structlog

from crmd.config import Settings
from crmd.ops.checks import InvalidRequest
from crmd.store import erp, mapping

log = structlog.get_logger("crmd.ops")

ENTITIES = ("clientes", "produtos", "vendas")
"""What the old system created in the CRM (GestãoClick has no atividades)."""
EXAMPLES = 10
OK_VERDICTS = frozenset({"novo", "igual"})


@dataclass
class Problem:
    verdict: str
    row: dict[str, str | None]


@dataclass
class ImportResult:
    entidade: str
    dry_run: bool
    read: int = 0  # distinct rows of the query
    linked: int = 0  # new links (written, or to write on a dry run)
    unchanged: int = 0  # already linked to the same CRM record
    problems: dict[str, int] = field(default_factory=dict)  # verdict -> rows
    examples: list[Problem] = field(default_factory=list)

    @property
    def problem_count(self) -> int:
        return sum(self.problems.values())


def import_query(settings: Settings, entidade: str, query: str | None) -> str:
    """The query to import `entidade` with: the one given, else [map_import]'s."""
    if entidade not in ENTITIES:
        raise InvalidRequest(
            f"entidade {entidade!r} não pode ser importada; use {', '.join(ENTITIES)}"
        )
    chosen = (query or "").strip() or settings.map_import.query(entidade)
    if not chosen:
        raise InvalidRequest(
            f"sem consulta para {entidade}: defina [map_import] {entidade} (por exemplo "
            f'"SELECT id, external_id FROM {entidade} WHERE external_id IS NOT NULL") ou use '
            "--query"
        )
    return chosen


async def import_map(
    conn: asyncpg.Connection,
    settings: Settings,
    entidade: str,
    *,
    query: str | None = None,
    dry_run: bool = False,
) -> ImportResult:
    """Import one entity's links; InvalidRequest names what is wrong with the query."""
    sql = import_query(settings, entidade, query)
    where = "--query" if query else f"[map_import] {entidade}"
    try:
        found = await erp.columns(conn, sql)
    except asyncpg.PostgresError as exc:
        raise InvalidRequest(
            f"a consulta de {entidade} ({where}) foi recusada pelo banco: {exc}"
        ) from None
    own = {loja: settings.crm.account_name(loja) for loja in sorted(settings.crm.lojas)}
    needed = ["id", "external_id"] + (["loja_id"] if own else [])
    missing = [c for c in needed if c not in found]
    if missing:
        why = " (há lojas com conta própria em [crm.lojas])" if own and "loja_id" in missing else ""
        raise InvalidRequest(
            f"a consulta de {entidade} ({where}) não traz a(s) coluna(s) {', '.join(missing)}"
            f"{why}; ela traz: {', '.join(found) or 'nenhuma'}"
        )
    try:
        verdicts = await mapping.import_links(
            conn, sql, entidade, own, loja_required=bool(own), dry_run=dry_run, examples=EXAMPLES
        )
    except asyncpg.UniqueViolationError:
        raise InvalidRequest(
            f"um vínculo de {entidade} foi gravado por outro processo durante a importação (o "
            "daemon está rodando?); nada foi importado: rode de novo"
        ) from None
    except asyncpg.PostgresError as exc:
        raise InvalidRequest(f"a consulta de {entidade} ({where}) falhou: {exc}") from None
    result = ImportResult(entidade, dry_run)
    for v in verdicts:
        result.read += v.count
        if v.verdict == "novo":
            result.linked = v.count if dry_run else v.written
        elif v.verdict == "igual":
            result.unchanged = v.count
        else:
            result.problems[v.verdict] = v.count
            result.examples += [Problem(v.verdict, row) for row in v.examples]
    log.info(
        "map_imported",
        entidade=entidade,
        read=result.read,
        linked=result.linked,
        unchanged=result.unchanged,
        problems=result.problem_count,
        dry_run=dry_run,
    )
    return result


def describe(entidade: str, problem: Problem) -> str:
    """One problem row, in the operator's words."""
    row = problem.row
    ident, ext = row.get("id"), row.get("external_id")
    owner, linked = row.get("owner"), row.get("linked_to")
    if problem.verdict == "id_invalido":
        return f"id {ident!r} não é um número inteiro (external_id {ext!r})"
    if problem.verdict == "external_id_invalido":
        return f"{entidade} {ident}: external_id {ext!r} não é um id do GestãoClick (só dígitos)"
    if problem.verdict == "sem_loja":
        return (
            f"{entidade} {ident}: loja_id {row.get('loja_id')!r} não é uma loja (com contas por "
            "loja em [crm.lojas], cada linha precisa da sua)"
        )
    if problem.verdict == "duplicado":
        return (
            f"{entidade} {ident} -> {ext}: a consulta liga este registro, ou este id do CRM, "
            "mais de uma vez; nada foi vinculado"
        )
    if problem.verdict == "divergente":
        return (
            f"{entidade} {ident} já está vinculado ao registro {linked} do CRM (conta "
            f"{row.get('conta')}); mantido, {ext} ignorado"
        )
    if problem.verdict == "ocupado":
        return (
            f"o registro {ext} do CRM já está vinculado a {entidade} {owner} (conta "
            f"{row.get('conta')}); {entidade} {ident} não foi vinculado"
        )
    return f"{entidade} {ident} -> {ext}: {problem.verdict}"
