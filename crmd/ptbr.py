"""How crmd speaks to operators: Brazilian Portuguese numbers, plurals, durations and times.

One place for it, so the CLI, the STATUS line and the dashboard say a thing the same way:
"1.000.014", "98,8 %", "2 vendas encontradas", "~3 h 20 min", "14/03/2025 09:05:09 UTC-03".
Log event names and field keys are not translated: they are an interface.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, tzinfo

# noun -> (singular, plural, gender): what agreement needs ("1 venda encontrada").
NOUNS: dict[str, tuple[str, str, str]] = {
    "clientes": ("cliente", "clientes", "m"),
    "produtos": ("produto", "produtos", "m"),
    "vendas": ("venda", "vendas", "f"),
    "atividades": ("atividade", "atividades", "f"),
    "itens": ("item", "itens", "m"),
    "lojas": ("loja", "lojas", "f"),
    "tentativas": ("tentativa", "tentativas", "f"),
    "erros": ("erro", "erros", "m"),
    "registros": ("registro", "registros", "m"),
    "requisições": ("requisição", "requisições", "f"),
    "envios": ("envio", "envios", "m"),
    "dias": ("dia", "dias", "m"),
}


def number(value: float, decimals: int = 0) -> str:
    """1000014 -> "1.000.014"; 3.25 with 1 decimal -> "3,2" (thousands '.', decimals ',')."""
    text = f"{value:,.{decimals}f}"
    return text.replace(",", "\0").replace(".", ",").replace("\0", ".")


def percent(fraction: float | None, decimals: int = 1) -> str:
    """0.9876 -> "98,8 %"; None -> "—"."""
    return "—" if fraction is None else f"{number(fraction * 100, decimals)} %"


def noun(n: int, word: str) -> str:
    """The noun for `n`: 1 -> "venda", 2 -> "vendas" (unknown words are taken as they are)."""
    singular, plural, _ = NOUNS.get(word, (word, word, "m"))
    return singular if n == 1 else plural


def count(n: int, word: str) -> str:
    """ "1 venda", "1.234 clientes"."""
    return f"{number(n)} {noun(n, word)}"


def plural(n: int, one: str, many: str) -> str:
    """A phrase NOUNS does not know, with its count: "1 linha lida", "2 linhas lidas"."""
    return f"{number(n)} {one if n == 1 else many}"


def agree(n: int, word: str, participle: str) -> str:
    """A participle given in the masculine singular ("encontrado") agreeing with `n` `word`:
    "encontrada", "encontrados", "encontradas"."""
    _, _, gender = NOUNS.get(word, (word, word, "m"))
    stem = participle.removesuffix("o")
    return stem + ("a" if gender == "f" else "o") + ("" if n == 1 else "s")


def counted(n: int, word: str, participle: str) -> str:
    """ "2 vendas encontradas", "1 cliente encontrado"."""
    return f"{count(n, word)} {agree(n, word, participle)}"


def duration(seconds: float) -> str:
    """A span for people: "menos de 1 s", "45 s", "12 min", "3 h 20 min", "2 dias 4 h"."""
    if seconds < 0.5:
        return "menos de 1 s"
    total = round(seconds)
    if total < 120:
        return f"{total} s"
    minutes = round(total / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{count(days, 'dias')} {hours} h" if hours else count(days, "dias")


def zone_label(moment: datetime) -> str:
    """The UTC offset of an aware time: "UTC-03", "UTC+05:30", "UTC" (the dashboard's script
    computes the same label, so a time reads the same on the CLI and the page)."""
    offset = moment.utcoffset()
    minutes = 0 if offset is None else round(offset.total_seconds() / 60)
    if minutes == 0:
        return "UTC"
    sign = "+" if minutes > 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}" + (f":{rest:02d}" if rest else "")


def moment(value: datetime | str | None, tz: tzinfo | str = UTC, *, seconds: bool = True) -> str:
    """A point in time in `tz`, with its zone: "14/03/2025 09:05:09 UTC-03"; None -> "—"."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    zone = zoneinfo.ZoneInfo(tz) if isinstance(tz, str) else tz
    local = value.astimezone(zone)
    text = local.strftime("%d/%m/%Y %H:%M:%S" if seconds else "%d/%m/%Y %H:%M")
    return f"{text} {zone_label(local)}"
