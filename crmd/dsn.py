"""PostgreSQL connection strings: checked before use, and never shown with a secret in them.

libpq takes a password in three places: the URI's userinfo (`postgresql://u:secret@h/db`), a
query parameter (`?password=secret`, also `sslpassword`), or a key=value string
(`host=h password=secret`). `redact` masks all of them, so a DSN can go into a log line, an
error message or `crmd check-config` output.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote

SCHEMES = ("postgresql://", "postgres://")
MASK = "***"
_SECRET_PARAMS = frozenset({"password", "sslpassword"})
# key=value form: a secret key, then a quoted ('...', with \' escapes) or bare value.
_USERINFO = re.compile(r"^(postgres(?:ql)?://)([^:@/?]*):.*@(.*)$", re.S)
_KEYWORD_SECRET = re.compile(
    r"\b(password|sslpassword)\s*=\s*(?!\*\*\*)('(?:[^'\\]|\\.)*'|\S+)", re.I
)


def check(dsn: str) -> str:
    """The DSN if crmd can use it; ValueError saying what is wrong (the secret never shown)."""
    if not dsn:
        raise ValueError("não definido ([database] dsn, ou CRMD_DATABASE__DSN)")
    if not dsn.startswith(SCHEMES):
        raise ValueError("deve começar com postgresql:// (uma URI da libpq)")
    rest = dsn.split("://", 1)[1]
    netloc, _, tail = rest.partition("/")
    if "?" in netloc:  # postgresql://host?dbname=x has no slash before the query
        netloc, _, query = netloc.partition("?")
    else:
        query = tail.partition("?")[2]
    hosts = netloc.rpartition("@")[2]
    for spec in filter(None, hosts.split(",")):
        host, port = _split_port(spec)
        if port is not None:
            _check_port(port, f"do host {host or '(padrão)'}")
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "port":
            for port in value.split(","):
                _check_port(port, "do parâmetro port")
    return dsn


def _split_port(spec: str) -> tuple[str, str | None]:
    if spec.startswith("["):  # [::1]:5432
        host, _, after = spec.partition("]")
        return host + "]", after[1:] if after.startswith(":") else None
    host, sep, port = spec.rpartition(":")
    return (host, port) if sep else (spec, None)


def _check_port(port: str, where: str) -> None:
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"a porta {unquote(port)!r} {where} não é uma porta (1 a 65535)")


def redact(dsn: str) -> str:
    """The DSN with every password replaced by ***. When in doubt it hides more, never less."""
    if not dsn.startswith(SCHEMES):
        return _KEYWORD_SECRET.sub(lambda m: f"{m[1]}={MASK}", dsn)
    userinfo = _USERINFO.match(dsn)
    if userinfo:  # up to the last @: a stray @ or ? in the password is hidden too
        dsn = f"{userinfo[1]}{userinfo[2]}:{MASK}@{userinfo[3]}"
    head, qmark, query = dsn.partition("?")
    if not qmark:
        return dsn
    parts = []
    for item in query.split("&"):
        key, eq, _ = item.partition("=")
        parts.append(f"{key}={MASK}" if eq and unquote(key) in _SECRET_PARAMS else item)
    return f"{head}?{'&'.join(parts)}"


_URI_USERINFO = re.compile(r"(postgres(?:ql)?://[^:@/?\s]*):[^@\s]*@")
_QUERY_SECRET = re.compile(r"([?&](?:ssl)?password=)[^&\s]*", re.I)


def scrub(text: str) -> str:
    """`text` with the password of any DSN inside it masked (for log lines and messages that
    may quote one)."""
    if "://" not in text and "assword" not in text and "ASSWORD" not in text:
        return text  # the hot path: most log values hold no DSN
    text = _URI_USERINFO.sub(rf"\1:{MASK}@", text)
    text = _QUERY_SECRET.sub(rf"\1{MASK}", text)
    return _KEYWORD_SECRET.sub(lambda m: f"{m[1]}={MASK}", text)
