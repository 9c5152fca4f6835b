"""Time helpers. Everything inside Chronos is integer epoch milliseconds, UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_iso(ms: int | None) -> str | None:
    """The documented answer form: ISO 8601 in UTC with millisecond precision and ``Z``."""
    if ms is None:
        return None
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_timestamp(value: object) -> int:
    """Epoch milliseconds from ISO 8601 (with offset or ``Z``; naive means UTC) or epoch ms.

    Raises ``ValueError`` with a message fit for an API client.
    """
    if isinstance(value, bool):
        raise ValueError("expected an ISO 8601 string or epoch milliseconds, got a boolean")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("epoch milliseconds must be a finite number")
        ms = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            ms = int(text)
        else:
            try:
                dt = datetime.fromisoformat(text.replace("z", "Z"))
            except ValueError:
                raise ValueError(
                    f"{value[:40]!r} is neither ISO 8601 (e.g. 2026-01-31T12:00:00Z) "
                    "nor epoch milliseconds"
                ) from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            ms = (dt - _EPOCH) // _MS  # exact; float seconds * 1000 can lose a millisecond
    else:
        raise ValueError("expected an ISO 8601 string or epoch milliseconds")
    if not 0 <= ms <= 253_402_300_799_999:  # 9999-12-31T23:59:59.999Z
        raise ValueError("timestamp is outside 1970..9999")
    return ms
