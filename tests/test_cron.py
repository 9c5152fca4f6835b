"""Cron arithmetic: plain functions, fixed instants, no clock and no app.

Clock changes used below (2025), spring forward / fall back:
  Europe/Paris         30 Mar 02:00 -> 03:00 (01:00Z)  /  26 Oct 03:00 -> 02:00 (01:00Z)
  America/New_York      9 Mar 02:00 -> 03:00 (07:00Z)  /   2 Nov 02:00 -> 01:00 (06:00Z)
  Australia/Lord_Howe   5 Oct 02:00 -> 02:30 (+10:30 to +11)  /  6 Apr 02:00 -> 01:30
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from chronos import cron
from chronos.models import Job

PARIS, NEW_YORK, LORD_HOWE = "Europe/Paris", "America/New_York", "Australia/Lord_Howe"
HOUR = 3_600_000
MINUTE = 60_000


def utc(*parts: int) -> int:
    """Epoch ms of a UTC date and time."""
    return int(datetime(*parts, tzinfo=UTC).timestamp()) * 1000


def local(ms: int, tz: str) -> datetime:
    """What the wall clock in ``tz`` shows at ``ms`` (naive)."""
    return datetime.fromtimestamp(ms / 1000, tz=ZoneInfo(tz)).replace(tzinfo=None)


def day_bounds(tz: str, year: int, month: int, day: int) -> tuple[int, int]:
    """[start, end) in epoch ms of one local calendar day (these midnights all exist)."""
    zone = ZoneInfo(tz)
    start = datetime(year, month, day, tzinfo=zone)
    end = datetime.combine(start.date() + timedelta(days=1), datetime.min.time(), zone)
    return int(start.timestamp()) * 1000, int(end.timestamp()) * 1000


def fires_in(expr: str, tz: str, start: int, end: int) -> list[int]:
    """Every fire in [start, end)."""
    fires, after = [], start - 1
    while (after := cron.next_fire(expr, tz, after)) < end:
        fires.append(after)
    return fires


def assert_strictly_increasing(fires: list[int]) -> None:
    assert all(a < b for a, b in zip(fires, fires[1:])), fires


# --- basics -------------------------------------------------------------------------------------


def test_utc_every_hour() -> None:
    assert cron.next_fires("0 * * * *", "UTC", utc(2025, 5, 1, 10, 20), 3) == [
        utc(2025, 5, 1, 11),
        utc(2025, 5, 1, 12),
        utc(2025, 5, 1, 13),
    ]


def test_next_fire_is_strictly_after_even_on_a_match() -> None:
    assert cron.next_fire("0 * * * *", "UTC", utc(2025, 5, 1, 11)) == utc(2025, 5, 1, 12)
    assert cron.next_fire("0 * * * *", "UTC", utc(2025, 5, 1, 11) - 1) == utc(2025, 5, 1, 11)
    assert cron.next_fire("*/10 * * * * *", "UTC", utc(2025, 5, 1, 11, 0, 10)) == utc(
        2025, 5, 1, 11, 0, 20
    )


def test_schedule_reads_the_local_wall_clock() -> None:
    assert cron.next_fire("0 9 * * *", NEW_YORK, utc(2025, 1, 15)) == utc(2025, 1, 15, 14)  # EST
    assert cron.next_fire("0 9 * * *", NEW_YORK, utc(2025, 7, 15)) == utc(2025, 7, 15, 13)  # EDT
    assert cron.next_fire("0 9 * * *", LORD_HOWE, utc(2025, 7, 15)) == utc(2025, 7, 15, 22, 30)


def test_six_fields_have_seconds_first() -> None:
    fires = cron.next_fires("*/10 * * * * *", "UTC", utc(2025, 5, 1, 11, 59, 45), 4)
    assert fires == [utc(2025, 5, 1, 11, 59, 50) + i * 10_000 for i in range(4)]
    assert cron.next_fire("30 0 12 * * *", "UTC", utc(2025, 5, 1)) == utc(2025, 5, 1, 12, 0, 30)


def test_ranges_steps_and_day_names() -> None:
    friday = utc(2025, 5, 2)  # a Friday
    fires = cron.next_fires("0 9-17/2 * * MON-FRI", "UTC", friday, 6)
    assert fires == [utc(2025, 5, 2, h) for h in (9, 11, 13, 15, 17)] + [utc(2025, 5, 5, 9)]


def test_month_names_and_lists() -> None:
    assert cron.next_fires("0 0 1 JAN,JUL *", "UTC", utc(2025, 1, 1), 3) == [
        utc(2025, 7, 1),
        utc(2026, 1, 1),
        utc(2026, 7, 1),
    ]


def test_next_fires_count() -> None:
    assert cron.next_fires("* * * * *", "UTC", 0, 0) == []
    with pytest.raises(ValueError, match="count"):
        cron.next_fires("* * * * *", "UTC", 0, -1)


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("expr", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 0 30 2 *"])
def test_never_matching_expression_raises(expr: str) -> None:
    with pytest.raises(ValueError, match="never fires"):
        cron.next_fire(expr, "UTC", utc(2025, 1, 1))


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * * *", "has 4"),
        ("* * * * * * *", "has 7"),
        ("", "has 0"),
        ("61 * * * *", "not a valid cron expression"),
        ("* * * * FOO", "not a valid cron expression"),
    ],
)
def test_validate_rejects(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cron.validate(expr)
    with pytest.raises(ValueError, match=message):
        cron.next_fire(expr, "UTC", 0)


def test_validate_accepts() -> None:
    for expr in ["*/5 * * * *", "0 9 * * MON-FRI", "*/10 * * * * *", "0 0 L * *", "0 0 * * 1#2"]:
        cron.validate(expr)


def test_unknown_time_zone_raises() -> None:
    with pytest.raises(ValueError, match="IANA"):
        cron.next_fire("* * * * *", "Mars/Olympus", 0)


# --- daylight saving ----------------------------------------------------------------------------


def test_spring_forward_nonexistent_time_fires_once_at_the_shifted_instant() -> None:
    # 02:30 does not exist on 30 Mar in Paris; read with CET (+1) it is 01:30Z = 03:30 CEST.
    start, end = day_bounds(PARIS, 2025, 3, 30)
    fires = fires_in("30 2 * * *", PARIS, start, end)
    assert fires == [utc(2025, 3, 30, 1, 30)]
    assert local(fires[0], PARIS) == datetime(2025, 3, 30, 3, 30)
    assert cron.next_fire("30 2 * * *", PARIS, fires[0]) == utc(2025, 3, 31, 0, 30)


def test_spring_forward_new_york() -> None:
    start, end = day_bounds(NEW_YORK, 2025, 3, 9)
    assert fires_in("30 2 * * *", NEW_YORK, start, end) == [utc(2025, 3, 9, 7, 30)]  # 03:30 EDT


def test_nonexistent_time_still_fires_when_after_is_past_it_on_the_clock() -> None:
    # after = 01:30Z = 03:30 CEST; 02:45 (nonexistent) means 01:45Z = 03:45 CEST, still ahead.
    assert cron.next_fire("45 2 * * *", PARIS, utc(2025, 3, 30, 1, 30)) == utc(2025, 3, 30, 1, 45)


def test_fall_back_ambiguous_time_fires_once_at_the_first_occurrence() -> None:
    start, end = day_bounds(PARIS, 2025, 10, 26)
    fires = fires_in("30 2 * * *", PARIS, start, end)
    assert fires == [utc(2025, 10, 26, 0, 30)]  # 02:30 CEST, not 02:30 CET (01:30Z)
    assert cron.next_fire("30 2 * * *", PARIS, fires[0]) == utc(2025, 10, 27, 1, 30)
    # From inside the repeated hour (02:10 CET), the next run is the next day's.
    after = utc(2025, 10, 26, 1, 10)
    assert cron.next_fire("30 2 * * *", PARIS, after) == utc(2025, 10, 27, 1, 30)


def test_fall_back_new_york() -> None:
    start, end = day_bounds(NEW_YORK, 2025, 11, 2)
    assert fires_in("30 1 * * *", NEW_YORK, start, end) == [utc(2025, 11, 2, 5, 30)]  # EDT


def test_hourly_on_the_spring_forward_day_fires_23_times() -> None:
    # The local day lasts 23 hours. 02:00 does not exist and means 01:00Z, the very instant
    # of 03:00 CEST: the two collapse into one fire, so every real hour fires exactly once.
    start, end = day_bounds(PARIS, 2025, 3, 30)
    fires = fires_in("0 * * * *", PARIS, start, end)
    assert_strictly_increasing(fires)
    assert len(fires) == 23 == (end - start) // HOUR
    assert fires == list(range(start, end, HOUR))


def test_hourly_on_the_fall_back_day_fires_24_times() -> None:
    # The local day lasts 25 hours but each wall-clock hour fires once: the repeated 02:00
    # (CET) does not, so 02:00 CEST (00:00Z) is followed two hours later by 03:00 CET (02:00Z).
    start, end = day_bounds(PARIS, 2025, 10, 26)
    fires = fires_in("0 * * * *", PARIS, start, end)
    assert_strictly_increasing(fires)
    assert len(fires) == 24 and (end - start) // HOUR == 25
    assert [local(f, PARIS).hour for f in fires] == list(range(24))
    at_two = fires.index(utc(2025, 10, 26, 0))
    assert fires[at_two + 1] == utc(2025, 10, 26, 2)


def test_every_15_minutes_across_the_gap_has_no_duplicates() -> None:
    fires = cron.next_fires("*/15 * * * *", PARIS, utc(2025, 3, 30, 0, 30), 8)
    assert fires == [utc(2025, 3, 30, 0, 45) + i * 15 * MINUTE for i in range(8)]
    assert [local(f, PARIS).strftime("%H:%M") for f in fires[:3]] == ["01:45", "03:00", "03:15"]


def test_seconds_across_the_gap() -> None:
    fires = cron.next_fires("*/10 * * * * *", PARIS, utc(2025, 3, 30, 0, 59, 45), 3)
    assert fires == [utc(2025, 3, 30, 0, 59, 50), utc(2025, 3, 30, 1), utc(2025, 3, 30, 1, 0, 10)]


def test_lord_howe_half_hour_spring_forward() -> None:
    # 02:00-02:30 does not exist; 02:00 read with +10:30 is 02:30 LHDT, half an hour before
    # 03:00. The 23.5-hour day still fires 24 times, once per wall-clock hour.
    start, end = day_bounds(LORD_HOWE, 2025, 10, 5)
    fires = fires_in("0 * * * *", LORD_HOWE, start, end)
    assert len(fires) == 24
    assert_strictly_increasing(fires)
    times = [local(f, LORD_HOWE).strftime("%H:%M") for f in fires]
    assert times[1:4] == ["01:00", "02:30", "03:00"]


def test_lord_howe_real_time_before_a_shifted_one_fires_first() -> None:
    # 02:20 does not exist and fires at 02:50 LHDT; 02:40 exists. Both fire, in time order,
    # although 02:40 comes later on the wall clock than 02:20.
    start, end = day_bounds(LORD_HOWE, 2025, 10, 5)
    fires = fires_in("20,40 2 * * *", LORD_HOWE, start, end)
    assert [local(f, LORD_HOWE).strftime("%H:%M") for f in fires] == ["02:40", "02:50"]


def test_lord_howe_half_hour_fall_back() -> None:
    # 01:30-02:00 happens twice; each quarter-hour of the wall clock fires once: 96 fires
    # over the 24.5-hour day, with the second 01:30 and 01:45 skipped.
    start, end = day_bounds(LORD_HOWE, 2025, 4, 6)
    assert (end - start) // MINUTE == 24 * 60 + 30
    fires = fires_in("*/15 * * * *", LORD_HOWE, start, end)
    assert len(fires) == 96
    assert_strictly_increasing(fires)
    assert fires_in("30 1 * * *", LORD_HOWE, start, end) == [utc(2025, 4, 5, 14, 30)]  # +11


#: The instants of each zone's 2025 clock changes.
CHANGES = {
    PARIS: [utc(2025, 3, 30, 1), utc(2025, 10, 26, 1)],
    NEW_YORK: [utc(2025, 3, 9, 7), utc(2025, 11, 2, 6)],
    LORD_HOWE: [utc(2025, 4, 5, 15), utc(2025, 10, 4, 15, 30)],
}


def oracle(expr: str, tz: str, first_wall: datetime, last_wall: datetime) -> list[int]:
    """The documented rule spelled out: every matching wall-clock time read with fold=0, once."""
    zone, walls, instants = ZoneInfo(tz), croniter(expr, first_wall), set()
    while (wall := walls.get_next(datetime)) < last_wall:
        instants.add(int(wall.replace(tzinfo=zone, fold=0).timestamp()) * 1000)
    return sorted(instants)


@pytest.mark.parametrize(
    ("tz", "day"),
    [
        (PARIS, (2025, 3, 30)),
        (PARIS, (2025, 10, 26)),
        (NEW_YORK, (2025, 3, 9)),
        (NEW_YORK, (2025, 11, 2)),
        (LORD_HOWE, (2025, 4, 6)),
        (LORD_HOWE, (2025, 10, 5)),
    ],
)
@pytest.mark.parametrize(
    "expr", ["*/7 * * * *", "0,20,40 1-3 * * *", "50 2,3 * * *", "10,40 * * * *", "5 * * * *"]
)
def test_matches_the_documented_rule_around_each_transition(
    expr: str, tz: str, day: tuple[int, int, int]
) -> None:
    midnight = datetime(*day)
    expected = oracle(expr, tz, midnight - timedelta(days=1), midnight + timedelta(days=2))
    window = [f for f in expected if day_bounds(tz, *day)[0] <= f < day_bounds(tz, *day)[1]]
    assert window
    assert fires_in(expr, tz, *day_bounds(tz, *day)) == window


@pytest.mark.parametrize(
    "expr", ["*/15 * * * *", "30 2 * * *", "0 9-17/2 * * MON-FRI", "0 0 1 JAN,JUL *", "7 * * * *"]
)
@pytest.mark.parametrize("tz", ["UTC", PARIS, NEW_YORK, LORD_HOWE])
def test_property_over_a_year(expr: str, tz: str) -> None:
    rng = random.Random(f"{expr}|{tz}")
    year_start, year_end = utc(2025, 1, 1), utc(2026, 1, 1)
    afters = [rng.randrange(year_start, year_end) for _ in range(150)]
    # and the awkward spots: around each of this zone's 2025 changes
    afters += [t + d for t in CHANGES.get(tz, []) for d in (-HOUR, -1, 0, 1, 30 * MINUTE, HOUR)]
    for after in afters:
        fire = cron.next_fire(expr, tz, after)
        assert fire > after
        assert cron.next_fire(expr, tz, fire - 1) == fire
        assert cron.next_fire(expr, tz, fire) > fire


def test_property_seconds() -> None:
    rng = random.Random(7)
    for _ in range(200):
        after = rng.randrange(utc(2025, 1, 1), utc(2026, 1, 1))
        fire = cron.next_fire("*/10 * * * * *", PARIS, after)
        assert after < fire <= after + 10_000 and fire % 10_000 == 0
        assert cron.next_fire("*/10 * * * * *", PARIS, fire - 1) == fire


# --- plan ---------------------------------------------------------------------------------------

NOW = utc(2025, 6, 1, 12)


def job(**fields: object) -> Job:
    return Job(tenant_id="t", id="j", **fields)  # type: ignore[arg-type]


def test_plan_disabled_job_never_fires() -> None:
    assert cron.plan(job(schedule="* * * * *", enabled=False), NOW) is None


def test_plan_once_with_run_at() -> None:
    assert cron.plan(job(run_mode="once", run_at=NOW + HOUR), NOW) == NOW + HOUR
    assert cron.plan(job(run_mode="once", run_at=NOW), NOW) is None
    assert cron.plan(job(run_mode="once", run_at=NOW - HOUR), NOW) is None


def test_plan_once_with_a_schedule_fires_at_the_first_match_after_creation() -> None:
    once = job(run_mode="once", schedule="0 9 * * *", timezone=PARIS, created_at=NOW)
    assert cron.plan(once, NOW) == utc(2025, 6, 2, 7)  # 09:00 CEST the next morning
    assert cron.plan(once, utc(2025, 6, 2, 7)) is None  # done: it does not recur
    assert cron.plan(job(run_mode="once"), NOW) is None


def test_plan_recurring() -> None:
    assert cron.plan(job(schedule="0 * * * *"), NOW) == NOW + HOUR
    # NOW is 08:00 EDT: today's 09:00 is still ahead
    assert cron.plan(job(schedule="0 9 * * *", timezone=NEW_YORK), NOW) == utc(2025, 6, 1, 13)


def test_plan_recurring_run_at_means_not_before() -> None:
    hourly = job(schedule="0 * * * *", run_at=NOW + 5 * HOUR + 30 * MINUTE)
    assert cron.plan(hourly, NOW) == NOW + 6 * HOUR
    assert cron.plan(job(schedule="0 * * * *", run_at=NOW + 5 * HOUR), NOW) == NOW + 5 * HOUR
    assert cron.plan(job(schedule="0 * * * *", run_at=NOW - 5 * HOUR), NOW) == NOW + HOUR


def test_plan_recurring_without_a_schedule_is_manual() -> None:
    assert cron.plan(job(schedule=""), NOW) is None
    assert cron.plan(job(schedule="  ", run_at=NOW + HOUR), NOW) is None


# --- describe -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        ("* * * * *", "every minute"),
        ("*/5 * * * *", "every 5 minutes"),
        ("0 * * * *", "at minute 0 of every hour"),
        ("0 */2 * * *", "every 2 hours, at minute 0"),
        ("0 6 * * *", "at 06:00 every day"),
        ("0 9 * * MON-FRI", "at 09:00 on Monday to Friday"),
        ("0 9 * * 1-5", "at 09:00 on Monday to Friday"),
        ("0 10 * * sat,7", "at 10:00 on Saturday and Sunday"),
        ("30 2 1 * *", "at 02:30 on day 1 of the month"),
        ("0 0 1 JAN,JUL *", "at 00:00 on day 1 of January and July"),
        ("*/10 * * * * *", "every 10 seconds"),
        ("* * * * * *", "every second"),
        ("0 */5 * * * *", "every 5 minutes"),
        (
            "0-10/2 9 * * MON-FRI",
            "minute 0-10/2, hour 9, day-of-month *, month *, day-of-week MON-FRI",
        ),
        ("0 0 L * *", "minute 0, hour 0, day-of-month L, month *, day-of-week *"),
        ("5 0 0 * * 1#2", "second 5, minute 0, hour 0, day-of-month *, month *, day-of-week 1#2"),
    ],
)
def test_describe(expr: str, text: str) -> None:
    assert cron.describe(expr) == text


def test_describe_rejects_an_invalid_expression() -> None:
    with pytest.raises(ValueError, match="5 fields"):
        cron.describe("* *")
