"""Cron arithmetic: when a schedule fires next, read on the job's own wall clock.

Plain Python: no Flask, no redis, no clock. Every instant is an ``int`` of epoch milliseconds,
UTC, and the caller passes ``after`` in. An expression has 5 fields (minute hour day-of-month
month day-of-week) or 6 with seconds first, in full croniter syntax (lists, ranges, steps,
month and day names, ``L``, ``#``); day-of-month and day-of-week combine with OR, as in cron.

The expression is matched against the local wall clock of the job's IANA time zone, and each
matching wall-clock time becomes one instant. Daylight-saving changes follow these rules (the
documented instant):

* **Nonexistent times (spring forward).** A wall-clock time inside the gap, e.g. 02:30 in
  Europe/Paris on the last Sunday of March, fires once, at the instant the clock would have
  shown it without the change: it is read with the offset in force before the gap (zoneinfo
  ``fold=0``), so 02:30 becomes 01:30 UTC, which the clock shows as 03:30 CEST.
* **Ambiguous times (fall back).** A wall-clock time that occurs twice, e.g. 02:30 in
  Europe/Paris on the last Sunday of October, fires once, at its first occurrence (``fold=0``).
  The repeated stretch of wall-clock time is not run again, so ``0 * * * *`` fires 24 times on
  that 25-hour day, with two hours between the 02:00 and 03:00 runs.
* **Collapse.** Fire instants are strictly increasing and never repeat. When several
  wall-clock times name the same instant (``*/15 * * * *`` maps the nonexistent 02:00 to the
  instant of the real 03:00), the job fires once at that instant.

``next_fire`` returns the earliest such instant strictly after ``after``. It walks naive
wall-clock candidates with croniter, converts each with ``fold=0`` and skips those at or before
``after``, giving up with ``ValueError`` after ``MAX_CANDIDATES`` candidates.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from chronos.models import Job

#: How many wall-clock candidates ``next_fire`` examines before giving up.
MAX_CANDIDATES = 10_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_SECOND = timedelta(seconds=1)
#: How far back to look for a spring-forward change; longer than any gap in the tz database.
_LOOKBACK = timedelta(hours=26)

_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")  # fmt: skip
#: Cron's tokens for days (0 and 7 are Sunday) and months (1 is January), to English names.
_DAY_TOKENS = (
    {str(i): d for i, d in enumerate(_DAYS)} | {"7": "Sunday"} | {d[:3].lower(): d for d in _DAYS}
)
_MONTH_TOKENS = {str(i): m for i, m in enumerate(_MONTHS, 1)} | {m[:3].lower(): m for m in _MONTHS}


@functools.lru_cache(maxsize=4096)
def validate(expr: str) -> None:
    """Raise ``ValueError`` unless ``expr`` is a 5-field cron, or 6 with seconds first.

    The one place these rules live; the API's validation (``chronos.schemas``) calls it.
    Cached: a valid expression is checked once (invalid ones raise each time).
    """
    parts = expr.split()
    if len(parts) not in (5, 6):
        raise ValueError(
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week) or 6 "
            f"with seconds first; {expr!r} has {len(parts)}"
        )
    if not croniter.is_valid(expr, second_at_beginning=len(parts) == 6):
        raise ValueError(f"{expr!r} is not a valid cron expression")


@functools.lru_cache(maxsize=16384)
def next_fire(expr: str, timezone: str, after: int) -> int:
    """The first instant strictly after ``after`` at which ``expr`` fires in ``timezone``.

    Raises ``ValueError`` for an invalid expression or time zone, and for an expression that
    never matches (``0 0 30 2 *``). A pure function of its arguments, so it is memoized: the
    scanner asks the same question for every job that shares a schedule and an instant.
    """
    validate(expr)
    zone = _zone(timezone)
    try:
        start = _search_start(after, zone)
    except OverflowError:
        raise ValueError(f"after={after} ms is outside the years 1 to 9999") from None
    walls = croniter(expr, start, second_at_beginning=len(expr.split()) == 6)
    best: int | None = None
    horizon: datetime | None = None
    try:
        for _ in range(MAX_CANDIDATES):
            wall = walls.get_next(datetime)
            if horizon is not None and wall >= horizon:
                break
            fire = _instant(wall, zone)
            if fire <= after:
                continue
            if best is None:
                # A nonexistent time fires late, at wall + gap on the clock, so a real time
                # matched inside that stretch fires earlier: keep looking until the horizon.
                best, horizon = fire, wall + _gap(wall, zone)
            else:
                best = min(best, fire)
    except (ValueError, OverflowError) as exc:  # CroniterBadDateError is a ValueError
        if best is None:
            raise ValueError(f"{expr!r} never fires after {_iso(after)}") from exc
    if best is None:
        raise ValueError(
            f"no fire time found for {expr!r} within {MAX_CANDIDATES} candidates "
            f"after {_iso(after)}"
        )
    return best


def next_fires(expr: str, timezone: str, after: int, count: int) -> list[int]:
    """The next ``count`` fire instants strictly after ``after``, in increasing order."""
    if count < 0:
        raise ValueError(f"count must be zero or more, got {count}")
    fires: list[int] = []
    for _ in range(count):
        after = next_fire(expr, timezone, after)
        fires.append(after)
    return fires


def plan(job: Job, after: int) -> int | None:
    """When ``job`` fires next, strictly after ``after``; ``None`` when it will not.

    * A disabled job never fires.
    * A ``once`` job fires at ``run_at``; without ``run_at`` it fires at the first schedule
      match after its ``created_at``. Either way, only if that is still after ``after``.
    * A ``recurring`` job fires on its schedule, never before ``run_at`` when that is set.
      Without a schedule it is triggered by hand and has no planned time.
    """
    if not job.enabled:
        return None
    schedule = job.schedule.strip()
    if job.run_mode == "once":
        if job.run_at is not None:
            first: int | None = job.run_at
        elif schedule:
            first = next_fire(schedule, job.timezone, job.created_at)
        else:
            first = None
        return first if first is not None and first > after else None
    if not schedule:
        return None
    if job.run_at is not None:
        after = max(after, job.run_at - 1)  # a match exactly at run_at counts
    return next_fire(schedule, job.timezone, after)


def describe(expr: str) -> str:
    """The schedule in plain English, e.g. ``"at 09:00 on Monday to Friday"``.

    Common shapes get a sentence; anything else names each field. Raises ``ValueError`` only
    for an invalid expression.
    """
    validate(expr)
    parts = expr.split()
    if len(parts) == 6:
        second, rest = parts[0], parts[1:]
        if rest == ["*"] * 5 and (step := _step(second)) is not None:
            return "every second" if step == 1 else f"every {step} seconds"
        if second == "0" and (text := _describe_five(rest)):
            return text
        return _generic(parts)
    return _describe_five(parts) or _generic(parts)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. 'Europe/Paris')") from None


def _instant(wall: datetime, zone: ZoneInfo) -> int:
    """Epoch ms of a naive wall-clock time, read with ``fold=0`` (see the module docstring)."""
    return (wall.replace(tzinfo=zone, fold=0) - _EPOCH) // _MS


def _gap(wall: datetime, zone: ZoneInfo) -> timedelta:
    """How far ahead of ``wall`` the clock is at ``wall``'s instant: zero unless nonexistent."""
    shown = wall.replace(tzinfo=zone, fold=0).astimezone(UTC).astimezone(zone)
    return shown.replace(tzinfo=None) - wall


def _search_start(after: int, zone: ZoneInfo) -> datetime:
    """The naive wall-clock time to walk candidates from.

    Usually ``after`` on the local clock. Just after a spring-forward change, a nonexistent
    time earlier on the clock than ``after`` can still fire after it (02:45 fires at 03:45 when
    ``after`` is 03:30), so the walk starts that far back, by the size of the gap.
    """
    moment = _EPOCH + after * _MS
    offset = _offset(moment, zone)
    earlier = _offset(moment - _LOOKBACK, zone)
    if earlier < offset and _offset(moment - (offset - earlier), zone) < offset:
        offset = earlier
    start = (moment + offset).replace(tzinfo=None, microsecond=0)
    return start - _SECOND  # croniter yields times strictly after its start


def _offset(moment: datetime, zone: ZoneInfo) -> timedelta:
    return moment.astimezone(zone).utcoffset() or timedelta(0)


def _iso(ms: int) -> str:
    return (_EPOCH + ms * _MS).strftime("%Y-%m-%dT%H:%M:%SZ")


def _step(field: str) -> int | None:
    """N for ``*`` (1) or ``*/N``, else ``None``."""
    if field == "*":
        return 1
    if field.startswith("*/") and field[2:].isdigit():
        return int(field[2:])
    return None


def _describe_five(parts: list[str]) -> str | None:
    minute, hour, dom, month, dow = parts
    if [hour, dom, month, dow] == ["*"] * 4:
        if (step := _step(minute)) is not None:
            return "every minute" if step == 1 else f"every {step} minutes"
        if minute.isdigit():
            return f"at minute {int(minute)} of every hour"
        return None
    if [dom, month, dow] == ["*"] * 3 and minute.isdigit() and (_step(hour) or 0) > 1:
        return f"every {_step(hour)} hours, at minute {int(minute)}"
    if not (minute.isdigit() and hour.isdigit()):
        return None
    time = f"at {int(hour):02d}:{int(minute):02d}"
    if [dom, month, dow] == ["*"] * 3:
        return f"{time} every day"
    if dom == "*" and month == "*" and (days := _names(dow, _DAY_TOKENS)):
        return f"{time} on {days}"
    if dom.isdigit() and dow == "*":
        if month == "*":
            return f"{time} on day {int(dom)} of the month"
        if months := _names(month, _MONTH_TOKENS):
            return f"{time} on day {int(dom)} of {months}"
    return None


def _names(field: str, names: dict[str, str]) -> str | None:
    """``MON-FRI`` as "Monday to Friday", ``JAN,JUL`` as "January and July"; else ``None``."""
    phrases: list[str] = []
    for token in field.split(","):
        ends = [names.get(str(int(e)) if e.isdigit() else e.lower()) for e in token.split("-")]
        if len(ends) > 2 or None in ends:
            return None
        phrases.append(" to ".join(e for e in ends if e))
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _generic(parts: list[str]) -> str:
    names = (("second",) if len(parts) == 6 else ()) + _FIELDS
    return ", ".join(f"{name} {value}" for name, value in zip(names, parts))
