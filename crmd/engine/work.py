"""What the engine passes along: a claimed item with what was loaded for it, and its counters."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from crmd.crm.accounts import Account
from crmd.crm.providers.base import Row
from crmd.crm.transport import RequestCount
from crmd.model import Item


@dataclass
class Work:
    """A claimed item with what the claimer loaded for it."""

    item: Item
    account: Account
    row: Row | None  # None: the record is no longer in the ERP
    external_id: str | None
    payload_hash: str | None
    create_unsure: bool = False  # a previous create's outcome is unknown: look up first
    unsure_key: str | None = None  # the natural key that create was about
    load_error: str | None = None  # the row could not be read: why, naming the column
    count: RequestCount | None = None  # the requests sent for it so far (set when sending)
    started: bool = False  # its first request was let out (or it ended without one): attempt spent
    on_send: Callable[[], None] | None = None  # called when its first request is let out

    @property
    def waiting(self) -> bool:
        """Whether it waits to send (for its account's turn, or for the rate limit or a pause),
        with no request out: what a shutdown gives back at once."""
        if self.count is None:
            return True
        return self.count.queued > 0 and self.account.limiter.holding_back


@dataclass
class Stats:
    """Counters since start, for the summary line, status and metrics."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    ignored: int = 0  # items of an entity the CRM has no resource for
    requests: int = 0
    by_entity: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failed_by_entity: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ignored_by_entity: dict[str, int] = field(default_factory=lambda: defaultdict(int))
