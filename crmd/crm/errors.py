"""The errors a CRM call ends in, by what crmd should do about them."""

from __future__ import annotations

from enum import Enum


class ErrorKind(Enum):
    RETRYABLE = "retryable"  # timeouts, connection errors, 5xx: try again later
    PERMANENT = "permanent"  # validation errors, other 4xx: a person must look
    NOT_FOUND = "not_found"  # the record does not exist in the CRM
    RATE_LIMITED = "rate_limited"  # 429: the whole account is over its budget
    AUTH = "auth"  # 401/403: the account's credentials are wrong
    UNSUPPORTED = "unsupported"  # the CRM has no such resource


class CrmError(Exception):
    """A failed CRM operation; `message` is the CRM's own words where it gave any."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
        delivered: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.http_status = http_status
        self.retry_after = retry_after
        # Whether the CRM may have acted on the request: assumed, unless the transport knows
        # the connection was never made (then nothing reached it).
        self.delivered = True if delivered is None else delivered
