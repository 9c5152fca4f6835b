"""Weekly duration sketches: made by reads from the daily ones, once a week is final."""

from __future__ import annotations

import statistics

import pytest

from chronos.backends.redis_stack import RedisStackBackend
from chronos.backends.redis_stack.keys import FIRST_MONDAY_MS, WEEK_MS
from chronos.timeutil import now_ms

DAY = 86_400_000


def _daily(backend: RedisStackBackend, job: str, day: int, values: list[float]) -> None:
    """A daily sketch as the write path leaves it (with its expiry)."""
    key = backend.keys.sketch("acme", job, "d", day)
    r = backend.client()
    r.execute_command("TDIGEST.CREATE", key, "COMPRESSION", 200)
    r.execute_command("TDIGEST.ADD", key, *values)
    r.pexpireat(key, day + backend.options.default_retention.metrics_retention_ms)


def test_old_weeks_are_read_from_weekly_sketches_made_from_the_days(
    redis_backend: RedisStackBackend,
) -> None:
    now = now_ms()
    today = now - now % DAY
    start, end = today - 60 * DAY, today - 5 * DAY
    values: list[float] = []
    for i, day in enumerate(range(start, end, DAY)):
        if i % 5 == 3:
            continue  # days without runs
        day_values = [float(100 * (i % 9) + j) for j in range(1, 21)]
        _daily(redis_backend, "job|x", day, day_values)
        values += day_values
    quantiles = [0.5, 0.95, 0.99]
    first = redis_backend.duration_quantiles("acme", "job|x", [start, end], quantiles)[0]
    expected = statistics.quantiles(values, n=100, method="inclusive")
    for got, q in zip(first, quantiles, strict=True):
        assert got == pytest.approx(expected[round(q * 100) - 1], rel=0.05)

    r = redis_backend.client()
    final = now - 8 * DAY  # no run can be counted into a week that ended before this
    mondays = [w for w in range(start, end, DAY) if (w - FIRST_MONDAY_MS) % WEEK_MS == 0]
    weeks = [w for w in mondays if w + WEEK_MS <= min(end, final)]
    assert len(weeks) >= 6
    made = {w for w in range(start - WEEK_MS, end + WEEK_MS, DAY)
            if r.exists(redis_backend.keys.sketch("acme", "job|x", "w", w))}  # fmt: skip
    assert made == set(weeks)  # whole final weeks only: not the partial or recent ones
    for w in weeks:
        expires = r.pexpiretime(redis_backend.keys.sketch("acme", "job|x", "w", w))
        assert expires == w + redis_backend.options.default_retention.metrics_retention_ms

    # Later reads take the weekly sketches, not the days: dropping the days changes nothing.
    for w in weeks:
        r.delete(*(redis_backend.keys.sketch("acme", "job|x", "d", d)
                   for d in range(w, w + WEEK_MS, DAY)))  # fmt: skip
    again = redis_backend.duration_quantiles("acme", "job|x", [start, end], quantiles)[0]
    assert again == first
    # Another tenant's job of the same id sees none of it.
    assert redis_backend.duration_quantiles("zeta", "job|x", [start, end], [0.5]) == [[None]]
