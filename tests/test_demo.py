"""`make run` as the README gives it: the demo syncs its sample data, and `kill PID` stops all.

`make run` is `python -m crmd.dev.demo` in the checkout; here it runs in a temporary directory
holding a copy of `config.toml`, as a checkout would. The demo starts three processes of its own
(an embedded PostgreSQL, the development CRM, `crmd run`): a SIGTERM to the demo must stop each
of them, not leave them orphaned as Python's default SIGTERM did.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def processes_under(path: Path) -> list[str]:
    """Command lines of running processes that name `path` (the demo's own children do)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


async def still_running(path: Path) -> list[str]:
    """What still runs under `path` once /proc entries of reaped children had time to go."""
    for _ in range(50):
        left = processes_under(path)
        if not left:
            break
        await asyncio.sleep(0.1)
    return left


def crm_records(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


async def test_demo_syncs_and_sigterm_stops_every_process_it_started(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    demo = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crmd.dev.demo",
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert demo.stdout is not None
    output: list[str] = []
    try:

        async def read_until(pattern: str) -> re.Match[str]:
            assert demo.stdout is not None
            while True:
                line = (await demo.stdout.readline()).decode()
                assert line, "the demo ended early:\n" + "".join(output)
                output.append(line)
                if found := re.search(pattern, line):
                    return found

        crm_url = (await asyncio.wait_for(read_until(r"CRM de teste:\s+(\S+)"), 120))[1]
        await asyncio.wait_for(read_until(r"synced .*entidade=vendas"), 60)
        assert crm_records(crm_url), "the development CRM holds no clientes after a venda synced"
        assert processes_under(tmp_path), "the demo's children were not found"

        demo.send_signal(signal.SIGTERM)
        try:
            rest, _ = await asyncio.wait_for(demo.communicate(), 60)
            output.append(rest.decode())
        except TimeoutError:
            output.append("(no end of output 60 s after SIGTERM: a child still holds it)")
    finally:
        if demo.returncode is None:
            os.killpg(demo.pid, signal.SIGKILL)
            await demo.wait()
        left = await still_running(tmp_path)
        for line in left:  # orphans: not to outlive the test
            os.kill(int(line.split(":", 1)[0]), signal.SIGTERM)
    text = "".join(output)
    assert left == [], f"still running after the demo ended: {left}\n{text}"
    assert demo.returncode == 0, text
    assert "stop_requested" in text and "parado" in text, text
    assert not (tmp_path / ".run" / "pgdata" / "postmaster.pid").exists(), "PostgreSQL still up"
