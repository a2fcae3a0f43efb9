"""Numbers and durations as Brazilian Portuguese writes them ("41.000", "98,8 %", "1 dia e 9 h"),
for what the operator commands print."""

from __future__ import annotations


def number(value: int) -> str:
    """41000 -> "41.000"."""
    return f"{value:,}".replace(",", ".")


def decimal(value: float, places: int = 1) -> str:
    """1234.5 -> "1.234,5"."""
    text = f"{value:,.{places}f}"
    return text.replace(",", "\0").replace(".", ",").replace("\0", ".")


def percent(fraction: float) -> str:
    """0.988 -> "98,8 %"."""
    return f"{decimal(fraction * 100)} %"


def plural(count: int, one: str, many: str) -> str:
    """ "1 registro", "2 registros", with the count in pt-BR digits."""
    return f"{number(count)} {one if count == 1 else many}"


def duration(seconds: float) -> str:
    """A span for people, to the unit that matters: "menos de 1 min", "45 min", "3 h e 20 min",
    "1 dia e 9 h", "12 dias"."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "menos de 1 min"
    if minutes < 60:
        return f"{minutes} min"
    hours, mins = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h" + (f" e {mins} min" if mins else "")
    hours = round(seconds / 3600)
    days, hours = divmod(hours, 24)
    if days >= 10:
        return plural(round(seconds / 86_400), "dia", "dias")
    day_text = plural(days, "dia", "dias")
    return day_text + (f" e {hours} h" if hours else "")
