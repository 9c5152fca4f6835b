"""The doctor's checks of how the Redis server is run: persistence, eviction and memory use,
and its clock against this host's. They read the server's settings (``CONFIG GET``, or
``INFO`` when an ACL or a managed service refuses it) and say what puts data at risk.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from chronos.doctor import Result, fail, ok, warn

#: Clock difference between this host and Redis that is worth a warning, and one that breaks
#: things: claims, heartbeats and rate windows last 60 s.
SKEW_WARN_MS = 1_000
SKEW_FAIL_MS = 30_000


def check_persistence(r: redis.Redis) -> Result:
    """Append-only file (with its fsync policy) or snapshots, read with CONFIG GET."""
    try:
        config = r.config_get("appendonly", "appendfsync", "save")
    except redis.ResponseError as exc:
        aof = r.info("persistence").get("aof_enabled")
        said = {
            1: " INFO says the append-only file is on.",
            0: " INFO says the append-only file is off.",
        }.get(aof, "")
        return warn(
            "persistence",
            f"CONFIG GET is refused ({exc}), so the fsync policy and "
            f"snapshot schedule cannot be read.{said}",
            "check persistence where the server is managed (a console, redis.conf): "
            "appendonly yes with appendfsync everysec or always",
            aof_enabled=aof,
        )
    aof, fsync, save = config.get("appendonly"), config.get("appendfsync"), config.get("save")
    details = {"appendonly": aof, "appendfsync": fsync, "save": save}
    if aof == "yes":
        if fsync == "no":
            return warn(
                "persistence",
                "The append-only file is on but fsync is left to the "
                "OS: a power cut can lose the last ~30 s of writes.",
                "appendfsync everysec (at most 1 s lost) or always",
                **details,
            )
        return ok("persistence", f"Append-only file on, fsync {fsync}.", **details)
    if save:
        return warn(
            "persistence",
            f"Only snapshots (save {save}): a crash loses everything written since the last one.",
            "appendonly yes",
            **details,
        )
    return warn(
        "persistence",
        "No persistence at all: a restart of Redis loses every job, execution, user and API key.",
        "appendonly yes (and appendfsync everysec)",
        **details,
    )


def check_memory(r: redis.Redis) -> Result:
    """maxmemory-policy must be noeviction, and usage not near maxmemory."""
    info = r.info("memory")
    policy = info.get("maxmemory_policy")
    limit, used = int(info.get("maxmemory", 0) or 0), int(info.get("used_memory", 0) or 0)
    details = {"policy": policy, "maxmemory": limit, "used": used}
    if policy is None:
        return warn(
            "memory",
            "INFO does not show the eviction policy.",
            "make sure it is noeviction where the server is managed",
            **details,
        )
    if policy != "noeviction":
        return warn(
            "memory",
            f"maxmemory-policy is {policy}: when memory runs out Redis "
            "deletes keys (jobs, API keys, executions, schema records) to make room.",
            "maxmemory-policy noeviction: a full Redis then refuses writes (503) and loses nothing",
            **details,
        )
    used_mb = used / 2**20
    if not limit:
        return ok(
            "memory",
            f"noeviction, {used_mb:.0f} MiB used, no maxmemory (Redis grows "
            "until the machine runs out; set maxmemory to keep headroom).",
            **details,
        )
    share = used / limit
    if share > 0.9:
        return warn(
            "memory",
            f"{share:.0%} of maxmemory is used ({used_mb:.0f} of "
            f"{limit / 2**20:.0f} MiB): writes are refused when it is full.",
            "raise maxmemory, or lower CHRONOS_EXECUTION_RETENTION_DAYS",
            **details,
        )
    return ok(
        "memory",
        f"noeviction, {used_mb:.0f} of {limit / 2**20:.0f} MiB used ({share:.0%}).",
        **details,
    )


def check_clock(r: redis.Redis, clock: Callable[[], int]) -> Result:
    """This host's clock against Redis's ``TIME`` (half a round trip of uncertainty)."""
    before = clock()
    seconds, micros = r.time()
    after = clock()
    skew = seconds * 1000 + micros // 1000 - (before + after) // 2
    details = {"skewMs": skew, "roundTripMs": after - before}
    words = f"This host's clock is {abs(skew)} ms {'behind' if skew > 0 else 'ahead of'} Redis's"
    if abs(skew) <= max(1, after - before):  # within the measurement's own uncertainty
        words = f"This host's clock agrees with Redis's (within {after - before + 1} ms)"
    hint = "run NTP (chrony or systemd-timesyncd) on this host and on the Redis host"
    if abs(skew) >= SKEW_FAIL_MS:
        return fail(
            "clock", f"{words}: claims, heartbeats and rate windows (60 s) break.", hint, **details
        )
    if abs(skew) >= SKEW_WARN_MS:
        return warn("clock", f"{words}.", hint, **details)
    return ok("clock", f"{words}.", **details)
