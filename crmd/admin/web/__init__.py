"""The dashboard page: rendered on the server from the status report, refreshed by app.js.

The first paint needs no JavaScript (an operator on a slow phone sees numbers at once); app.js
then re-renders the same panels from `/api/status` every few seconds and drives the buttons.
Labels are Portuguese, the users' language. Every value from the database is escaped.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from importlib import resources
from string import Template

from crmd.model import ENTITIES
from crmd.ops.status import (
    AccountReport,
    ErrorReport,
    QueueReport,
    StatusReport,
    TimerReport,
    UncertainReport,
    format_age,
)

ENTITY_LABELS = {e: e.capitalize() for e in ENTITIES}
TIMER_LABELS = {"cleanup": "Limpeza", "full_sync": "Sincronização completa"}
WINDOW_LABELS = {1.0: "por segundo", 60.0: "por minuto", 3600.0: "por hora", 86400.0: "por dia"}
CONTENT_TYPES = {"app.js": "text/javascript", "style.css": "text/css"}


def _read(name: str) -> str:
    return resources.files("crmd.admin.web").joinpath(name).read_text(encoding="utf-8")


def asset(name: str) -> tuple[bytes, str] | None:
    """A static file of the page (only the known ones, never a path from the request)."""
    content_type = CONTENT_TYPES.get(name)
    if content_type is None:
        return None
    return _read(name).encode(), content_type


def render_page(report: StatusReport | None) -> str:
    """The whole page; `report` None when the database could not be read."""
    page = Template(_read("index.html"))
    if report is None:
        empty = '<p class="vazio">Banco de dados indisponível.</p>'
        return page.substitute(
            cards=empty,
            fila="",
            contas="",
            agendamentos="",
            erros="",
            incertas="",
            incertas_oculta=" hidden",
            atualizado="—",
        )
    return page.substitute(
        cards=cards(report),
        fila=queue_table(report.queue),
        contas=accounts(report.accounts),
        agendamentos=timers(report.timers),
        erros=errors(report.recent_errors),
        incertas=uncertain(report.uncertain_creates),
        incertas_oculta="" if report.uncertain_creates else " hidden",
        atualizado=escape(_when(report.generated_at)),
    )


def _when(iso: str | None) -> str:
    if not iso:
        return "—"
    moment = datetime.fromisoformat(iso)
    return moment.strftime("%d/%m/%Y %H:%M:%S %Z").strip()


def age(seconds: float | None) -> str:
    return "nenhum" if seconds is None else format_age(seconds)


def _card(label: str, value: str, field: str, warn: bool = False) -> str:
    cls = "card alerta" if warn else "card"
    return (
        f'<div class="{cls}"><span class="rotulo">{escape(label)}</span>'
        f'<span class="valor" data-field="{field}">{escape(value)}</span></div>'
    )


def cards(report: StatusReport) -> str:
    q, day, hour = report.queue, report.last_24h, report.last_hour
    rate = day.success_rate
    return "".join(
        [
            _card("Pendentes", str(q.pending_total), "pending_total"),
            _card("Em processamento", str(q.in_flight_total), "in_flight_total"),
            _card("Falhas", str(q.failed_total), "failed_total", q.failed_total > 0),
            _card(
                "Sucesso (24 h)",
                "—" if rate is None else f"{rate:.1%}".replace(".", ","),
                "success_rate",
                rate is not None and rate < 0.9,
            ),
            _card("Enviados na última hora", str(hour.succeeded), "last_hour"),
            _card("Pendente mais antigo", age(q.oldest_pending_age_seconds), "oldest"),
        ]
    )


def queue_table(q: QueueReport) -> str:
    rows = "".join(
        f"<tr><th scope=row>{label}</th><td>{q.pending[e]}</td><td>{q.in_flight[e]}</td>"
        f"<td>{q.failed[e]}</td></tr>"
        for e, label in ENTITY_LABELS.items()
    )
    return (
        "<table><thead><tr><th>Entidade</th><th>Pendentes</th><th>Processando</th>"
        f"<th>Falhas</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def window(per_seconds: float) -> str:
    return WINDOW_LABELS.get(float(per_seconds), f"em {per_seconds:g} s")


def accounts(items: list[AccountReport] | None) -> str:
    if not items:
        return '<p class="vazio">Nenhuma conta conhecida (o daemon informa as contas).</p>'
    out = []
    for a in items:
        state = (
            f'<span class="pausada">Pausada até {escape(_when(a.paused_until))}: '
            f"{escape(a.reason or '')}</span>"
            if a.paused
            else '<span class="ativa">Ativa</span>'
        )
        meters = "".join(
            f'<div class="uso"><span>{window(lim.per_seconds)}: {lim.used} de '
            f'{lim.requests}</span><meter min="0" max="{lim.requests}" '
            f'value="{lim.used}"></meter></div>'
            for lim in a.limits
        )
        out.append(f'<div class="conta"><h3>{escape(a.name)} {state}</h3>{meters}</div>')
    return "".join(out)


def timers(items: list[TimerReport] | None) -> str:
    if not items:
        return '<p class="vazio">Nenhum agendamento conhecido.</p>'
    rows = "".join(
        f"<tr><th scope=row>{escape(TIMER_LABELS.get(t.name, t.name))}</th>"
        f"<td>{escape(_when(t.last_run) if t.last_run else 'nunca')}</td>"
        f"<td>{escape(_when(t.next_run))}</td></tr>"
        for t in items
    )
    return (
        "<table><thead><tr><th>Agendamento</th><th>Última execução</th>"
        f"<th>Próxima execução</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def uncertain(items: list[UncertainReport]) -> str:
    rows = "".join(
        f"<tr><td>{escape(ENTITY_LABELS.get(u.entidade, u.entidade))} {u.entidade_id}</td>"
        f"<td>{escape(u.conta)}</td><td>{escape(u.chave or '—')}</td>"
        f"<td>{escape(_when(u.since))}</td></tr>"
        for u in items
    )
    return (
        "<table><thead><tr><th>Registro</th><th>Conta</th><th>Chave</th><th>Desde</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
    )


def errors(items: list[ErrorReport]) -> str:
    if not items:
        return '<p class="vazio">Nenhum erro recente.</p>'
    rows = "".join(
        f"<tr><td>{escape(_when(e.criado_em))}</td>"
        f"<td>{escape(ENTITY_LABELS.get(e.entidade, e.entidade))} {e.entidade_id} "
        f"(loja {e.loja_id})</td>"
        f"<td>{'HTTP ' + str(e.http_status) + ': ' if e.http_status else ''}"
        f"{escape(e.mensagem or '')}</td></tr>"
        for e in items
    )
    return (
        "<table><thead><tr><th>Quando</th><th>Registro</th><th>Mensagem</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
