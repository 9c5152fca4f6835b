"""Analytics: local bucket edges across DST, and the summary, trends and jobs table computed on
the real Redis Stack from metric series and sketches (never from execution records), over
HTTP with session or key auth, per tenant."""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from conftest import Tenants
from flask import Flask
from flask.testing import FlaskClient

from chronos import analytics
from chronos.accounts import hash_password
from chronos.analytics import DAY, HOUR, RangeError, bucket_edges
from chronos.backends.base import Backend
from chronos.backends.redis_stack import RedisStackBackend
from chronos.extension import get_state
from chronos.models import Execution, Job, User, VersionStats
from chronos.timeutil import now_ms, parse_timestamp, to_iso

MINUTE = 60_000
TZS = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu",
       "Australia/Lord_Howe", "America/Santiago"]  # fmt: skip


def ms(text: str) -> int:
    return parse_timestamp(text)


def local(at: int, tz: str) -> datetime:
    return datetime.fromtimestamp(at / 1000, ZoneInfo(tz))


def hours(edges: list[int]) -> list[float]:
    return [(b - a) / HOUR for a, b in zip(edges, edges[1:])]


# bucket edges (plain Python) -----------------------------------------------------------------
def test_paris_days_across_dst_are_23_and_25_hours() -> None:
    spring = bucket_edges(ms("2025-03-29T12:00Z"), ms("2025-03-31T12:00Z"), "day", "Europe/Paris")
    assert hours(spring) == [24, 23, 24]
    fall = bucket_edges(ms("2025-10-25T12:00Z"), ms("2025-10-27T12:00Z"), "day", "Europe/Paris")
    assert hours(fall) == [24, 25, 24]
    for edge in spring + fall:
        assert local(edge, "Europe/Paris").time().isoformat() == "00:00:00"
    assert [local(e, "Europe/Paris").date().isoformat() for e in spring] == [
        "2025-03-29", "2025-03-30", "2025-03-31", "2025-04-01"]  # fmt: skip


def test_paris_hours_of_dst_days() -> None:
    def local_day(day: str) -> list[int]:
        noon = ms(f"{day}T12:00Z")
        start, end = bucket_edges(noon, noon + 1, "day", "Europe/Paris")
        return bucket_edges(start, end, "hour", "Europe/Paris")

    spring, fall = local_day("2025-03-30"), local_day("2025-10-26")
    assert len(spring) - 1 == 23 and set(hours(spring)) == {1}
    assert len(fall) - 1 == 25 and set(hours(fall)) == {1}
    # the repeated hour is two buckets that both read 02:00 locally
    assert [local(e, "Europe/Paris").hour for e in fall[2:5]] == [2, 2, 3]


def test_week_buckets_start_on_local_monday() -> None:
    edges = bucket_edges(ms("2025-03-20T12:00Z"), ms("2025-04-08T12:00Z"), "week", "Europe/Paris")
    assert hours(edges) == [168, 167, 168, 168]  # the week of the spring change
    for edge in edges:
        at = local(edge, "Europe/Paris")
        assert (at.weekday(), at.time().isoformat()) == (0, "00:00:00")


def test_month_buckets_start_on_the_first() -> None:
    start, end = ms("2025-01-20T12:00Z"), ms("2025-12-01T00:00+01:00")
    edges = bucket_edges(start, end, "month", "Europe/Paris")
    starts = [local(e, "Europe/Paris") for e in edges]
    assert [(s.month, s.day, s.hour) for s in starts[:3]] == [(1, 1, 0), (2, 1, 0), (3, 1, 0)]
    assert hours(edges)[:5] == [31 * 24, 28 * 24, 31 * 24 - 1, 30 * 24, 31 * 24]
    assert local(edges[-1], "Europe/Paris").date() == date(2025, 12, 1)


def _period(at: int, tz: str, bucket: str, offset: bool = False) -> tuple[Any, ...]:
    t = local(at, tz)
    if bucket == "hour":  # with ``offset``, a repeated hour is a new period
        return (t.date(), t.hour, t.utcoffset() if offset else None)
    if bucket == "day":
        return (t.date(),)
    if bucket == "week":
        return tuple(t.isocalendar())[:2]
    return (t.year, t.month)


@pytest.mark.parametrize("tz", TZS)
@pytest.mark.parametrize("bucket", analytics.BUCKETS)
def test_edges_are_exactly_the_local_period_changes(tz: str, bucket: str) -> None:
    # around the 2024 DST changes of the northern and southern hemispheres
    for start in (ms("2024-03-09T07:13Z"), ms("2024-04-05T22:00Z"), ms("2024-09-07T01:00Z"),
                  ms("2024-10-26T23:59Z"), ms("2024-11-02T12:00Z")):  # fmt: skip
        span = {"hour": 2 * DAY, "day": 5 * DAY, "week": 30 * DAY, "month": 90 * DAY}[bucket]
        edges = bucket_edges(start, start + span, bucket, tz)
        assert edges[0] <= start < edges[1] and edges[-2] < start + span <= edges[-1]
        assert all(a < b for a, b in zip(edges, edges[1:]))
        for edge in edges:
            assert _period(edge - 1, tz, bucket, True) != _period(edge, tz, bucket, True)
        # no period change inside a bucket: sample every 15 minutes
        for a, b in zip(edges, edges[1:]):
            inside = {_period(t, tz, bucket) for t in range(a, b, 15 * MINUTE)}
            assert len(inside) == 1, (to_iso(a), to_iso(b))


def test_midnight_skipped_by_dst_starts_the_day_at_the_jump() -> None:
    # America/Santiago, 2024-09-08: 00:00 -04 became 01:00 -03
    edges = bucket_edges(
        ms("2024-09-07T12:00Z"), ms("2024-09-08T12:00Z"), "day", "America/Santiago"
    )
    assert [to_iso(e) for e in edges] == [
        "2024-09-07T04:00:00.000Z",
        "2024-09-08T04:00:00.000Z",
        "2024-09-09T03:00:00.000Z",
    ]
    assert local(edges[1], "America/Santiago").hour == 1


def test_edges_on_boundaries_and_off_hour_zones() -> None:
    start, end = ms("2025-01-10T00:00Z"), ms("2025-01-12T00:00Z")
    assert bucket_edges(start, end, "day", "UTC") == [start, start + DAY, end]
    kolkata = bucket_edges(start, end, "day", "Asia/Kolkata")
    assert [to_iso(e)[11:16] for e in kolkata] == ["18:30"] * 4


@pytest.mark.parametrize(
    "start,end,bucket,tz,field",
    [
        (0 + DAY, 100 * DAY, "hour", "UTC", "bucket"),  # 2376 buckets
        (5 * DAY, 5 * DAY, "day", "UTC", "end"),
        (5 * DAY, 6 * DAY, "fortnight", "UTC", "bucket"),
        (5 * DAY, 6 * DAY, "day", "Mars/Olympus", "tz"),
        (5 * DAY, 6 * DAY, "day", "../../etc/passwd", "tz"),
        (0, DAY, "day", "America/New_York", "start"),  # local midnight before 1970
        (ms("9999-12-20T00:00Z"), ms("9999-12-31T00:00Z"), "month", "UTC", "end"),
        (ms("9999-12-20T00:00Z"), ms("9999-12-31T23:00Z"), "day", "Asia/Tokyo", "end"),
    ],
)
def test_bad_edges_raise(start: int, end: int, bucket: str, tz: str, field: str) -> None:
    with pytest.raises(RangeError) as caught:
        bucket_edges(start, end, bucket, tz)
    assert caught.value.field == field and isinstance(caught.value, ValueError)


def test_resolve_range_and_default_buckets() -> None:
    now = ms("2025-06-01T12:34:56Z")
    assert analytics.resolve_range("24h", now) == (now - DAY, now)
    assert analytics.resolve_range("90d", now) == (now - 90 * DAY, now)
    assert analytics.resolve_range("custom", now, 5, 10) == (5, 10)
    for bad in [("custom", now, 5, None), ("custom", now, 10, 5), ("7d", now, 5, 10),
                ("1y", now, None, None), ("custom", now, 0, 401 * DAY)]:  # fmt: skip
        with pytest.raises(RangeError):
            analytics.resolve_range(*bad)
    assert [analytics.default_bucket(r, 0, 1) for r in ("24h", "7d", "30d", "90d")] == [
        "hour", "day", "day", "week"]  # fmt: skip
    assert [analytics.default_bucket("custom", 0, n * DAY) for n in (1, 30, 200, 400)] == [
        "hour", "day", "week", "month"]  # fmt: skip


def _row(job_id: str, **kw: Any) -> analytics.JobRow:
    values: dict[str, Any] = dict(name=job_id, runs=0, success=0, failure=0, success_rate=None,
                                  avg_duration=None, p50=None, p95=None, p99=None,
                                  last_failure_at=None, health="ok")  # fmt: skip
    return analytics.JobRow(id=job_id, **{**values, **kw})


def test_sort_rows_puts_empty_values_last_in_either_order() -> None:
    rows = [_row("c", p95=5.0), _row("a"), _row("b", p95=5.0), _row("d", p95=9.0)]
    ids = [r.id for r in analytics.sort_rows(rows, "p95", "asc")]
    assert ids == ["b", "c", "d", "a"]
    assert [r.id for r in analytics.sort_rows(rows, "p95", "desc")] == ["d", "b", "c", "a"]
    health = [_row("x", health="paused"), _row("y", health="failing"), _row("z", health="ok")]
    assert [r.id for r in analytics.sort_rows(health, "health", "asc")] == ["y", "z", "x"]


# seeded data on the real Redis Stack -----------------------------------------------------------
def run(tenant: str, exec_id: str, job_id: str, at: int, status: str = "success",
        duration: int | None = 1000) -> Execution:  # fmt: skip
    """A terminal run that finished at ``at`` (the time the metrics count it at)."""
    return Execution(tenant_id=tenant, exec_id=exec_id, job_id=job_id, status=status,
                     started_at=at - (duration or 0) - 1, finished_at=at,
                     duration_ms=duration)  # fmt: skip


class Seed:
    """Runs of tenant ``acme`` (and a few of ``zeta``) at known instants of the last days."""

    def __init__(self, backend: Backend, now: int) -> None:
        self.now = now
        # a UTC midnight 4 days ago: runs in [D0, D0 + 2 days) are 2 days older than the
        # recent ones, and well inside the 8 days of per-minute data and hourly sketches
        self.d0 = d0 = (now // DAY - 4) * DAY
        backend.upsert_jobs("acme", [
            Job("acme", "alpha", name="Alpha job"), Job("acme", "beta", name="beta"),
            Job("acme", "gamma", name="Gamma", enabled=False), Job("acme", "delta", name="delta"),
        ], now)  # fmt: skip
        backend.upsert_jobs("zeta", [Job("zeta", "alpha", name="Zeta alpha")], now)
        runs = [run("acme", f"a{i}", "alpha", d0 + 10 * HOUR + i * 20_000, duration=i + 1)
                for i in range(100)]  # fmt: skip
        runs += [run("acme", f"af{i}", "alpha", d0 + 26 * HOUR + i * MINUTE, "failed", 50)
                 for i in range(4)]  # fmt: skip
        runs += [
            run("acme", "b1", "beta", d0 + 30 * MINUTE, duration=200),
            run("acme", "b2", "beta", d0 + 31 * MINUTE, duration=200),
            run("acme", "b3", "beta", d0 + 23 * HOUR + 30 * MINUTE, "timeout", 9000),
            run("acme", "b4", "beta", d0 + 47 * HOUR, "cancelled", None),
            run("acme", "d1", "delta", now - 2 * HOUR, "failed", 300),
            run("acme", "d2", "delta", now - HOUR, duration=100),
            run("acme", "d3", "delta", now - 25 * HOUR, duration=100),
        ]
        self.runs = runs
        backend.write_executions("acme", runs)
        backend.write_executions("zeta", [
            run("zeta", "z1", "alpha", d0 + 10 * HOUR, "failed", 777),
            run("zeta", "z2", "alpha", now - HOUR, "failed", 777),
        ])  # fmt: skip

    def expected(self, tz: str, job_id: str | None = None) -> dict[date, tuple[int, int, int]]:
        """(runs, success, failure) per local date, computed straight from the runs."""
        found: dict[date, Counter[str]] = {}
        for r in self.runs:
            if job_id is None or r.job_id == job_id:
                c = found.setdefault(local(r.finished_at or 0, tz).date(), Counter())
                c["runs"] += 1
                c["success"] += r.status == "success"
                c["failure"] += r.status in ("failed", "timeout", "missed")
        return {d: (c["runs"], c["success"], c["failure"]) for d, c in found.items()}


@pytest.fixture
def backend(app: Flask) -> Backend:
    return get_state(app).backend()


@pytest.fixture
def seed(backend: Backend) -> Seed:
    return Seed(backend, now_ms())


@pytest.fixture
def reader(tenants: Tenants) -> dict[str, str]:
    return Tenants.headers(tenants.key("acme", "read"))


def answer(client: FlaskClient, headers: dict[str, str], path: str, **query: Any) -> Any:
    response = client.get(f"/api/analytics/{path}", query_string=query, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["success"] is True
    return body["data"]


@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris", "Asia/Kolkata", "America/New_York"])
def test_daily_trends_count_every_run_in_its_local_day(
    client: FlaskClient, reader: dict[str, str], seed: Seed, tz: str
) -> None:
    start, end = to_iso(seed.d0), to_iso(seed.d0 + 2 * DAY)
    data = answer(client, reader, "trends", range="custom", start=start, end=end,
                  bucket="day", tz=tz)  # fmt: skip
    assert (data["bucket"], data["timezone"], data["jobId"]) == ("day", tz, None)
    got = {local(parse_timestamp(b["start"]), tz).date(): (b["runs"], b["success"], b["failure"])
           for b in data["buckets"]}  # fmt: skip
    expected = seed.expected(tz)
    for day, counts in got.items():
        assert counts == expected.get(day, (0, 0, 0)), day
    in_range = {d for d, c in expected.items() if d <= max(got)}
    assert in_range <= set(got)
    assert (
        data["start"] == data["buckets"][0]["start"] and data["end"] == data["buckets"][-1]["end"]
    )


def test_hourly_trends_fill_empty_buckets_with_zeros(
    client: FlaskClient, reader: dict[str, str], seed: Seed
) -> None:
    data = answer(client, reader, "trends", range="custom", start=seed.d0,
                  end=seed.d0 + 2 * DAY, bucket="hour")  # fmt: skip
    buckets = data["buckets"]
    assert len(buckets) == 48
    busy = {i: b for i, b in enumerate(buckets) if b["runs"]}
    assert sorted(busy) == [0, 10, 23, 26, 47]
    assert [(busy[i]["runs"], busy[i]["success"], busy[i]["failure"]) for i in sorted(busy)] == [
        (2, 2, 0), (100, 100, 0), (1, 0, 1), (4, 0, 4), (1, 0, 0)]  # fmt: skip
    alpha = busy[10]
    assert alpha["successRate"] == 1.0 and alpha["avgDuration"] == pytest.approx(50.5)
    assert alpha["p50"] == pytest.approx(50.5, abs=3) and alpha["p95"] == pytest.approx(95, abs=3)
    assert busy[47]["successRate"] is None  # cancelled: neither success nor failure
    empty = buckets[5]
    assert (empty["runs"], empty["success"], empty["failure"]) == (0, 0, 0)
    assert (empty["successRate"], empty["p50"], empty["p95"], empty["avgDuration"]) == (
        None, None, None, None)  # fmt: skip


def test_trends_of_one_job(client: FlaskClient, reader: dict[str, str], seed: Seed) -> None:
    data = answer(client, reader, "trends", range="custom", start=seed.d0,
                  end=seed.d0 + 2 * DAY, bucket="day", jobId="beta")  # fmt: skip
    assert data["jobId"] == "beta"
    assert [(b["runs"], b["success"], b["failure"]) for b in data["buckets"]] == [
        (3, 2, 1), (1, 0, 0)]  # fmt: skip
    assert data["buckets"][0]["successRate"] == pytest.approx(2 / 3)
    none = answer(client, reader, "trends", range="7d", jobId="no-such-job")
    assert all(b["runs"] == 0 for b in none["buckets"])


@pytest.mark.parametrize(
    "range_,bucket,count",
    [
        ("24h", "hour", (24, 25)),
        ("7d", "day", (7, 8)),
        ("30d", "day", (30, 31)),
        ("90d", "week", (13, 14)),
        ("90d", "month", (3, 4)),
    ],
)
def test_preset_ranges_cover_every_run_and_zero_fill(
    client: FlaskClient, reader: dict[str, str], seed: Seed, range_: str, bucket: str,
    count: tuple[int, int],
) -> None:  # fmt: skip
    data = answer(
        client,
        reader,
        "trends",
        range=range_,
        tz="Europe/Paris",
        **({} if bucket == analytics.DEFAULT_BUCKETS[range_] else {"bucket": bucket}),
    )
    assert data["bucket"] == bucket and data["range"] == range_
    assert count[0] <= len(data["buckets"]) <= count[1]
    span = analytics.RANGES[range_]
    recent = [r for r in seed.runs if r.finished_at >= seed.now - span]
    assert sum(b["runs"] for b in data["buckets"]) >= len(recent)
    if range_ != "24h":  # everything seeded lies within the last 7 days
        assert sum(b["runs"] for b in data["buckets"]) == len(seed.runs)
        assert sum(b["failure"] for b in data["buckets"]) == 6
    assert sum(1 for b in data["buckets"] if b["runs"]) <= 5
    for b in data["buckets"]:
        if b["runs"] == 0:
            assert (b["success"], b["failure"], b["successRate"]) == (0, 0, None)
        if parse_timestamp(b["end"]) < seed.d0 - DAY:  # nothing anywhere near: no durations
            assert (b["p50"], b["p95"], b["avgDuration"]) == (None, None, None)


def test_summary(client: FlaskClient, reader: dict[str, str], seed: Seed) -> None:
    data = answer(client, reader, "summary", tz="Europe/Paris")
    last = data["last24h"]
    assert (last["runs"], last["success"], last["failure"]) == (2, 1, 1)
    assert last["successRate"] == 0.5 and last["avgDuration"] == pytest.approx(200)
    assert last["p95"] == pytest.approx(300, abs=20)
    today_start = parse_timestamp(data["today"]["start"])
    assert local(today_start, "Europe/Paris").time().isoformat() == "00:00:00"
    today = [r for r in seed.runs if r.finished_at >= today_start]
    assert data["today"]["runs"] == len(today)
    assert data["timezone"] == "Europe/Paris"
    assert data["jobs"]["total"] == 4 and data["jobs"]["enabled"] == 3
    assert data["jobs"]["health"] == {"paused": 1, "missed": 0, "failing": 1, "late": 0,
                                      "running": 0, "ok": 2}  # fmt: skip


def test_jobs_table(client: FlaskClient, reader: dict[str, str], seed: Seed) -> None:
    data = answer(client, reader, "jobs", range="custom", start=seed.d0,
                  end=seed.d0 + 2 * DAY - 1)  # fmt: skip
    assert (data["start"], data["end"]) == (to_iso(seed.d0), to_iso(seed.d0 + 2 * DAY))
    rows = {row["id"]: row for row in data["jobs"]}
    assert [row["id"] for row in data["jobs"]] == ["alpha", "beta", "delta", "gamma"]  # runs desc
    alpha, beta = rows["alpha"], rows["beta"]
    assert (alpha["name"], alpha["runs"], alpha["success"], alpha["failure"]) == (
        "Alpha job", 104, 100, 4)  # fmt: skip
    assert alpha["successRate"] == pytest.approx(100 / 104)
    assert alpha["p50"] == pytest.approx(50, abs=3)
    assert alpha["p95"] == pytest.approx(94.9, abs=3) and alpha["p99"] == pytest.approx(99, abs=3)
    assert alpha["lastFailureAt"] == to_iso(seed.d0 + 26 * HOUR + 3 * MINUTE)
    assert alpha["health"] == "failing"
    assert (beta["runs"], beta["success"], beta["failure"]) == (4, 2, 1)
    assert beta["lastFailureAt"] == to_iso(seed.d0 + 23 * HOUR + 30 * MINUTE)
    gamma = rows["gamma"]
    assert (gamma["runs"], gamma["successRate"], gamma["p50"], gamma["lastFailureAt"]) == (
        0, None, None, None)  # fmt: skip
    assert gamma["health"] == "paused"
    assert rows["delta"]["runs"] == 0 and rows["delta"]["lastFailureAt"] is not None
    last24 = {r["id"]: r for r in answer(client, reader, "jobs", range="24h")["jobs"]}
    assert (last24["delta"]["runs"], last24["delta"]["failure"]) == (2, 1)


_SEVERITY = {h: i for i, h in enumerate(analytics.HEALTH_ORDER)}


@pytest.mark.parametrize("column", analytics.SORT_KEYS)
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_jobs_table_sorts_by_every_column(
    client: FlaskClient, reader: dict[str, str], seed: Seed, column: str, order: str
) -> None:
    rows = answer(client, reader, "jobs", range="7d", sort=column, order=order)["jobs"]
    assert (len(rows), {r["id"] for r in rows}) == (4, {"alpha", "beta", "gamma", "delta"})
    key: Callable[[Any], Any] = {
        "health": lambda v: _SEVERITY[v], "name": lambda v: (v.casefold(), v),
        "lastFailureAt": parse_timestamp,
    }.get(column, lambda v: v)  # fmt: skip
    values = [r[column] for r in rows]
    present = [key(v) for v in values if v is not None]
    assert values[len(present) :] == [None] * (len(values) - len(present))  # empty ones last
    assert present == sorted(present, reverse=order == "desc")
    for a, b in zip(rows, rows[1:]):  # ties in id order
        if a[column] == b[column]:
            assert a["id"] < b["id"]


def test_tenants_see_only_their_own(
    client: FlaskClient, tenants: Tenants, reader: dict[str, str], seed: Seed
) -> None:
    zeta = Tenants.headers(tenants.key("zeta", "read"))
    rows = answer(client, zeta, "jobs", range="7d")["jobs"]
    assert [(r["id"], r["name"], r["runs"], r["failure"]) for r in rows] == [
        ("alpha", "Zeta alpha", 2, 2)]  # fmt: skip
    summary = answer(client, zeta, "summary")
    assert (summary["last24h"]["runs"], summary["jobs"]["total"]) == (1, 1)
    trends = answer(client, zeta, "trends", range="7d")
    assert sum(b["runs"] for b in trends["buckets"]) == 2
    assert all(b["p50"] == pytest.approx(777, abs=1) for b in trends["buckets"] if b["runs"])
    acme_alpha = answer(client, reader, "trends", range="7d", jobId="alpha")["buckets"]
    assert sum(b["runs"] for b in acme_alpha) == 104  # zeta's alpha is not acme's
    nobody = Tenants.headers(tenants.key("empty", "read"))
    assert answer(client, nobody, "jobs", range="90d")["jobs"] == []
    assert sum(b["runs"] for b in answer(client, nobody, "trends", range="90d")["buckets"]) == 0


@pytest.mark.parametrize("path", ["summary", "trends", "jobs"])
def test_auth(client: FlaskClient, tenants: Tenants, seed: Seed, path: str) -> None:
    url = f"/api/analytics/{path}"
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"x-api-key": "chr_nonsense"}).status_code == 401
    ingest = Tenants.headers(tenants.key("acme", "ingest"))
    response = client.get(url, headers=ingest)
    assert response.status_code == 403 and response.get_json()["code"] == "forbidden"
    admin = {"Authorization": "Bearer " + tenants.key("acme", "admin")}
    assert client.get(url, headers=admin).status_code == 200
    with client.session_transaction() as sess:
        sess["user"] = "u"
        sess["tenant"] = "acme"
    response = client.get(url)
    assert response.status_code == 200 and response.get_json()["success"] is True


@pytest.mark.parametrize(
    "path,query,field",
    [
        ("trends", {"tz": "../../etc/passwd"}, "tz"),
        ("trends", {"tz": "Europe/Paris\x00"}, "tz"),
        ("trends", {"tz": "x" * 5000}, "tz"),
        ("trends", {"tz": ""}, "tz"),
        ("summary", {"tz": "Mars/Olympus_Mons"}, "tz"),
        ("summary", {"tz": "europe/paris"}, "tz"),
        ("trends", {"range": "90d", "bucket": "hour"}, "bucket"),
        ("trends", {"bucket": "fortnight"}, "bucket"),
        ("trends", {"range": "custom", "start": "2025-01-01T00:00Z"}, "range"),
        ("trends", {"range": "7d", "start": "2025-01-01T00:00Z"}, "range"),
        ("jobs", {"range": "custom", "start": "2025-01-02", "end": "2025-01-01"}, "end"),
        ("jobs", {"range": "1y"}, "range"),
        ("jobs", {"sort": "__class__"}, "sort"),
        ("jobs", {"order": "sideways"}, "order"),
        ("jobs", {"range": "custom", "start": "yesterday", "end": "0"}, "start"),
        ("trends", {"jobId": ""}, "jobId"),
        ("versions", {}, "jobId"),
        ("versions", {"jobId": "alpha", "by": "host"}, "by"),
        ("versions", {"jobId": "alpha", "range": "custom", "start": "2025-01-01"}, "range"),
    ],
)
def test_bad_parameters_are_422_naming_them(
    client: FlaskClient, reader: dict[str, str], path: str, query: dict[str, str], field: str
) -> None:
    response = client.get(f"/api/analytics/{path}", query_string=query, headers=reader)
    assert response.status_code == 422, response.get_data(as_text=True)
    body = response.get_json()
    assert body["success"] is False and field in body["details"], body


def test_compare_versions_sets_each_against_the_one_before() -> None:
    rows = analytics.compare_versions([
        VersionStats("v3", runs=4, success=2, failure=2, duration_p95_ms=150.0),
        VersionStats("v2", runs=2, success=0, failure=0, duration_p95_ms=None),  # cancelled
        VersionStats("v1", runs=5, success=4, failure=1, duration_p95_ms=100.0),
        VersionStats(None, runs=1, success=1, failure=0, duration_p95_ms=0.0),
    ])  # fmt: skip
    assert [(r.success_rate, r.rate_change_pp, r.p95_change) for r in rows] == [
        (0.5, None, None),  # v2 decided nothing and has no duration
        (None, None, None),
        (0.8, pytest.approx(-20.0), None),  # a p95 of 0 ms gives no ratio
        (1.0, None, None),
    ]
    assert analytics.compare_versions([]) == []


def test_versions_compare_a_jobs_releases(
    client: FlaskClient, tenants: Tenants, reader: dict[str, str], backend: Backend
) -> None:
    now = now_ms()

    def versioned(n: int, status: str, version: str, app: str, duration: int) -> Execution:
        return Execution("acme", f"ver-{n}", "ver", status, now - (10 - n) * MINUTE,
                         finished_at=now - (10 - n) * MINUTE + duration, duration_ms=duration,
                         job_version=version, app_version=app)  # fmt: skip

    backend.write_executions("acme", [
        versioned(0, "success", "v1", "3.1.0", 100), versioned(1, "success", "v1", "3.1.0", 100),
        versioned(2, "failed", "v2", "3.2.0", 300), versioned(3, "success", "v2", "3.1.0", 300),
    ])  # fmt: skip
    data = answer(client, reader, "versions", jobId="ver", range="24h")
    assert (data["jobId"], data["by"], data["range"]) == ("ver", "job", "24h")
    assert data["start"].endswith("Z") and data["end"].endswith("Z")
    assert data["versions"] == [
        {"version": "v2", "runs": 2, "success": 1, "failure": 1, "successRate": 0.5,
         "avgDuration": 300.0, "p95": 300.0, "firstStartedAt": to_iso(now - 8 * MINUTE),
         "lastStartedAt": to_iso(now - 7 * MINUTE)},
        {"version": "v1", "runs": 2, "success": 2, "failure": 0, "successRate": 1.0,
         "avgDuration": 100.0, "p95": 100.0, "firstStartedAt": to_iso(now - 10 * MINUTE),
         "lastStartedAt": to_iso(now - 9 * MINUTE)},
    ]  # fmt: skip
    by_app = answer(client, reader, "versions", jobId="ver", by="app", range="7d")["versions"]
    assert [(v["version"], v["runs"], v["failure"]) for v in by_app] == [
        ("3.2.0", 1, 1), ("3.1.0", 3, 0)]  # fmt: skip
    zeta = Tenants.headers(tenants.key("zeta", "read"))
    assert answer(client, zeta, "versions", jobId="ver", range="7d")["versions"] == []
    assert client.get("/api/analytics/versions?jobId=ver").status_code == 401


def test_openapi_documents_the_analytics_paths(client: FlaskClient) -> None:
    paths = client.get("/api/openapi.json").get_json()["paths"]
    for name in ("summary", "trends", "jobs", "versions"):
        assert "get" in paths[f"/api/analytics/{name}"]
    params = {p["name"] for p in paths["/api/analytics/trends"]["get"]["parameters"]}
    assert params == {"range", "start", "end", "bucket", "tz", "jobId"}


# cost: no execution record is ever read --------------------------------------------------------
class NoExecutionReads:
    """A backend whose execution reads fail the test; everything else passes through."""

    def __init__(self, inner: Backend) -> None:
        self._inner = inner

    def search_executions(self, *args: Any) -> Any:
        raise AssertionError("analytics searched executions")

    def get_execution(self, *args: Any) -> Any:
        raise AssertionError("analytics read an execution")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _all_analytics(backend: Any, tenant: str, now: int) -> None:
    analytics.summary(backend, tenant, now, "Europe/Paris")
    for tz in ("UTC", "Asia/Kolkata"):
        analytics.trends(backend, tenant, None, now - 30 * DAY, now, "day", tz)
    analytics.trends(backend, tenant, "j0", now - 7 * DAY, now, "hour", "UTC")
    analytics.jobs_table(backend, tenant, now - 7 * DAY, now, "p95", "desc", now)


def _commandstats(r: redis.Redis) -> Counter[str]:
    return Counter({name: stats["calls"] for name, stats in r.info("commandstats").items()})


def test_cost_does_not_grow_with_the_number_of_executions(
    redis_backend: RedisStackBackend, redis_stack_url: str
) -> None:
    now = now_ms()
    base = (now // HOUR - 30) * HOUR
    for tenant, per_hour in (("small", 1), ("big", 40)):
        redis_backend.upsert_jobs(tenant, [Job(tenant, f"j{i}") for i in range(3)], now)
        redis_backend.write_executions(tenant, [
            run(tenant, f"{tenant}-{j}-{h}-{n}", f"j{j}", base + h * HOUR + n * 1000,
                "failed" if n % 3 else "success", 10 + n)
            for j in range(3) for h in range(0, 30, 3) for n in range(per_hour)
        ])  # fmt: skip
    wrapped = NoExecutionReads(redis_backend)
    r = redis.Redis.from_url(redis_stack_url, decode_responses=True)
    try:
        used: dict[str, Counter[str]] = {}
        for tenant in ("small", "big", "small", "big"):  # the first round loads the scripts
            before = _commandstats(r)
            _all_analytics(wrapped, tenant, now)
            used[tenant] = _commandstats(r) - before
    finally:
        r.close()
    assert used["small"] == used["big"], (used["small"], used["big"])
    # series, sketches and the job listings (a search and the jobs' states) of summary and
    # jobs table; never an execution document
    commands = {name.removeprefix("cmdstat_").lower() for name in used["big"]}
    assert commands <= {"ts.range", "evalsha", "exists", "tdigest.merge", "tdigest.quantile",
                        "tdigest.min", "tdigest.max", "pexpire", "del", "ft.search",
                        "json.mget", "info"}, commands  # fmt: skip
    assert used["big"]["cmdstat_FT.SEARCH"] == 2


def test_jobs_table_of_500_jobs_is_a_few_round_trips(
    redis_backend: RedisStackBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = now_ms()
    redis_backend.upsert_jobs("acme", [Job("acme", f"job-{i:03d}") for i in range(500)], now)
    redis_backend.write_executions("acme", [
        run("acme", f"e{i}", f"job-{i:03d}", now - i * MINUTE, duration=i) for i in range(0, 500, 7)
    ])  # fmt: skip
    analytics.jobs_table(redis_backend, "acme", now - DAY, now, "runs", "desc", now)  # warm up
    trips: list[str] = []
    pipeline_execute, execute_command = redis.client.Pipeline.execute, redis.Redis.execute_command

    def counted_pipeline(self: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(f"pipeline of {len(self.command_stack)}")
        return pipeline_execute(self, *args, **kwargs)

    def counted_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(str(args[0]))
        return execute_command(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", counted_pipeline)
    monkeypatch.setattr(redis.Redis, "execute_command", counted_command)
    table = analytics.jobs_table(redis_backend, "acme", now - DAY, now, "runs", "desc", now)
    monkeypatch.undo()
    assert len(table.rows) == 500
    assert sum(row.runs for row in table.rows) == len(range(0, 500, 7))
    assert table.rows[0].runs == 1 and table.rows[-1].runs == 0
    assert len(trips) <= 6, trips


def test_memory_backend_gives_the_same_answers(seed: Seed, backend: Backend) -> None:
    """The batched reads' looping defaults (memory backend) agree with Redis on the table."""
    from chronos.backends.base import BackendOptions
    from chronos.backends.memory import MemoryBackend

    memory = MemoryBackend("memory://", BackendOptions())
    try:
        memory.upsert_jobs("acme", [Job("acme", j) for j in ("alpha", "beta", "delta")], seed.now)
        memory.write_executions("acme", seed.runs)
        start, end = seed.d0, seed.d0 + 2 * DAY
        for source in (memory, backend):
            table = analytics.jobs_table(source, "acme", start, end, "id", "asc", seed.now)
            counts = [(r.id, r.runs, r.success, r.failure) for r in table.rows if r.id != "gamma"]
            assert counts == [("alpha", 104, 100, 4), ("beta", 4, 2, 1), ("delta", 0, 0, 0)]
    finally:
        memory.close()


def test_jobs_table_pages(client: FlaskClient, reader: dict[str, str], seed: Seed) -> None:
    whole = answer(client, reader, "jobs", range="7d", sort="runs", order="desc")
    assert (whole["total"], whole["offset"], whole["limit"]) == (4, 0, 100)
    pages = [answer(client, reader, "jobs", range="7d", limit=2, offset=o)["jobs"] for o in (0, 2)]
    assert pages[0] + pages[1] == whole["jobs"]  # percentiles included on every page
    assert answer(client, reader, "jobs", range="7d", offset=9)["jobs"] == []
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "x"}):
        response = client.get("/api/analytics/jobs", query_string=bad, headers=reader)
        assert response.status_code == 422 and response.get_json()["success"] is False


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_jobs_table_sorted_by_a_percentile_pages_the_whole_order(
    client: FlaskClient, reader: dict[str, str], seed: Seed, order: str
) -> None:
    whole = answer(client, reader, "jobs", range="7d", sort="p95", order=order)["jobs"]
    assert [r["p95"] is None for r in whole] == [False, False, False, True]  # gamma: no runs
    paged = [row for o in range(4)
             for row in answer(client, reader, "jobs", range="7d", sort="p95", order=order,
                               limit=1, offset=o)["jobs"]]  # fmt: skip
    assert paged == whole


def test_percentiles_are_merged_only_for_the_rows_shown(seed: Seed, backend: Backend) -> None:
    asked: list[list[str]] = []
    many = backend.duration_quantiles_many

    def spy(tenant_id: str, job_ids: Any, *args: Any) -> Any:
        asked.append(list(job_ids))
        return many(tenant_id, job_ids, *args)

    backend.duration_quantiles_many = spy  # type: ignore[method-assign]
    try:
        table = analytics.jobs_table(backend, "acme", seed.d0, seed.now, "runs", "desc",
                                     seed.now, offset=0, limit=1)  # fmt: skip
        assert [r.id for r in table.rows] == ["alpha"] and table.rows[0].p95 is not None
        assert asked == [["alpha"]]
        asked.clear()
        analytics.jobs_table(backend, "acme", seed.d0, seed.now, "p99", "desc", seed.now,
                             offset=0, limit=1)  # fmt: skip
        assert sorted(asked[0]) == ["alpha", "beta", "delta"]  # every job with durations
    finally:
        del backend.duration_quantiles_many


def test_analytics_page_pages_the_jobs_table_and_links_all_failures(
    app: Flask, backend: Backend, seed: Seed
) -> None:
    backend.upsert_jobs("acme", [Job("acme", f"extra-{i:02d}") for i in range(60)], seed.now)
    backend.create_user(User("ana", "acme", hash_password("password-123")))
    client = app.test_client()
    with client.session_transaction() as session:
        session["user"], session["tenant"], session["admin"] = "ana", "acme", False
    first = client.get("/analytics?range=7d&sort=runs&order=desc")
    assert first.status_code == 200
    rows = re.findall(r'<tr>\s*<td><a href="/jobs/([^"]+)"', first.text)
    assert len(rows) == 25 and rows[:3] == ["alpha", "beta", "delta"]
    assert "jobs 1–25 of 64" in first.text and 'rel="prev"' not in first.text
    next_href = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert next_href is not None
    second = client.get(html.unescape(next_href.group(1)))
    rest = re.findall(r'<tr>\s*<td><a href="/jobs/([^"]+)"', second.text)
    assert len(rest) == 25 and not set(rest) & set(rows)
    assert "jobs 26–50 of 64" in second.text and 'rel="prev"' in second.text
    last = client.get("/analytics?range=7d&sort=runs&order=desc&offset=50")
    assert "jobs 51–64 of 64" in last.text and 'rel="next"' not in last.text
    # "Failures" counts failed, timed out and missed runs; its link finds all of them.
    beta = re.search(r'/jobs/beta".*?<a href="(/search\?[^"]+)">1</a>', first.text, re.S)
    assert beta is not None
    found = client.get(html.unescape(beta.group(1)))
    assert found.status_code == 200
    assert re.findall(r'/executions/([^"]+)"', found.text) == ["b3"]  # the timeout
