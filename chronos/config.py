"""Settings, read from ``CHRONOS_*`` environment variables.

=================================== ============================================================
``CHRONOS_BACKEND_URL``             ``redis://``, ``rediss://`` or ``unix://`` for Redis Stack,
                                    ``memory://`` for the in-process backend. Unset: the embedded
                                    Redis Stack in the data dir (see ``chronos.embedded``).
``CHRONOS_DATA_DIR``                Where the embedded server and the generated secret key live
                                    (default ``./instance``).
``CHRONOS_SECRET_KEY``              Flask's secret key. Unset: generated once and kept in
                                    ``<data dir>/secret_key``.
``CHRONOS_KEY_PREFIX``              Prefix of every Redis key, index and channel (``chronos:``).
``CHRONOS_EXECUTION_RETENTION_DAYS`` How long execution records are kept after their run started
                                    (30; 0 = until the per-job cap removes them). Default of
                                    every tenant that sets none (``chronos tenant-retention``).
``CHRONOS_MAX_EXECUTIONS_PER_JOB``  Execution records kept per job, its newest (10000; 0 = no
                                    cap). Default of every tenant that sets none.
``CHRONOS_METRICS_RETENTION_DAYS``  How long hourly/daily metrics and sketches are kept (400).
                                    Default of every tenant that sets none.
``CHRONOS_RETENTION_SWEEP_SECONDS`` How often the scanner removes executions over their
                                    tenant's retention (300; 0 = never: run
                                    ``chronos retention-sweep`` yourself).
``CHRONOS_AUTO_MIGRATE``            Apply pending index migrations on first use (``1``).
``CHRONOS_EMBEDDED_FSYNC``          ``always`` (default: nothing acknowledged is lost if the
                                    server dies) or ``everysec`` (faster; up to 1 s at risk on
                                    a power cut).
``CHRONOS_MAX_BODY_BYTES``          Largest accepted request body (10 MiB).
``CHRONOS_MAX_BATCH_ITEMS``         Most items in one ingest request (5000).
``CHRONOS_MAX_OUTPUT_BYTES``        stdout, stderr and error stacks above this many bytes are
                                    cut, keeping head and tail (64 KiB).
``CHRONOS_INGEST_RATE_PER_MINUTE``  Ingest requests a tenant may make per minute, over all
                                    workers (120000; 0 = no limit). Over it: 429 + Retry-After.
``CHRONOS_API_KEY_CACHE_SECONDS``   How long a worker trusts a looked-up API key (5): a revoked
                                    key stops working everywhere within this time.
``CHRONOS_AUTH_FAILURES_PER_MINUTE`` Failed API-key authentications allowed per minute from one
                                    client address, and for one key id (20; 0 = no limit).
                                    After that many, every key from there (or with that id)
                                    gets 429 + Retry-After until the minute ends.
``CHRONOS_CATCH_UP_SECONDS``        A scheduled instant the scanner sees later than this (it
                                    was down) is recorded as missed instead of firing (300).
``CHRONOS_DEFAULT_GRACE_SECONDS``   How long after its instant a run may start before it is
                                    missed, for jobs that set no ``graceSeconds`` (60).
``CHRONOS_SCAN_INTERVAL_MS``        How often the scanner ticks (500).
``CHRONOS_SESSION_HOURS``           How long a dashboard login lasts (12).
``CHRONOS_SECURE_COOKIES``          Send the session cookie over HTTPS only (``0``). Behind
                                    HTTPS it must be ``1``.
``CHRONOS_TRUST_PROXY``             Trust one reverse proxy's ``X-Forwarded-For``, ``-Proto``,
                                    ``-Host`` and ``-Prefix`` headers (``0``). Set it only when
                                    a proxy always sets them; else clients could forge them.
``CHRONOS_METRICS_TOKEN``           Bearer token of ``GET /metrics`` for the operator's
                                    Prometheus: server metrics and every tenant's job metrics
                                    (unset: only read keys, each its own tenant's job metrics).
                                    At least 16 characters.
``CHRONOS_LOG_FORMAT``              ``text`` (default) or ``json``: one JSON object per line on
                                    stderr, with request id, method, path, status, duration and
                                    tenant (see ``chronos.logs``).
=================================== ============================================================
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chronos.errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "CHRONOS_BACKEND_URL": None,
    "CHRONOS_DATA_DIR": "instance",
    "CHRONOS_KEY_PREFIX": "chronos:",
    "CHRONOS_EXECUTION_RETENTION_DAYS": 30,
    "CHRONOS_METRICS_RETENTION_DAYS": 400,
    "CHRONOS_MAX_EXECUTIONS_PER_JOB": 10_000,
    "CHRONOS_RETENTION_SWEEP_SECONDS": 300,
    "CHRONOS_AUTO_MIGRATE": True,
    "CHRONOS_EMBEDDED_FSYNC": "always",
    "CHRONOS_MAX_BODY_BYTES": 10 * 1024 * 1024,
    "CHRONOS_MAX_BATCH_ITEMS": 5000,
    "CHRONOS_MAX_OUTPUT_BYTES": 64 * 1024,
    "CHRONOS_INGEST_RATE_PER_MINUTE": 120_000,
    "CHRONOS_API_KEY_CACHE_SECONDS": 5,
    "CHRONOS_AUTH_FAILURES_PER_MINUTE": 20,
    "CHRONOS_CATCH_UP_SECONDS": 300,
    "CHRONOS_DEFAULT_GRACE_SECONDS": 60,
    "CHRONOS_SCAN_INTERVAL_MS": 500,
    "CHRONOS_SESSION_HOURS": 12,
    "CHRONOS_SECURE_COOKIES": False,
    "CHRONOS_TRUST_PROXY": False,
    "CHRONOS_METRICS_TOKEN": None,
    "CHRONOS_LOG_FORMAT": "text",
}

_INTS = (
    "CHRONOS_EXECUTION_RETENTION_DAYS",
    "CHRONOS_METRICS_RETENTION_DAYS",
    "CHRONOS_MAX_EXECUTIONS_PER_JOB",
    "CHRONOS_RETENTION_SWEEP_SECONDS",
    "CHRONOS_MAX_BODY_BYTES",
    "CHRONOS_MAX_BATCH_ITEMS",
    "CHRONOS_MAX_OUTPUT_BYTES",
    "CHRONOS_INGEST_RATE_PER_MINUTE",
    "CHRONOS_API_KEY_CACHE_SECONDS",
    "CHRONOS_AUTH_FAILURES_PER_MINUTE",
    "CHRONOS_CATCH_UP_SECONDS",
    "CHRONOS_DEFAULT_GRACE_SECONDS",
    "CHRONOS_SCAN_INTERVAL_MS",
    "CHRONOS_SESSION_HOURS",
)
#: Retention settings that would make no sense below these.
_AT_LEAST = {
    "CHRONOS_EXECUTION_RETENTION_DAYS": 0,
    "CHRONOS_MAX_EXECUTIONS_PER_JOB": 0,
    "CHRONOS_METRICS_RETENTION_DAYS": 1,
    "CHRONOS_RETENTION_SWEEP_SECONDS": 0,
}
_BOOLS = ("CHRONOS_AUTO_MIGRATE", "CHRONOS_SECURE_COOKIES", "CHRONOS_TRUST_PROXY")


def from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``CHRONOS_*`` settings found in ``environ``, converted and checked."""
    found: dict[str, Any] = {}
    for name in (*DEFAULTS, "CHRONOS_SECRET_KEY"):
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        if name in _INTS:
            try:
                found[name] = int(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
        elif name in _BOOLS:
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")
            found[name] = raw.lower() in ("1", "true", "yes")
        else:
            found[name] = raw
    for name, low in _AT_LEAST.items():
        if name in found and found[name] < low:
            raise ConfigError(f"{name} must be at least {low}, got {found[name]}")
    if found.get("CHRONOS_EMBEDDED_FSYNC", "always") not in ("always", "everysec"):
        raise ConfigError("CHRONOS_EMBEDDED_FSYNC must be 'always' or 'everysec'")
    if found.get("CHRONOS_LOG_FORMAT", "text") not in ("text", "json"):
        raise ConfigError("CHRONOS_LOG_FORMAT must be 'text' or 'json'")
    return found


def secret_key(data_dir: Path) -> str:
    """The secret key kept in ``<data dir>/secret_key``, created (mode 0600) on first use."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Written whole to a file of our own (mkstemp: mode 0600), then linked into place: a worker
    # racing us (gunicorn boots its workers at once) either wins or reads our complete key;
    # opening the final name with O_EXCL let it read the file before the key was in it.
    fd, scratch = tempfile.mkstemp(dir=data_dir, prefix=".secret_key.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        with contextlib.suppress(FileExistsError):  # another worker won; its key is whole
            os.link(scratch, path)
    finally:
        os.unlink(scratch)
    return path.read_text().strip()
