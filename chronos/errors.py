"""The exceptions Chronos raises, and the HTTP status each one maps to.

Hierarchy::

    ChronosError                     500  something went wrong that is ours to fix
    ├── ConfigError                  500  a setting is missing or wrong; the message names it
    ├── ValidationError              422  input was understood but is not acceptable
    ├── BadRequest                   400  input could not be read at all (bad JSON, wrong shape)
    ├── Unauthorized                 401  no credentials, or credentials that match nothing
    ├── Forbidden                    403  the caller may not do this
    ├── NotFound                     404  no such thing in the caller's tenant
    ├── Conflict                     409  the thing exists already, or changed under us
    ├── PayloadTooLarge              413  the body is over the configured limit
    ├── RateLimited                  429  too many requests; ``retry_after`` says when to retry
    └── BackendUnavailable           503  the storage backend cannot be reached; retry later

Backends translate their driver's errors into these at their edge (``raise ... from exc``),
so nothing above the backend ever imports a driver.
"""

from __future__ import annotations

from typing import Any


class ChronosError(Exception):
    """Base class of every error Chronos raises on purpose."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: Any = None, cause: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        #: What the operator needs beyond ``message`` (a driver's own words, which name hosts
        #: and ports): for logs and the command line, never for an answer to a client.
        self.cause = cause

    @property
    def for_operators(self) -> str:
        """The message with its cause, for logs and the command line."""
        return f"{self.message}: {self.cause}" if self.cause else self.message

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class ConfigError(ChronosError):
    code = "config_error"


class ValidationError(ChronosError):
    status_code = 422
    code = "validation_error"


class BadRequest(ChronosError):
    status_code = 400
    code = "bad_request"


class Unauthorized(ChronosError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ChronosError):
    status_code = 403
    code = "forbidden"


class NotFound(ChronosError):
    status_code = 404
    code = "not_found"


class Conflict(ChronosError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(ChronosError):
    status_code = 413
    code = "payload_too_large"


class RateLimited(ChronosError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = max(1, int(retry_after))


class BackendUnavailable(ChronosError):
    """The backend cannot be reached. Callers answer 503 with ``Retry-After``."""

    status_code = 503
    code = "backend_unavailable"

    def __init__(
        self, message: str, *, retry_after: int = 5, details: Any = None, cause: str | None = None
    ) -> None:
        super().__init__(message, details=details, cause=cause)
        self.retry_after = max(1, int(retry_after))
