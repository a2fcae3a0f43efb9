"""Running and setting up the service: `run`, `check-config`, `migrate`, `schedule`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zoneinfo
from datetime import UTC, datetime
from typing import Any

from crmd import ptbr
from crmd.cli.common import config_arg, print_config_error, run_async, settings_or_exit
from crmd.config import ALL_SECRETS, ConfigError, effective, load_settings
from crmd.ops.schedule import TIMER_LABELS, crons, timers_info
from crmd.store import db, migrate


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check-config",
        help="valida a configuração e a mostra com os segredos mascarados",
        description="Valida a configuração inteira, inclusive os arquivos de segredos, e mostra "
        "a configuração efetiva (segredos mascarados). Sai com 78 e cita cada chave errada "
        "quando ela é inválida.",
    )
    config_arg(p)
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="não mostra nada quando a configuração é válida (para ExecStartPre= e "
        "ExecReload=); os erros continuam saindo no stderr",
    )
    p.add_argument(
        "--without-secrets",
        action="store_true",
        help="valida o arquivo sem ler os arquivos de segredos (para ExecReload=: um reload "
        "usa as mesmas credenciais com que a unit iniciou, e o systemd 252 não deixa um "
        "comando de reload lê-las com DynamicUser=)",
    )
    p.set_defaults(handler=cmd_check_config)

    p = sub.add_parser(
        "migrate",
        help="cria ou atualiza as tabelas do crmd (pode rodar de novo)",
        description="Aplica as migrações numeradas do esquema que faltam, sob um advisory lock. "
        "Rodar de novo não muda nada. Precisa só do banco, não dos segredos do CRM.",
    )
    config_arg(p)
    p.add_argument(
        "--with-reference-erp",
        action="store_true",
        help="cria também o esquema de referência do ERP (lojas, clientes, produtos, vendas, "
        "atividades) com seus gatilhos de enfileiramento; para demonstrações e testes",
    )
    p.set_defaults(handler=cmd_migrate)

    p = sub.add_parser(
        "run",
        help="sincroniza a fila com o CRM (o daemon; --once para uma passada só)",
        description="Roda o daemon de sincronização: espera itens na fila e os envia ao CRM, "
        "até SIGTERM. Com --once, processa o que está na hora, mostra um resumo e sai (para "
        "cron). Precisa dos tokens do CRM.",
    )
    config_arg(p)
    p.add_argument(
        "--once",
        action="store_true",
        help="processa o que está na hora, mostra 'processados n/m, erros e, tempo t' e sai",
    )
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser(
        "schedule",
        help="mostra a última e a próxima execução de cada agendamento",
        description="Mostra os agendamentos de limpeza e de sincronização completa: a expressão "
        "cron, quando rodaram pela última vez (no banco, para todas as instâncias) e quando "
        "rodam de novo, no fuso de [schedule] timezone.",
    )
    config_arg(p)
    p.set_defaults(handler=cmd_schedule)


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        settings, source = load_settings(
            args.config, secrets=() if args.without_secrets else ALL_SECRETS
        )
        if problems := settings.problems_for_run():
            raise ConfigError(problems)
    except ConfigError as exc:
        print_config_error(exc)
        return os.EX_CONFIG
    if args.quiet:
        return os.EX_OK
    where = str(source) if source else "nenhum arquivo (só padrões e ambiente)"
    print(f"# configuração de {where}; segredos mascarados", file=sys.stderr)
    print(json.dumps(effective(settings), indent=2, ensure_ascii=False))
    return os.EX_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args)
    extra = []
    if args.with_reference_erp:
        from crmd.dev.schema import REFERENCE_ERP

        extra.append(REFERENCE_ERP)

    async def go() -> int:
        conn = await db.connect(settings.database)
        try:
            done = await migrate.migrate(conn, extra)
        finally:
            await conn.close()
        for m in done:
            print(f"aplicada: {m}")
        print("esquema em dia" + ("" if done else "; nada a aplicar"))
        return os.EX_OK

    return run_async(go())


def cmd_run(args: argparse.Namespace) -> int:
    from crmd.service import logs

    settings = settings_or_exit(args, to_sync=True)
    logs.configure(settings.log.level, settings.log.format)
    if not args.once:
        from crmd.admin.server import start_for_daemon
        from crmd.service import daemon

        return daemon.main(args.config, settings, (start_for_daemon,))

    from crmd.service import startup

    async def go() -> int:
        start = time.perf_counter()
        try:
            stats = await startup.run_once(settings)
        except migrate.SchemaOutdated as exc:
            print(f"crmd: {exc}", file=sys.stderr)
            return os.EX_CONFIG
        print(startup.summary(stats, time.perf_counter() - start))
        return os.EX_OK

    return run_async(go())


def cmd_schedule(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args)
    tz = zoneinfo.ZoneInfo(settings.schedule.timezone)

    async def go() -> int:
        conn = await db.connect(settings.database)
        try:
            infos = await timers_info(conn, crons(settings.schedule), tz, datetime.now(UTC))
        finally:
            await conn.close()
        print(f"{'agendamento':<24} {'cron':<14} {'última execução':<26} próxima ({tz.key})")
        for t in infos:
            last = ptbr.moment(t.last_run, tz) if t.last_run else "nunca"
            label = TIMER_LABELS.get(t.name, t.name)
            print(f"{label:<24} {t.cron:<14} {last:<26} {ptbr.moment(t.next_run, tz)}")
        return os.EX_OK

    return run_async(go())
