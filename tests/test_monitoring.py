"""Monitoring that ships: the alert rules pass promtool (and their own unit tests), the Grafana
dashboard is importable JSON, and every metric either of them uses is one crmd exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crmd import __version__
from crmd.admin.metrics import Metrics
from crmd.config import Settings
from crmd.crm.accounts import build_accounts
from crmd.crm.transport import RequestEvent
from crmd.engine.work import Stats
from crmd.service.view import DaemonView, ReloadInfo

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"
RULES = MONITORING / "crmd-alerts.yml"
RULE_TESTS = MONITORING / "crmd-alerts.test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian: apt-get install prometheus; .ci/run installs it "
    "when it runs as root)",
)
# A metric name of crmd's own, not inside a recording rule's name (instance:crmd_x:rate5m).
METRIC = re.compile(r"(?<![:\w])crmd_[a-z_]+(?![:\w])")


def exposed_names() -> set[str]:
    """Every sample name crmd's /metrics shows once each source has reported something."""
    settings = Settings(
        database={"dsn": "postgresql://crmd@localhost/erp"},
        crm={"access_token": "a", "secret_access_token": "b"},
    )
    accounts = build_accounts(settings)
    view = DaemonView(
        pool=lambda: None,  # type: ignore[arg-type,return-value]
        settings=lambda: settings,
        accounts=lambda: accounts,
        stats=lambda: Stats(),
        ready=lambda: True,
        reloads=ReloadInfo(),
    )
    metrics = Metrics(view)
    for status in (200, 401, 429, None):
        metrics.observe(RequestEvent("default", "POST", "/clientes", status, 0.1, 0.0))
    metrics._set_depth([])
    now = datetime.now(UTC)
    metrics._set_runs([{"nome": "full_sync", "executado_em": now, "resultado": "ok"}])  # type: ignore[list-item]
    metrics.timer_next.labels("full_sync").set(now.timestamp())
    metrics.database_up.set(1)
    text = metrics.render().decode()
    assert 'crmd_build_info{python="' in text and f'version="{__version__}"' in text
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


def used_names() -> set[str]:
    text = RULES.read_text() + json.dumps(json.loads(DASHBOARD.read_text()))
    return set(METRIC.findall(text))


def test_every_metric_the_rules_and_the_dashboard_use_is_exposed() -> None:
    exposed = exposed_names()
    missing = sorted(used_names() - exposed)
    assert not missing, f"not in /metrics: {missing}"
    assert {"crmd_crm_auth_failures_total", "crmd_build_info"} <= exposed


def test_the_dashboard_is_importable_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "crmd" and dashboard["panels"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_the_rules_cover_what_operators_asked_for() -> None:
    text = RULES.read_text()
    for needed in (
        "crmd_queue_oldest_pending_age_seconds",  # backlog age
        "increase10m",  # failure rate over 10 minutes
        'window_seconds="86400"',  # daily budget
        "crmd_account_paused",
        'timer="full_sync"',
        "crmd_crm_auth_failures_total",
        'up{job="crmd"}',  # instance down
    ):
        assert needed in text, needed


@needs_promtool
def test_the_alert_rules_pass_promtool() -> None:
    assert PROMTOOL is not None
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)]):
        done = subprocess.run(
            [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
