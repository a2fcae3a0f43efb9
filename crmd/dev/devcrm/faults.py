"""Faults the development CRM can be told to inject, so a client's failure paths can be exercised.

They are set from command-line flags at start, from `POST /_dev/faults` while running, or in
process (`DevCrm.set_faults` or by assigning to `DevCrm.faults`). Where each applies in the life of
a request is described in `crmd.dev.devcrm.server`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


@dataclass
class Faults:
    """The faults in force now. Plain and mutable so tests can flip one field at a time."""

    latency: float = 0.0
    """Seconds to wait before answering any API request."""
    error_rate: float = 0.0
    """Fraction of admitted requests answered 500, 502 or 503 at random."""
    drop_rate: float = 0.0
    """Fraction of requests whose connection is closed without an answer."""
    outage: bool = False
    """Answer every API request 503 (until cleared, or until `outage_until`)."""
    outage_until: float | None = None
    """`time.monotonic()` at which an outage ends by itself; None means until cleared."""
    burst_429: int = 0
    """The next this-many API requests are answered 429 whatever the limits say."""
    auth_fail: bool = False
    """Refuse every API request with 401, as if the tokens had been revoked."""
    empty_list_as_string: bool = False
    """Answer an empty list with `"data": "Não há dados!"` instead of `[]` (the server starts
    with it on, as GestãoClick answers)."""
    loose_filters: bool = False
    """List filters match every record whose field contains the value, not only equal ones,
    as list filters have been seen to: a client must check the key of every candidate."""

    def in_outage(self, now: float) -> bool:
        if self.outage and self.outage_until is not None and now >= self.outage_until:
            self.outage = False
            self.outage_until = None
        return self.outage

    def to_json(self, now: float) -> dict[str, Any]:
        body = asdict(self)
        del body["outage_until"]
        body["outage"] = self.in_outage(now)
        remaining = None if self.outage_until is None else max(0.0, self.outage_until - now)
        body["outage_remaining"] = remaining
        return body


class FaultsUpdate(BaseModel):
    """The body of `POST /_dev/faults`: any subset of the fields; the rest stay as they are.

    `outage_seconds` starts an outage that ends by itself; `"outage": false` ends one at once.
    """

    model_config = ConfigDict(extra="forbid")

    latency: float | None = Field(default=None, ge=0)
    error_rate: float | None = Field(default=None, ge=0, le=1)
    drop_rate: float | None = Field(default=None, ge=0, le=1)
    outage: bool | None = None
    outage_seconds: float | None = Field(default=None, gt=0)
    burst_429: int | None = Field(default=None, ge=0)
    auth_fail: bool | None = None
    empty_list_as_string: bool | None = None
    loose_filters: bool | None = None

    def apply(self, faults: Faults, now: float) -> None:
        for name in _PLAIN_FIELDS:
            value = getattr(self, name)
            if value is not None:
                setattr(faults, name, value)
        if self.outage_seconds is not None and self.outage is not False:
            faults.outage = True
            faults.outage_until = now + self.outage_seconds
        elif self.outage is not None:
            faults.outage = self.outage
            faults.outage_until = None


_PLAIN_FIELDS = (
    "latency",
    "error_rate",
    "drop_rate",
    "burst_429",
    "auth_fail",
    "empty_list_as_string",
    "loose_filters",
)
