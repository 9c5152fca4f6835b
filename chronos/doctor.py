"""``chronos doctor``: can this installation work, and if not, what to do about it.

Every check is a plain function returning a :class:`Result`: ``ok``, ``warn`` (Chronos works,
but something risks data or needs attention), ``fail`` (Chronos cannot work like this) or
``skip`` (does not apply here), with a sentence saying what was found and a hint saying what
to do. :func:`run` runs them in order for an app's settings; the CLI only prints them.

The checks only read, except one: ``write`` stores a short-lived heartbeat (``doctor``) from a
Lua script, because writing and scripting are what the web workers and the scanner need.
The checks of a Redis server live in ``chronos.doctor_redis`` (can Chronos work with it) and
``chronos.doctor_server`` (is it run so that data is safe).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chronos import embedded
from chronos.backends import backend_class
from chronos.backends.base import Backend
from chronos.errors import ChronosError
from chronos.extension import ChronosState
from chronos.scheduler.service import HEARTBEAT
from chronos.timeutil import now_ms, to_iso

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"

#: The checks that need a Redis server, in the order they run (``skip``ped on other backends).
REDIS_CHECKS = (
    "url",
    "database",
    "connection",
    "server",
    "modules",
    "write",
    "pubsub",
    "schema",
    "indices",
    "persistence",
    "memory",
    "clock",
)
#: A secret key shorter than this is guessable enough to forge sessions.
MIN_SECRET_KEY_CHARS = 32


@dataclass(frozen=True, slots=True)
class Result:
    """One check's verdict: ``status`` is ok, warn, fail or skip."""

    name: str
    status: str
    message: str
    hint: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "message": self.message,
            "hint": self.hint,
            "details": self.details,
        }


def ok(name: str, message: str, **details: Any) -> Result:
    return Result(name, OK, message, "", details)


def warn(name: str, message: str, hint: str, **details: Any) -> Result:
    return Result(name, WARN, message, hint, details)


def fail(name: str, message: str, hint: str, **details: Any) -> Result:
    return Result(name, FAIL, message, hint, details)


def failed(results: Sequence[Result]) -> bool:
    """True when any check failed: ``chronos doctor`` then exits with 1."""
    return any(r.status == FAIL for r in results)


# -- settings -------------------------------------------------------------------------------


def check_secret_key(config: dict[str, Any], data_dir: Path) -> Result:
    """Where the secret key that signs dashboard sessions comes from, and whether it is safe."""
    from_env = config.get("CHRONOS_SECRET_KEY")
    if from_env:
        if len(from_env) < MIN_SECRET_KEY_CHARS:
            return warn(
                "secret-key",
                f"CHRONOS_SECRET_KEY has only {len(from_env)} characters.",
                "use a random key of at least 32 characters, e.g. "
                "`python3 -c 'import secrets; print(secrets.token_urlsafe(48))'`",
            )
        return ok(
            "secret-key",
            "The secret key comes from CHRONOS_SECRET_KEY.",
            source="CHRONOS_SECRET_KEY",
        )
    path = data_dir / "secret_key"
    if not path.exists():
        return warn(
            "secret-key",
            f"No CHRONOS_SECRET_KEY and no {path} yet.",
            "the first start generates it; with several web hosts set the same "
            "CHRONOS_SECRET_KEY on each instead",
        )
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return warn(
            "secret-key",
            f"{path} can be read by other users (mode {mode:04o}).",
            f"chmod 600 {path}",
            source=str(path),
        )
    return ok(
        "secret-key",
        f"The secret key is generated and kept in {path} (mode 0600). Every "
        "web host needs the same key: with more than one, set CHRONOS_SECRET_KEY on each.",
        source=str(path),
    )


def check_scanner(backend: Backend, now: int, scan_interval_ms: int) -> Result:
    """Is a scanner ticking? Its heartbeat lapses 60 s after its last tick."""
    beat = backend.last_beat(HEARTBEAT)
    if beat is None:
        return warn(
            "scanner",
            "No scanner has ticked in the last 60 s: scheduled jobs do not "
            "fire, and missed and timed-out runs are not recorded.",
            "start one: `chronos scheduler` (the chronos-scanner systemd unit), or "
            "`chronos serve` without --no-scheduler",
        )
    age_ms = now - int(beat.get("at", 0))
    stale_ms = max(5_000, 10 * scan_interval_ms)
    details = {
        "owner": beat.get("owner"),
        "lastTick": to_iso(int(beat.get("at", 0))),
        "ageMs": age_ms,
        "tookMs": beat.get("tookMs"),
    }
    if age_ms > stale_ms:
        return warn(
            "scanner",
            f"The scanner's last tick ({beat.get('owner')}) was "
            f"{age_ms / 1000:.1f} s ago; it should tick every "
            f"{scan_interval_ms / 1000:g} s.",
            "look at the scanner's log (journalctl -u chronos-scanner): it is stuck, "
            "overloaded, or its clock is behind",
            **details,
        )
    if beat.get("errors"):
        return warn(
            "scanner",
            f"The scanner ticks ({beat.get('owner')}, {age_ms} ms ago) but "
            f"its last tick had {beat['errors']} errors.",
            "see the scanner's log for the jobs that failed",
            **details,
        )
    return ok(
        "scanner",
        f"The scanner {beat.get('owner')} ticked {age_ms} ms ago "
        f"(the tick took {beat.get('tookMs')} ms).",
        **details,
    )


# -- running them ---------------------------------------------------------------------------


def _skipped(names: Sequence[str], why: str) -> list[Result]:
    return [Result(name, SKIP, why) for name in names]


def run(state: ChronosState, clock: Callable[[], int] = now_ms) -> list[Result]:
    """Every check, in order, for the app whose state is ``state``. Never raises for what it
    finds; starts nothing (an embedded server that is down is reported, not started)."""
    config = state.config
    results = [check_secret_key(config, state.data_dir)]
    url = config.get("CHRONOS_BACKEND_URL")
    if not url:
        url = embedded.running_url(state.data_dir)
        if url is None:
            results.append(
                warn(
                    "backend",
                    f"CHRONOS_BACKEND_URL is unset and the embedded Redis "
                    f"Stack of {state.data_dir} is not running.",
                    "`chronos serve` starts it (or `chronos embedded start`); in "
                    "production set CHRONOS_BACKEND_URL",
                )
            )
            return results + _skipped((*REDIS_CHECKS, "scanner"), "the embedded server is down")
        results.append(ok("backend", f"The embedded Redis Stack of {state.data_dir} at {url}."))
    try:
        cls = backend_class(url)
    except ChronosError as exc:
        results.append(fail("backend", exc.for_operators, "fix CHRONOS_BACKEND_URL"))
        return results + _skipped((*REDIS_CHECKS, "scanner"), "no usable backend")
    from chronos.backends.redis_stack import RedisStackBackend

    if not issubclass(cls, RedisStackBackend):
        return results + _other_backend(cls, url, state)
    if config.get("CHRONOS_BACKEND_URL"):
        from chronos.backends.redis_stack.url import redact

        results.append(
            ok(
                "backend",
                f"Redis Stack at {redact(url)}, key prefix {config['CHRONOS_KEY_PREFIX']!r}.",
            )
        )
    from chronos import doctor_redis

    redis_results, backend = doctor_redis.run(url, state.options(), clock)
    results += redis_results
    if backend is None:
        return results + _skipped(("scanner",), "no connection to Redis")
    try:
        scan_ms = int(config["CHRONOS_SCAN_INTERVAL_MS"])
        results.append(_guarded("scanner", lambda: check_scanner(backend, clock(), scan_ms)))
    finally:
        backend.close()
    return results


def _other_backend(cls: type[Backend], url: str, state: ChronosState) -> list[Result]:
    backend = cls(url, state.options())
    try:
        health = backend.health()
    except ChronosError as exc:
        return [
            fail(
                "backend",
                f"The {cls.name} backend does not answer: {exc.for_operators}",
                "check CHRONOS_BACKEND_URL",
            )
        ]
    finally:
        backend.close()
    note = f"the {cls.name} backend has no Redis server to check"
    if cls.name == "memory":
        found = warn(
            "backend",
            "memory:// keeps everything in each process's memory: every "
            "gunicorn worker has its own data, and a restart loses it all.",
            "for demos and tests only; in production point CHRONOS_BACKEND_URL at a Redis Stack",
            health=health,
        )
        note = (
            "the memory backend has no Redis server, and its scanner heartbeat lives in "
            "another process"
        )
    else:
        found = ok("backend", f"The {cls.name} backend answers.", health=health)
    return [found, *_skipped((*REDIS_CHECKS, "scanner"), note)]


def _guarded(name: str, check: Callable[[], Result]) -> Result:
    """Run one check; an error while checking is that check's failure, not the doctor's."""
    try:
        return check()
    except ChronosError as exc:
        return fail(name, f"Checking failed: {exc.for_operators}", "see the message")


# -- printing -------------------------------------------------------------------------------


def render(results: Sequence[Result]) -> str:
    """The results as text: one line each, the hint below when there is one, and a summary."""
    width = max((len(r.name) for r in results), default=0)
    lines = []
    for r in results:
        lines.append(f"{r.status.upper():<5} {r.name:<{width}}  {r.message}")
        if r.hint and r.status != OK:
            lines.append(f"{'':<5} {'':<{width}}  -> {r.hint}")
    counts = {s: sum(1 for r in results if r.status == s) for s in (OK, WARN, FAIL, SKIP)}
    lines.append(
        f"{len(results)} checks on {socket.gethostname()}: {counts[OK]} ok, "
        f"{counts[WARN]} warn, {counts[FAIL]} fail, {counts[SKIP]} skipped"
    )
    return "\n".join(lines)
