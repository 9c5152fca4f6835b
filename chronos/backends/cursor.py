"""Opaque pagination cursors shared by the backends.

A cursor is URL-safe base64 of a small JSON object. It is opaque to clients; decoding checks
its shape so that a tampered cursor gives a clear ``ValidationError``, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from chronos.errors import ValidationError

#: Integers in cursors stay within what JSON numbers and RediSearch bounds hold exactly.
SAFE_INT = 2**53


def encode(kind: str, **fields: Any) -> str:
    raw = json.dumps({"k": kind, **fields}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, kind: str, **types: type) -> dict[str, Any]:
    """Decode a cursor of ``kind`` whose fields have the given types."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise ValidationError("cursor is not valid", details={"cursor": cursor[:100]}) from exc
    if not isinstance(data, dict) or data.get("k") != kind:
        raise ValidationError("cursor is not valid", details={"cursor": cursor[:100]})
    for name, typ in types.items():
        value = data.get(name)
        if not isinstance(value, typ) or isinstance(value, bool):
            raise ValidationError("cursor is not valid", details={"cursor": cursor[:100]})
        if isinstance(value, int) and abs(value) > SAFE_INT:  # would overflow a query bound
            raise ValidationError("cursor is not valid", details={"cursor": cursor[:100]})
    return data
