"""CRM accounts: each with its provider, HTTP session, rate limiter and circuit breaker.

An account is the unit the CRM counts requests against, so it is also the unit that pauses: a
429, an authentication failure or a run of failures stops every item of the account, not one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from crmd.config import CrmAccountSettings, Settings
from crmd.crm import providers
from crmd.crm.limiter import SHARED_HOLD, RateLimiter, SharedBudget
from crmd.crm.providers.base import Provider

log = structlog.get_logger("crmd.accounts")

# What an account's provider and HTTP session are built from (the provider keeps the account's
# id mappings): a change to any of these needs a new provider (and session); anything else is
# adjusted in place on reload.
CONNECTION_KEYS = (
    "provider",
    "base_url",
    "access_token",
    "secret_access_token",
    "timeout_seconds",
    "connect_timeout_seconds",
    "venda_situacao_id",
    "venda_situacao_cancelada_id",
    "situacoes",
    "lojas_crm",
    "venda_codigo_prefix",
    "produto_valor_tipo_id",
)


@dataclass
class Account:
    name: str
    settings: CrmAccountSettings
    limiter: RateLimiter
    provider: Provider
    slots: asyncio.Semaphore
    consecutive_failures: int = 0
    consecutive_pauses: int = 0

    @property
    def longest_window(self) -> float:
        return max(limit.per_seconds for limit in self.settings.limits)

    def paused_for(self) -> float:
        """Seconds until the account's pause ends (0 when it is not paused)."""
        until = self.limiter.paused_until
        return max(until - time.time(), 0.0) if until else 0.0

    def pause(self, base: float, limit: float, reason: str, *, exact: float | None = None) -> float:
        """Pause every request of the account; returns the seconds left of the pause.

        One episode, one step: answers that arrive while the account is already paused (six
        429s of requests that were out together) do not double the pause again; the next pause
        in a row does (without `exact`, the CRM's Retry-After). When it ends, one request goes
        first, alone (the limiter's probe).
        """
        if exact is None and self.paused_for() > 0:
            return self.paused_for()
        seconds = exact if exact is not None else min(base * 2**self.consecutive_pauses, limit)
        if not self.paused_for():
            self.consecutive_pauses += 1
        self.limiter.pause(seconds, reason)
        log.error("account_paused", conta=self.name, seconds=round(seconds, 1), reason=reason)
        return max(seconds, self.paused_for())

    def answered(self) -> None:
        """The CRM answered normally: the breaker closes and pauses start small again."""
        self.consecutive_failures = 0
        self.consecutive_pauses = 0


def build_accounts(settings: Settings, budget: SharedBudget | None = None) -> dict[str, Account]:
    """Every configured account, ready to send; raises ValueError naming an unusable one. With
    `budget`, each account's windows are those every instance on the database shares."""
    accounts = {}
    for name, acct in settings.crm.accounts().items():
        limiter = RateLimiter(
            acct.limits,
            margin=acct.limit_margin_seconds,
            budget=budget,
            account=name,
            hold=min(acct.timeout_seconds, SHARED_HOLD),
        )
        accounts[name] = Account(
            name=name,
            settings=acct,
            limiter=limiter,
            provider=providers.create(name, acct, limiter),
            slots=asyncio.Semaphore(acct.concurrency),
        )
    return accounts


def reconcile(
    current: Mapping[str, Account], fresh: Mapping[str, Account]
) -> tuple[dict[str, Account], dict[str, Account]]:
    """The accounts to run with after a reload, and those to close once their calls finish.

    An account whose connection is unchanged keeps its session and grant history, with the new
    limits, concurrency and settings; one whose connection changed takes the new provider and
    session, and its limiter starts from the old one's grants, so no window is exceeded.
    """
    accounts: dict[str, Account] = {}
    retired: dict[str, Account] = {}
    for name, acct in fresh.items():
        before = current.get(name)
        if before is not None and _same_connection(before, acct):
            before.limiter.reconfigure(
                acct.settings.limits, margin=acct.settings.limit_margin_seconds
            )
            if before.settings.concurrency != acct.settings.concurrency:
                before.slots = acct.slots
            before.settings = acct.settings
            accounts[name] = before
            retired[name] = acct
        else:
            if before is not None:
                acct.limiter.preload(_epoch(before.limiter.recent_grants()))
                retired[name] = before
            accounts[name] = acct
    for name, acct in current.items():
        if name not in accounts:
            retired[name] = acct
    return accounts, retired


def _same_connection(a: Account, b: Account) -> bool:
    return all(getattr(a.settings, k) == getattr(b.settings, k) for k in CONNECTION_KEYS)


def _epoch(monotonic_times: list[float]) -> list[float]:
    """Limiter grant times (monotonic) as epoch seconds, for another limiter's preload."""
    offset = time.time() - time.monotonic()
    return [t + offset for t in monotonic_times]


async def close_accounts(accounts: Mapping[str, Account], after: float = 0.0) -> None:
    """Close the accounts' HTTP sessions, `after` seconds from now (calls in flight finish)."""
    if not accounts:
        return
    if after > 0:
        await asyncio.sleep(after)
    for account in accounts.values():
        await account.provider.transport.close()
