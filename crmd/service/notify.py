"""Tell systemd how the daemon is doing (sd_notify), in pure Python.

The protocol is one datagram of `KEY=value` lines to the AF_UNIX socket named by
`$NOTIFY_SOCKET`; a leading `@` names a socket in the abstract namespace. Outside systemd the
variable is unset and every call is a no-op, so the daemon runs the same way from a terminal.

Sending never raises and never blocks: a lost `WATCHDOG=1` costs at most one missed ping, while
an exception or a stalled event loop here would take the whole daemon down with it.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    """One connection-less sender of systemd notifications; see `from_env`."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        """`address` is `$NOTIFY_SOCKET` as systemd sets it (None: send nothing)."""
        self.address = address
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._last_errno: int | None = None  # so a dead socket is logged once, not every ping

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        """Read `$NOTIFY_SOCKET` and the watchdog settings systemd passed to this process.

        `$WATCHDOG_USEC` counts only when `$WATCHDOG_PID` is unset or names this process: a child
        that inherited the environment must not ping on its parent's behalf.
        """
        env = os.environ if environ is None else environ
        pid = os.getpid() if pid is None else pid
        watchdog_usec: int | None = None
        watchdog_pid = env.get("WATCHDOG_PID")
        if watchdog_pid is None or watchdog_pid.strip() == str(pid):
            try:
                watchdog_usec = int(env.get("WATCHDOG_USEC", ""))
            except ValueError:
                watchdog_usec = None
            if watchdog_usec is not None and watchdog_usec <= 0:
                watchdog_usec = None
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec)

    @property
    def enabled(self) -> bool:
        """Whether anything is listening for notifications (we run under systemd)."""
        return self.address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between `WATCHDOG=1` pings: half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3)
        advises, or None when systemd runs no watchdog for us."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    # --- the messages the daemon sends ----------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is complete: systemd starts ordering dependants after us."""
        return self.send(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        """A one-line state shown by `systemctl status crmd`."""
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        """Prove the event loop is still turning; missing pings past WatchdogSec= kill us."""
        return self.send(WATCHDOG=1)

    def reloading(self, status: str | None = None) -> bool:
        """A reload started. MONOTONIC_USEC goes in the same datagram so systemd can tell this
        reload from an earlier one; follow with `ready()` whether the new config was taken or not.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING=1, MONOTONIC_USEC=usec, STATUS=status)

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown started: systemd shows `deactivating` while we drain."""
        return self.send(STOPPING=1, STATUS=status)

    def send(self, **fields: object) -> bool:
        """Send `KEY=value` fields (None values left out) in one datagram.

        Returns whether the datagram left; False also when not running under systemd. Newlines in
        values become spaces, because a newline ends an assignment in this protocol.
        """
        if self.address is None:
            return False
        lines = [
            f"{key}={str(value).replace(chr(10), ' ')}\n"
            for key, value in fields.items()
            if value is not None
        ]
        if not lines:
            return False
        return self._send_datagram("".join(lines).encode("utf-8", "replace"))

    def close(self) -> None:
        """Release the socket; a later send opens a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # --- plumbing -------------------------------------------------------------------------------

    def _target(self) -> bytes | None:
        assert self.address is not None
        if self.address.startswith("@"):
            return b"\0" + os.fsencode(self.address[1:])
        if self.address.startswith("/"):
            return os.fsencode(self.address)
        return None  # e.g. "vsock:..." (systemd 254+ in VMs): not something this daemon meets

    def _send_datagram(self, payload: bytes) -> bool:
        target = self._target()
        if target is None:
            self._report(errno.EAFNOSUPPORT, f"unsupported NOTIFY_SOCKET {self.address!r}")
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, target)
        except OSError as exc:  # ENOENT, ECONNREFUSED, EAGAIN (systemd busy), EMSGSIZE...
            self._report(exc.errno or 0, exc.strerror or str(exc))
            return False
        self._last_errno = None
        return True

    def _report(self, err: int, reason: str) -> None:
        if err != self._last_errno:
            log.warning("sd_notify_failed", socket=self.address, reason=reason)
        self._last_errno = err
