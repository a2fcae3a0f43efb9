"""The dashboard's chart of the last 24 h, as inline SVG drawn on the server: requests per minute
per account against its limit, and the queue's depth. No chart library and no CDN; the page
fetches the fragment again (`GET /grafico`) once a minute, so there is one drawing code."""

from __future__ import annotations

import zoneinfo
from datetime import datetime
from html import escape

from crmd import ptbr
from crmd.ops.series import Series

WIDTH, HEIGHT = 640, 190
LEFT, RIGHT, TOP, BOTTOM = 52, 10, 12, 26
COLOURS = ("#1f5fbf", "#c2410c", "#15803d", "#7e22ce", "#0e7490", "#a16207")
"""One per account, in order; style.css has the same as .cor0 ... .cor5 (no inline styles: the
page's Content-Security-Policy forbids them)."""


def render(series: Series) -> str:
    """Both charts and their legends, ready to go into the page."""
    return _requests_chart(series) + _depth_chart(series)


def _x(at: float, series: Series) -> float:
    span = max(series.until - series.since, 1)
    return LEFT + (at - series.since) / span * (WIDTH - LEFT - RIGHT)


def _y(value: float, top: float) -> float:
    return HEIGHT - BOTTOM - value / top * (HEIGHT - TOP - BOTTOM)


def _nice_top(value: float) -> float:
    """A round upper bound for the axis (1, 2, 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    scale = 1.0
    while scale * 10 <= value:
        scale *= 10
    for step in (1, 2, 5, 10):
        if step * scale >= value:
            return step * scale
    return 10 * scale


def _axis(value: float) -> str:
    """An axis label that fits its margin: "500", "20 mil", "1,5 mi"."""
    if value >= 1_000_000:
        return f"{ptbr.number(value / 1_000_000, 0 if value % 1_000_000 == 0 else 1)} mi"
    if value >= 10_000:
        return f"{ptbr.number(value / 1000, 0 if value % 1000 == 0 else 1)} mil"
    return ptbr.number(value)


def _frame(series: Series, top: float, label: str) -> list[str]:
    """Axes, grid lines with their values, and an hour label every 6 h in the zone."""
    parts = []
    for fraction in (0, 0.5, 1):
        y = _y(top * fraction, top)
        parts.append(
            f'<line class="grade" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="eixo" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_axis(top * fraction)}</text>"
        )
    tz = zoneinfo.ZoneInfo(series.timezone)
    first = datetime.fromtimestamp(series.since, tz).replace(minute=0, second=0, microsecond=0)
    hour = first.timestamp()
    while hour <= series.until:
        local = datetime.fromtimestamp(hour, tz)
        if hour >= series.since and local.hour % 6 == 0:
            x = _x(hour, series)
            parts.append(
                f'<line class="grade" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" '
                f'y2="{HEIGHT - BOTTOM}"/><text class="eixo" x="{x:.1f}" '
                f'y="{HEIGHT - 8}" text-anchor="middle">{local:%H:%M}</text>'
            )
        hour += 3600
    parts.append(
        f'<text class="eixo" x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end">'
        f"{escape(ptbr.zone_label(datetime.fromtimestamp(series.until, tz)))}</text>"
    )
    parts.insert(0, f"<title>{escape(label)}</title>")
    return parts


def _polyline(points: list[tuple[float, float]], css: str, colour: str) -> str:
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return f'<polyline class="{css}" stroke="{colour}" points="{coords}"/>'


def _requests_chart(series: Series) -> str:
    peak = max(
        [n for a in series.requests for _, n in a.points]
        + [a.limit_per_minute or 0 for a in series.requests]
        + [1]
    )
    top = _nice_top(peak)
    parts = _frame(series, top, "Requisições por minuto nas últimas 24 h")
    legend = []
    first_minute = series.since - series.since % 60
    for i, account in enumerate(series.requests):
        colour = COLOURS[i % len(COLOURS)]
        counts = dict(account.points)
        line = [
            (_x(m, series), _y(counts.get(m, 0), top))
            for m in range(first_minute, series.until + 1, 60)
            if m >= series.since
        ]
        parts.append(_polyline(line, "serie", colour))
        if account.limit_per_minute is not None:
            y = _y(account.limit_per_minute, top)
            parts.append(
                f'<line class="limite" stroke="{colour}" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
                f'y1="{y:.1f}" y2="{y:.1f}"/>'
            )
        total = sum(counts.values())
        limit = (
            f", limite {ptbr.number(account.limit_per_minute)}/min"
            if account.limit_per_minute is not None
            else ""
        )
        legend.append(
            f'<li><span class="cor cor{i % len(COLOURS)}"></span>{escape(account.conta)}: '
            f"{ptbr.count(total, 'requisições')} em 24 h{limit}</li>"
        )
    return _figure(
        "grafico-requisicoes",
        "Requisições por minuto (linha tracejada: o limite da conta)",
        parts,
        len(series.requests),
        legend,
    )


def _depth_chart(series: Series) -> str:
    peak = max([p.pendentes + p.processando for p in series.depth] + [1])
    top = _nice_top(peak)
    parts = _frame(series, top, "Itens na fila nas últimas 24 h")
    runs: list[list[tuple[float, float]]] = []
    last_at: int | None = None
    for p in series.depth:
        if last_at is None or p.at - last_at > 180:  # the daemon was away: a gap, not a line
            runs.append([])
        runs[-1].append((_x(p.at, series), _y(p.pendentes + p.processando, top)))
        last_at = p.at
    for run in runs:
        if len(run) == 1:
            x, y = run[0]
            parts.append(f'<circle class="ponto" cx="{x:.1f}" cy="{y:.1f}" r="2.5"/>')
        else:
            parts.append(_polyline(run, "serie fila", COLOURS[0]))
    now = series.depth[-1] if series.depth else None
    legend = [
        "<li>sem amostras ainda (o daemon grava uma por minuto)</li>"
        if now is None
        else f"<li>agora: {ptbr.count(now.pendentes, 'itens')} pendentes, "
        f"{ptbr.number(now.processando)} em processamento, {ptbr.number(now.falhas)} com falha</li>"
    ]
    return _figure(
        "grafico-fila", "Itens na fila (pendentes e em processamento)", parts, len(runs), legend
    )


def _figure(ident: str, caption: str, parts: list[str], lines: int, legend: list[str]) -> str:
    return (
        f'<figure class="grafico" id="{ident}" data-linhas="{lines}">'
        f"<figcaption>{escape(caption)}</figcaption>"
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(caption)}">'
        f'{"".join(parts)}</svg><ul class="legenda">{"".join(legend)}</ul></figure>'
    )
