"""Logging: one event per line with named fields, to the journal, a terminal or JSON lines.

Under systemd each event goes to journald as one native-protocol datagram, so `loja_id`,
`queue_id`, `http_status`... become journal fields an operator can filter on
(`journalctl -u crmd ENTIDADE=vendas`). On a terminal the lines are for eyes; anywhere else they
are JSON objects for a log shipper.

`configure` may be called again at any time (SIGHUP changes the level): the processor chain is
installed once and reads the level and the output from `_state`, so a new setting reaches every
logger at once, including loggers already bound with context.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import socket
import struct
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from crmd import dsn as libpq

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_IDENTIFIER = "crmd"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMATS = ("auto", "console", "json", "journal")
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}  # syslog levels
_SECRET_KEY = re.compile(r"token|secret|password|passwd|authorization", re.IGNORECASE)
_NOT_FIELD_CHAR = re.compile(r"[^A-Z0-9_]")
# Fields journald or our own entry already uses: an event key of that name must not replace them
# (a queue item's `priority` would otherwise become the entry's syslog priority).
_RESERVED_FIELDS = frozenset(
    {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "SYSLOG_FACILITY", "SYSLOG_PID", "LEVEL"}
)


# --- choosing the format ------------------------------------------------------------------------


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """Whether `fd` is the stream systemd connected to journald, as `$JOURNAL_STREAM` says.

    The variable is inherited by children whose stderr was redirected, hence the device and inode
    comparison rather than trusting its presence.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def detect_format(environ: Mapping[str, str] | None = None, fd: int = 2) -> str:
    """What "auto" means here: journal under systemd, console on a TTY, JSON lines otherwise."""
    if stderr_is_journal(environ, fd):
        return "journal"
    try:
        return "console" if os.isatty(fd) else "json"
    except OSError:
        return "json"


# --- processors ---------------------------------------------------------------------------------


def mask_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Replace the value of any key named like a token, secret, password or authorization, and
    the password of any DSN quoted in a text (an error message).

    Runs before every output and goes into nested dicts (a request's headers). It over-masks on
    purpose (`token_file` too): a hidden path costs less than a leaked credential.
    """
    for key, value in event_dict.items():
        if _is_secret(key) or isinstance(value, Mapping):
            event_dict[key] = _masked(key, value)
        elif isinstance(value, str):
            event_dict[key] = libpq.scrub(value)
    return event_dict


@functools.lru_cache(maxsize=4096)
def _is_secret(key: str) -> bool:
    """Event keys repeat endlessly; match each name against the pattern once (hot path)."""
    return _SECRET_KEY.search(key) is not None


def _masked(key: str, value: Any) -> Any:
    if _is_secret(key):
        return "***"
    if isinstance(value, Mapping):
        return {k: _masked(str(k), v) for k, v in value.items()}
    return value


def _drop_below_threshold(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    if LEVELS.get(event_dict.get("level", "info"), logging.INFO) < _state.threshold:
        raise structlog.DropEvent
    return event_dict


def _to_output(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> Any:
    """Last processor: hand the whole event to `_Router`, which gives it to the current output."""
    return ((event_dict,), {})


# --- outputs ------------------------------------------------------------------------------------


class _Output(Protocol):
    def emit(self, event_dict: EventDict) -> None: ...

    def close(self) -> None: ...


class _LineOutput:
    """Console or JSON: a renderer turns the event into one line written to stderr."""

    def __init__(self, render: Callable[[EventDict], str], stream: TextIO | None) -> None:
        self._render = render
        self._stream = stream  # None: whatever sys.stderr is at the time of writing

    def emit(self, event_dict: EventDict) -> None:
        _write_line(self._stream, self._render(event_dict))

    def close(self) -> None:
        pass


def _write_line(stream: TextIO | None, line: str) -> None:
    """Write and flush one line; a closed or broken stderr must not crash the daemon."""
    out = sys.stderr if stream is None else stream
    try:
        out.write(line + "\n")
        out.flush()
    except (OSError, ValueError):
        pass


def _json_renderer() -> Callable[[EventDict], str]:
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    dump = structlog.processors.JSONRenderer(ensure_ascii=False)

    def render(event_dict: EventDict) -> str:
        event_dict = structlog.processors.format_exc_info(None, "", stamp(None, "", event_dict))
        return str(dump(None, "", event_dict))

    return render


def _console_renderer(colors: bool) -> Callable[[EventDict], str]:
    stamp = structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False)
    pretty = structlog.dev.ConsoleRenderer(
        colors=colors, exception_formatter=structlog.dev.plain_traceback
    )

    def render(event_dict: EventDict) -> str:
        return pretty(None, "", stamp(None, "", event_dict))

    return render


class _JournalOutput:
    """journald's native protocol: one datagram per event, every event key a journal field.

    Falls back to a line on stderr when the datagram cannot go (no journald, entry too large,
    journald not keeping up), so an event is never lost silently.
    """

    def __init__(self, path: str, stream: TextIO | None, syslog_prefix: bool) -> None:
        self._path = path
        self._stream = stream
        self._syslog_prefix = syslog_prefix  # stderr itself is journald's: "<3>" sets priority
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)  # a stalled journald must not stall the event loop

    def emit(self, event_dict: EventDict) -> None:
        event_dict = structlog.processors.format_exc_info(None, "", event_dict)
        level = str(event_dict.pop("level", "info"))
        priority = _PRIORITY.get(level, 6)
        fields = [
            ("MESSAGE", one_line(event_dict, skip=("exception",))),
            ("PRIORITY", str(priority)),
            ("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER),
        ]
        for key, value in event_dict.items():
            name = journal_field_name(key)
            if name:
                fields.append((name, _field_text(value)))
        try:
            self._sock.sendto(journal_entry(fields), self._path)
        except OSError:  # ENOENT, ECONNREFUSED, EMSGSIZE, EAGAIN, ENOBUFS
            prefix = f"<{priority}>" if self._syslog_prefix else ""
            _write_line(self._stream, prefix + one_line(event_dict))

    def close(self) -> None:
        self._sock.close()


def journal_field_name(key: str) -> str | None:
    """An event key as a journal field name: upper case, [A-Z0-9_], not starting with `_` (those
    are journald's trusted fields) or a digit, at most 64 characters; None if nothing is left."""
    name = _NOT_FIELD_CHAR.sub("_", key.upper()).lstrip("_0123456789")[:64]
    if name in _RESERVED_FIELDS:
        name = f"CRMD_{name}"
    return name or None


def journal_entry(fields: list[tuple[str, str]]) -> bytes:
    """Encode fields as one native-protocol datagram; a value holding a newline is sent as
    `KEY\\n<u64 little-endian length><bytes>\\n`, which is how journald keeps tracebacks whole."""
    parts: list[bytes] = []
    for name, value in fields:
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            parts.append(name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(name.encode() + b"=" + data + b"\n")
    return b"".join(parts)


def one_line(event_dict: EventDict, skip: tuple[str, ...] = ()) -> str:
    """`event key=value ...` on a single line: the journal's MESSAGE and the fallback line."""
    event = str(event_dict.get("event", "")).replace("\r", "\\r").replace("\n", "\\n")
    pairs = [
        f"{key}={_quoted(_field_text(value))}"
        for key, value in event_dict.items()
        if key not in ("event", "level", *skip)
    ]
    return " ".join([event, *pairs])


def _quoted(text: str) -> str:
    if text and not any(c.isspace() or c in "\"'=\\" for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _field_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


# --- wiring -------------------------------------------------------------------------------------


class _Router:
    """structlog's wrapped logger: every level method hands the event to the current output."""

    def _emit(self, event_dict: EventDict) -> None:
        _state.output.emit(event_dict)

    debug = info = warning = warn = error = critical = exception = fatal = msg = _emit


class _StdlibBridge(logging.Handler):
    """Routes records of stdlib loggers (asyncio, aiohttp, asyncpg) through the same outputs."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = next(
                (name for name, no in reversed(LEVELS.items()) if record.levelno >= no), "debug"
            )
            kw: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                kw["exc_info"] = record.exc_info
            getattr(structlog.get_logger(), level)(record.getMessage(), **kw)
        except Exception:
            self.handleError(record)


@dataclass
class _State:
    threshold: int
    output: _Output
    installed: bool = False


_ROUTER = _Router()
_BRIDGE = _StdlibBridge()
_state = _State(logging.INFO, _LineOutput(one_line, None))


def configure(
    level: str = "info",
    fmt: str = "auto",
    *,
    stream: TextIO | None = None,
    journal_socket: str = JOURNAL_SOCKET,
) -> str:
    """Set the level and the output format; returns the format in use ("auto" resolved).

    `stream` replaces stderr and `journal_socket` journald's socket (both for tests). Raises
    ValueError for an unknown level or format, before changing anything.
    """
    threshold = LEVELS.get(level.lower())
    if threshold is None:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")
    resolved = detect_format() if fmt == "auto" else fmt

    output: _Output
    if resolved == "journal":
        output = _JournalOutput(journal_socket, stream, syslog_prefix=stderr_is_journal())
    elif resolved == "console":
        colors = (sys.stderr if stream is None else stream).isatty()
        output = _LineOutput(_console_renderer(colors), stream)
    else:
        output = _LineOutput(_json_renderer(), stream)

    previous, _state.output, _state.threshold = _state.output, output, threshold
    previous.close()
    if not _state.installed:
        _install()
    logging.getLogger().setLevel(threshold)
    return resolved


def _install() -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _drop_below_threshold,
            mask_secrets,
            _to_output,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        logger_factory=lambda *_: _ROUTER,
        # Not cached: a logger first used before configure() must still follow it.
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    if _BRIDGE not in root.handlers:
        root.addHandler(_BRIDGE)
    _state.installed = True
