"""The dashboard and a record's page: rendered on the server from the status report (and the
record's history), refreshed by app.js.

The first paint needs no JavaScript (an operator on a slow phone sees numbers at once); app.js
then re-renders the same panels from `/api/status` every few seconds, with the same pt-BR
numbers and the same times in the report's zone, and drives the buttons. The chart is SVG drawn
here (`chart.py`). Every value from the database is escaped.
"""

from __future__ import annotations

import json
from html import escape
from importlib import resources
from string import Template

from crmd import ptbr
from crmd.model import ENTITIES
from crmd.ops.history import AttemptReport, RecordHistory
from crmd.ops.schedule import TIMER_LABELS
from crmd.ops.status import (
    AccountReport,
    ErrorReport,
    InstanceReport,
    QueueReport,
    StatusReport,
    TimerReport,
    UncertainReport,
    drain_text,
)

ENTITY_LABELS = {e: e.capitalize() for e in ENTITIES}
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


def record_url(entidade: str, entidade_id: int) -> str:
    return f"/registro/{escape(entidade)}/{int(entidade_id)}"


def render_page(report: StatusReport | None, chart: str = "") -> str:
    """The whole page; `report` None when the database could not be read."""
    page = Template(_read("index.html"))
    if report is None:
        empty = '<p class="vazio">Banco de dados indisponível.</p>'
        return page.substitute(
            cards=empty,
            grafico=chart,
            fila="",
            contas="",
            agendamentos="",
            erros="",
            incertas="",
            incertas_oculta=" hidden",
            instancias="",
            atualizado="—",
            fuso="UTC",
        )
    tz = report.timezone
    return page.substitute(
        cards=cards(report),
        grafico=chart,
        fila=queue_table(report.queue),
        contas=accounts(report.accounts, tz),
        agendamentos=timers(report.timers, tz),
        erros=errors(report.recent_errors, tz),
        incertas=uncertain(report.uncertain_creates, tz),
        incertas_oculta="" if report.uncertain_creates else " hidden",
        instancias=instances(report.instances, tz),
        atualizado=escape(ptbr.moment(report.generated_at, tz)),
        fuso=escape(tz),
    )


def age(seconds: float | None) -> str:
    return "nenhum" if seconds is None else ptbr.duration(seconds)


def _card(label: str, value: str, field: str, warn: bool = False) -> str:
    cls = "card alerta" if warn else "card"
    return (
        f'<div class="{cls}"><span class="rotulo">{escape(label)}</span>'
        f'<span class="valor" data-field="{field}">{escape(value)}</span></div>'
    )


def overall_drain(report: StatusReport) -> str:
    """The slowest account's estimate (the queue is empty when its last share is sent)."""
    q = report.queue
    pending = q.pending_total + q.in_flight_total
    if report.accounts is None:
        return "fila vazia" if pending == 0 else "—"
    estimates = [a.drain_seconds for a in report.accounts if a.pending]
    if pending == 0 or not estimates:
        return drain_text(0.0, pending) if pending == 0 else "—"
    if any(e is None for e in estimates):
        return drain_text(None, pending)
    return drain_text(max(e for e in estimates if e is not None), pending)


def cards(report: StatusReport) -> str:
    q, day, hour = report.queue, report.last_24h, report.last_hour
    rate = day.success_rate
    n = ptbr.number
    return "".join(
        [
            _card("Pendentes", n(q.pending_total), "pending_total"),
            _card("Em processamento", n(q.in_flight_total), "in_flight_total"),
            _card("Falhas", n(q.failed_total), "failed_total", q.failed_total > 0),
            _card(
                "Sucesso (24 h)",
                ptbr.percent(rate),
                "success_rate",
                rate is not None and rate < 0.9,
            ),
            _card("Processados hoje", n(report.processed_today), "processed_today"),
            _card("Enviados na última hora", n(hour.succeeded), "last_hour"),
            _card("Pendente mais antigo", age(q.oldest_pending_age_seconds), "oldest"),
            _card("Previsão", overall_drain(report), "drain"),
        ]
    )


def queue_table(q: QueueReport) -> str:
    n = ptbr.number
    rows = "".join(
        f"<tr><th scope=row>{label}</th><td>{n(q.pending[e])}</td><td>{n(q.in_flight[e])}</td>"
        f"<td>{n(q.failed[e])}</td></tr>"
        for e, label in ENTITY_LABELS.items()
    )
    total = (
        f"<tr class=total><th scope=row>Total</th><td>{n(q.pending_total)}</td>"
        f"<td>{n(q.in_flight_total)}</td><td>{n(q.failed_total)}</td></tr>"
    )
    return (
        '<table class="fila"><thead><tr><th>Entidade</th><th>Pendentes</th>'
        f"<th>Em proc.</th><th>Falhas</th></tr></thead><tbody>{rows}{total}</tbody></table>"
    )


def window(per_seconds: float) -> str:
    return WINDOW_LABELS.get(float(per_seconds), f"em {ptbr.number(per_seconds)} s")


def accounts(items: list[AccountReport] | None, tz: str = "UTC") -> str:
    if not items:
        return '<p class="vazio">Nenhuma conta conhecida (o daemon informa as contas).</p>'
    out = []
    n = ptbr.number
    for a in items:
        state = (
            f'<span class="pausada">Pausada até {escape(ptbr.moment(a.paused_until, tz))}: '
            f"{escape(a.reason or '')}</span>"
            if a.paused
            else '<span class="ativa">Ativa</span>'
        )
        meters = "".join(
            f'<div class="uso"><span>{window(lim.per_seconds)}: {n(lim.used)} de '
            f'{n(lim.requests)}</span><meter min="0" max="{lim.requests}" '
            f'value="{lim.used}"></meter></div>'
            for lim in a.limits
        )
        pace = (
            f'<p class="previsao" data-conta="{escape(a.name)}">'
            f"{escape(drain_text(a.drain_seconds, a.pending))} "
            f"({ptbr.count(a.pending, 'itens')}; {n(a.requests_per_minute, 1)} requisições/min "
            "nos últimos 10 min)</p>"
        )
        out.append(f'<div class="conta"><h3>{escape(a.name)} {state}</h3>{pace}{meters}</div>')
    return "".join(out)


def timers(items: list[TimerReport] | None, tz: str = "UTC") -> str:
    if not items:
        return '<p class="vazio">Nenhum agendamento conhecido.</p>'
    rows = "".join(
        f"<tr><th scope=row>{escape(TIMER_LABELS.get(t.name, t.name))}</th>"
        f"<td>{escape(ptbr.moment(t.last_run, tz) if t.last_run else 'nunca')}</td>"
        f"<td>{escape(ptbr.moment(t.next_run, tz))}</td></tr>"
        for t in items
    )
    return (
        "<table><thead><tr><th>Agendamento</th><th>Última execução</th>"
        f"<th>Próxima execução</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def instances(items: list[InstanceReport], tz: str = "UTC") -> str:
    """Every crmd process on the database, and whether its heartbeat is recent."""
    if not items:
        return '<p class="vazio">Nenhuma instância registrada.</p>'
    rows = "".join(
        f"<tr><td>{escape(i.host)}</td><td>{i.pid}</td><td>{escape(i.version)}</td>"
        f"<td>{escape(ptbr.moment(i.started_at, tz))}</td>"
        f"<td>{'ativa' if i.alive else '<strong>sem sinal</strong>'}, visto em "
        f"{escape(ptbr.moment(i.seen_at, tz))}</td></tr>"
        for i in items
    )
    return (
        "<table><thead><tr><th>Máquina</th><th>PID</th><th>Versão</th><th>Desde</th>"
        f"<th>Situação</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def uncertain(items: list[UncertainReport], tz: str = "UTC") -> str:
    rows = "".join(
        f'<tr><td><a href="{record_url(u.entidade, u.entidade_id)}">'
        f"{escape(ENTITY_LABELS.get(u.entidade, u.entidade))} {u.entidade_id}</a></td>"
        f"<td>{escape(u.conta)}</td><td>{escape(u.chave or '—')}</td>"
        f"<td>{escape(ptbr.moment(u.since, tz))}</td></tr>"
        for u in items
    )
    return (
        "<table><thead><tr><th>Registro</th><th>Conta</th><th>Chave</th><th>Desde</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
    )


def errors(items: list[ErrorReport], tz: str = "UTC") -> str:
    if not items:
        return '<p class="vazio">Nenhum erro recente.</p>'
    rows = "".join(
        f"<tr><td>{escape(ptbr.moment(e.criado_em, tz))}</td>"
        f'<td><a href="{record_url(e.entidade, e.entidade_id)}">'
        f"{escape(ENTITY_LABELS.get(e.entidade, e.entidade))} {e.entidade_id}</a> "
        f"(loja {e.loja_id})</td>"
        f"<td>{'HTTP ' + str(e.http_status) + ': ' if e.http_status else ''}"
        f"{escape(e.mensagem or '')}</td></tr>"
        for e in items
    )
    return (
        "<table><thead><tr><th>Quando</th><th>Registro</th><th>Mensagem</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


# --- a record's page --------------------------------------------------------------------------


def render_record(h: RecordHistory) -> str:
    """The page of one record: where it is in the CRM, its open items, every attempt."""
    tz = h.timezone
    label = f"{ENTITY_LABELS.get(h.entidade, h.entidade)} {h.entidade_id}"
    links = "".join(
        f"<li>conta {escape(link.conta)}: "
        + (
            f"registro {escape(link.external_id)} no CRM"
            if link.external_id
            else "criação incerta (confira no CRM)"
        )
        + f", desde {escape(ptbr.moment(link.sincronizado_em, tz))}</li>"
        for link in h.links
    )
    items = "".join(
        f"<li>item #{i.id} (loja {i.loja_id}, {escape(i.acao)}): {escape(i.estado)}, "
        f"{ptbr.count(i.tentativas, 'tentativas')}"
        + (f"; último erro: {escape(i.ultimo_erro)}" if i.ultimo_erro else "")
        + "</li>"
        for i in h.open_items
    )
    attempts = "".join(_attempt(a, tz) for a in h.attempts)
    return Template(_read("registro.html")).substitute(
        titulo=escape(label),
        entidade=escape(h.entidade),
        entidade_id=h.entidade_id,
        vinculos=f"<ul>{links}</ul>" if links else '<p class="vazio">Não está no CRM.</p>',
        itens=f"<ul>{items}</ul>" if items else '<p class="vazio">Nenhum item aberto na fila.</p>',
        total=escape(ptbr.count(len(h.attempts), "tentativas")),
        tentativas=attempts or '<p class="vazio">Nenhuma tentativa no log.</p>',
    )


def _body(text: str | None) -> str:
    """A body as stored, indented when it is whole JSON (a capped one is shown as it is)."""
    if text is None or text == "":
        return '<span class="vazio">(vazio)</span>'
    try:
        shown = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        shown = text
    return f"<pre>{escape(shown)}</pre>"


def _attempt(a: AttemptReport, tz: str) -> str:
    ok = a.status == "sucesso"
    http = f"HTTP {a.http_status}" if a.http_status else "sem HTTP"
    exchanges = "".join(
        f'<details class="troca"><summary>{escape(t.metodo)} {escape(t.caminho)} → '
        f"{t.http_status if t.http_status is not None else 'sem resposta'}"
        f" ({ptbr.number(t.duracao_ms or 0)} ms)</summary>"
        f"<h4>Enviado</h4>{_body(t.enviado)}<h4>Recebido</h4>{_body(t.recebido)}</details>"
        for t in a.trocas
    )
    return (
        f'<article class="tentativa {"ok" if ok else "erro"}">'
        f"<h3>{escape(ptbr.moment(a.criado_em, tz))} · {'sucesso' if ok else 'erro'} · "
        f"{http} · tentativa {a.tentativa}</h3>"
        f"<p>{escape(a.mensagem or '')}</p>"
        f'<p class="detalhe">conta {escape(a.conta)}, loja {a.loja_id}, {escape(a.acao)}, '
        f"{ptbr.count(a.requisicoes, 'requisições')}, {ptbr.number(a.duracao_ms or 0)} ms"
        + (f", id no CRM {escape(a.external_id)}" if a.external_id else "")
        + f"</p>{exchanges}</article>"
    )
