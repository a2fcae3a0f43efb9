"""One CRM account opened for an operator command (`crmd doctor`, `crmd crm ...`, `crmd plan
--lookups`): its provider, with a limiter that starts from what the account already spent.

Built as the daemon builds its accounts (crmd.crm.accounts), one account at a time, so a command
can go on with the other accounts when one cannot be opened (no tokens). The budget spent so far
(from crm_sync_log, as at the daemon's start) is loaded first, so a command never sends more
than the account's limits allow, and it says how long it would wait instead of waiting hours.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from crmd.config import CrmAccountSettings, Settings
from crmd.crm import providers
from crmd.crm.limiter import RateLimiter
from crmd.crm.providers.base import Provider
from crmd.crm.providers.gestaoclick import GestaoClick
from crmd.store import reports

MAX_WAIT_SECONDS = 30.0
"""A command that would wait longer than this for the account's budget says so and stops."""


class AccountUnavailable(Exception):
    """The account cannot be used now; the message says why, in the operator's words."""


def accounts(settings: Settings, loja: int | None = None) -> dict[str, CrmAccountSettings]:
    """Every configured account by name, or the one the engine sends `loja`'s records to."""
    every = settings.crm.accounts()
    if loja is None:
        return every
    name = settings.crm.account_name(loja)
    return {name: every[name]}


def section(name: str) -> str:
    """The config section of an account, as messages name it."""
    return "crm" if name == "default" else f"crm.lojas.{name.removeprefix('loja-')}"


@asynccontextmanager
async def opened(
    name: str,
    settings: CrmAccountSettings,
    conn: asyncpg.Connection | None,
    *,
    sends: bool = True,
) -> AsyncIterator[Provider]:
    """The account's provider; its limiter starts from the requests the log says were sent
    within its longest window (when a database connection is given). `sends`: the command will
    send requests, so an exhausted budget makes the account unavailable."""
    missing = missing_tokens(settings)
    if missing:
        keys = " e ".join(f"[{section(name)}] {key}" for key in missing)
        raise AccountUnavailable(f"conta {name}: sem {keys}")
    limiter = RateLimiter(settings.limits, margin=settings.limit_margin_seconds)
    if conn is not None:
        longest = max(limit.per_seconds for limit in settings.limits)
        limiter.preload(await reports.requests_sent_since(conn, name, longest))
    provider = providers.create(name, settings, limiter)
    try:
        wait = limiter.delay()
        if sends and wait > MAX_WAIT_SECONDS:
            raise AccountUnavailable(
                f"conta {name}: o limite de requisições está esgotado; a próxima poderia sair "
                f"em {wait / 60:.0f} min"
            )
        yield provider
    finally:
        await provider.transport.close()


def missing_tokens(settings: CrmAccountSettings) -> list[str]:
    return [k for k in ("access_token", "secret_access_token") if getattr(settings, k) is None]


def gestaoclick(name: str, provider: Provider) -> GestaoClick:
    """The provider as GestãoClick, for its account lists (situações, lojas)."""
    if not isinstance(provider, GestaoClick):
        raise AccountUnavailable(f"conta {name}: o provedor {provider.name} não tem essa lista")
    return provider
