"""Passwords and API keys: generation, hashing and verification. Plain Python, no Flask.

API keys look like ``chr_<key id>_<secret>``. The key id (12 hex characters) is the visible
prefix by which the stored record is found in O(1); the 256-bit secret is stored only as its
SHA-256 (a slow KDF adds nothing for a random 256-bit secret) and compared in constant time.
Passwords are hashed with scrypt (n=2**14, r=8, p=1) and a random salt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from chronos.models import ApiKey

KEY_PREFIX = "chr_"
_KEY_RE = re.compile(r"^chr_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return hmac.compare_digest(digest, expected)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly generated key: ``plaintext`` is shown once, ``record`` is what is stored."""

    plaintext: str
    record: ApiKey


def generate_api_key(
    tenant_id: str, username: str, name: str, scopes: tuple[str, ...], now: int
) -> NewKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = ApiKey(
        key_id=key_id, tenant_id=tenant_id, username=username, secret_hash=secret_hash(secret),
        name=name, scopes=scopes, created_at=now,
    )  # fmt: skip
    return NewKey(plaintext=f"{KEY_PREFIX}{key_id}_{secret}", record=record)


def parse_api_key(presented: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed key, else ``None``."""
    match = _KEY_RE.match(presented.strip())
    return (match.group(1), match.group(2)) if match else None


def key_matches(record: ApiKey, secret: str) -> bool:
    return hmac.compare_digest(record.secret_hash, secret_hash(secret))
