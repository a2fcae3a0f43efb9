"""CRM accounts: each with its provider, HTTP session, rate limiter and circuit breaker.

An account is the unit the CRM counts requests against, so it is also the unit that pauses: a
429, an authentication failure or a run of failures stops every item of the account, not one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg
import structlog

from crmd.config import CrmAccountSettings, Settings
from crmd.crm import providers
from crmd.crm.limiter import RateLimiter
from crmd.crm.providers.base import Provider
from crmd.store.sql import queries

log = structlog.get_logger("crmd.accounts")


@dataclass
class Account:
    name: str
    settings: CrmAccountSettings
    limiter: RateLimiter
    provider: Provider
    slots: asyncio.Semaphore
    consecutive_failures: int = 0
    consecutive_pauses: int = 0

    def paused_for(self) -> float:
        """Seconds until the account's pause ends (0 when it is not paused)."""
        until = self.limiter.paused_until
        return max(until - time.time(), 0.0) if until else 0.0

    def pause(self, base: float, limit: float, reason: str, *, exact: float | None = None) -> float:
        """Pause every request of the account; without `exact`, each pause in a row doubles."""
        seconds = exact if exact is not None else min(base * 2**self.consecutive_pauses, limit)
        self.consecutive_pauses += 1
        self.limiter.pause(seconds, reason)
        log.error("account_paused", conta=self.name, seconds=round(seconds, 1), reason=reason)
        return seconds

    def answered(self) -> None:
        """The CRM answered normally: the breaker closes and pauses start small again."""
        self.consecutive_failures = 0
        self.consecutive_pauses = 0


def build_accounts(settings: Settings) -> dict[str, Account]:
    accounts = {}
    for name, acct in settings.crm.accounts().items():
        limiter = RateLimiter(acct.limits, margin=acct.limit_margin_seconds)
        accounts[name] = Account(
            name=name,
            settings=acct,
            limiter=limiter,
            provider=providers.create(name, acct, limiter),
            slots=asyncio.Semaphore(acct.concurrency),
        )
    return accounts


async def preload_budgets(conn: asyncpg.Connection, accounts: dict[str, Account]) -> None:
    """Seed each limiter with the requests the log says were sent within its longest window."""
    for account in accounts.values():
        window = max(limit.per_seconds for limit in account.settings.limits)
        rows = await conn.fetch(queries["requests_sent_since"], account.name, window)
        account.limiter.preload(r["at"] for r in rows for _ in range(r["requisicoes"]))


async def close_accounts(accounts: dict[str, Account]) -> None:
    for account in accounts.values():
        await account.provider.transport.close()
