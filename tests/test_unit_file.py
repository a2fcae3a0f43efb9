"""The shipped systemd unit: the directives the daemon relies on, `systemd-analyze verify` clean,
and a sandbox rated 2.0 or better by `systemd-analyze security`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from crmd.config import SyncSettings

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "crmd.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (package: systemd)"
)


def directives(text: str) -> dict[str, list[str]]:
    """`Key=value` lines of every section, comments skipped; repeated keys keep every value."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def seconds(value: str) -> float:
    """A systemd time span of the simple forms used here: "45", "45s", "2min"."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min)?", value)
    assert match, f"unexpected time span {value!r}"
    return float(match[1]) * (60 if match[2] == "min" else 1)


def installable_copy(tmp_path: Path) -> Path:
    """The unit with /usr/bin/crmd (not installed on a development machine) swapped for an
    executable that exists, so verify judges the unit rather than this machine."""
    copy = tmp_path / "crmd.service"
    copy.write_text(UNIT.read_text().replace("/usr/bin/crmd", "/bin/true"))
    return copy


def test_unit_declares_what_the_daemon_relies_on() -> None:
    unit = directives(UNIT.read_text())

    assert unit["Type"] == ["notify"]  # not notify-reload: Debian 12 / RHEL 9 ship systemd 252
    assert unit["NotifyAccess"] == ["main"]
    assert unit["ExecStartPre"] == ["/usr/bin/crmd check-config --quiet"]
    assert unit["ExecStart"] == ["/usr/bin/crmd run"]
    # Validate first, then signal: a broken file fails `systemctl reload` itself.
    assert unit["ExecReload"] == [
        "/usr/bin/crmd check-config --quiet --without-secrets",
        "/bin/kill -HUP $MAINPID",
    ]
    assert unit["Environment"] == ["CRMD_CONFIG=/etc/crmd/config.toml"]
    assert unit["Restart"] == ["on-failure"]
    assert seconds(unit["WatchdogSec"][0]) == 30
    assert sorted(unit["LoadCredential"]) == [
        "admin_token:/etc/crmd/credentials/admin_token",
        "crm_access_token:/etc/crmd/credentials/crm_access_token",
        "crm_secret_access_token:/etc/crmd/credentials/crm_secret_access_token",
    ]
    assert unit["SyslogIdentifier"] == ["crmd"]
    assert unit["StandardOutput"] == ["journal"]


def test_stop_timeout_leaves_room_for_the_drain() -> None:
    unit = directives(UNIT.read_text())
    drain = SyncSettings.model_fields["shutdown_timeout_seconds"].default
    assert seconds(unit["TimeoutStopSec"][0]) > drain + 10


def test_unit_is_sandboxed() -> None:
    unit = directives(UNIT.read_text())
    expected = {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "PrivateDevices": "yes",
        "PrivateUsers": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures": "native",
        "MemoryDenyWriteExecute": "yes",
        "UMask": "0077",
        "ProtectProc": "invisible",
        "ProcSubset": "pid",
    }
    assert {key: unit.get(key, [None])[0] for key in expected} == expected
    assert "@system-service" in unit["SystemCallFilter"]


@needs_analyze
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(installable_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=30,
    )
    # verify exits 0 on mere warnings (an unknown key, a typo'd value): they must fail too.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@needs_analyze
def test_systemd_analyze_security_rates_the_unit_2_or_better(tmp_path: Path) -> None:
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(installable_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=30,
    )
    match = re.search(r"Overall exposure level for crmd\.service: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match[1]) <= 2.0, done.stdout
