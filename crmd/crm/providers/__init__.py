"""CRM providers: one module per CRM, all behind the interface in `base.py`."""

from __future__ import annotations

from crmd.config import CrmAccountSettings
from crmd.crm.limiter import RateLimiter
from crmd.crm.providers.base import Provider


def create(account: str, settings: CrmAccountSettings, limiter: RateLimiter) -> Provider:
    """The provider named by the account's `provider` key, with its own HTTP transport."""
    if settings.provider == "gestaoclick":
        from crmd.crm.providers.gestaoclick import GestaoClick

        return GestaoClick(account, settings, limiter)
    raise ValueError(f"unknown provider {settings.provider!r}")
