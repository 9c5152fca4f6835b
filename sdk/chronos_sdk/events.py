"""Building execution events: timestamps, error details, host and app version."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import socket
import subprocess
import traceback
from datetime import UTC, datetime
from typing import Any

from chronos_sdk import __version__
from chronos_sdk.capture import truncate

STATUSES = ("running", "success", "failed", "timeout", "cancelled")
# Server-side limits (chronos/schemas.py): over them the server rejects the event.
SHORT_MAX = 256
LABEL_KEY_MAX = 64
LABEL_VALUE_MAX = 256


def iso_utc(timestamp: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds: ``2026-11-28T12:00:00.123Z``."""
    dt = datetime.fromtimestamp(timestamp, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def base_event(
    exec_id: str,
    job_id: str,
    status: str,
    started_at: float,
    *,
    host: str | None,
    app_version: str | None = None,
    job_version: str | None = None,
    attempt: int = 1,
    trigger_id: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The fields every event of one run shares; ``None`` values are dropped by the client."""
    return {
        "execId": exec_id,
        "jobId": job_id,
        "status": status,
        "startedAt": iso_utc(started_at),
        "attempt": attempt,
        "triggerId": trigger_id or None,
        "host": host,
        "appVersion": app_version,
        "jobVersion": job_version,
        "sdkVersion": __version__,
        "labels": clean_labels(labels),
    }


def clean_labels(labels: dict[str, str] | None) -> dict[str, str] | None:
    """Labels as the server takes them (keys 1-64 chars, values up to 256): clipped, not lost,
    since one bad label would make the server reject the whole event."""
    if not labels:
        return None
    return {str(k)[:LABEL_KEY_MAX]: str(v)[:LABEL_VALUE_MAX] for k, v in labels.items() if k}


def error_fields(exc: BaseException) -> dict[str, Any]:
    """``errorType`` (qualified class name), ``errorMessage`` and ``errorStack`` of ``exc``."""
    cls = type(exc)
    name = cls.__qualname__
    if cls.__module__ != "builtins":
        name = f"{cls.__module__}.{name}"
    return {
        "errorType": name[-SHORT_MAX:],
        "errorMessage": str(exc) or name,
        "errorStack": "".join(traceback.format_exception(exc)),
    }


def clip_fields(event: dict[str, Any], fields: tuple[str, ...], max_bytes: int) -> list[str]:
    """Truncate the named text fields in place; return the names that were cut."""
    cut = []
    for field in fields:
        value = event.get(field)
        if isinstance(value, str):
            event[field], was_cut = truncate(value, max_bytes)
            if was_cut:
                cut.append(field)
    return cut


@functools.cache
def hostname() -> str | None:
    try:
        return socket.gethostname()
    except OSError:
        return None


def detect_app_version(module: str | None = None) -> str | None:
    """``$CHRONOS_APP_VERSION``, else the installed version of ``module``'s top-level package,
    else ``git rev-parse --short HEAD`` in the working directory, else ``None``."""
    env = os.environ.get("CHRONOS_APP_VERSION")
    if env:
        return env
    top = module.partition(".")[0] if module else ""
    if top and top not in ("__main__", "chronos_sdk"):
        version = _package_version(top)
        if version:
            return version
    return _git_version(os.getcwd())


@functools.cache
def _package_version(top: str) -> str | None:
    try:
        return importlib.metadata.version(top)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        pass
    try:
        for dist in importlib.metadata.packages_distributions().get(top, []):
            return importlib.metadata.version(dist)
    except Exception:  # metadata of broken installs can raise anything; a version is optional
        return None
    return None


@functools.cache
def _git_version(cwd: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=1,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and out else None
