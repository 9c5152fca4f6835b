"""The analytics API: overview, trends and the per-job table, for the dashboard and for
``read``-scoped keys. Figures come from metric series and sketches (``chronos.analytics``),
never from execution records, but for the comparison of versions (``/versions``), which
groups a job's stored records (at most the per-job cap of them).

Every answer is ``{"success": true, "data": {...}}``; durations are milliseconds, instants ISO
8601 UTC. Bucket boundaries follow ``tz`` (an IANA name, default ``UTC``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import marshmallow
from flask import Blueprint, Response, jsonify, request
from marshmallow import EXCLUDE, Schema, fields, validate

from chronos import analytics
from chronos.auth import principal, require_reader
from chronos.errors import ValidationError
from chronos.extension import get_backend
from chronos.models import VERSION_KINDS, VersionStats
from chronos.schemas import ID, Timestamp
from chronos.timeutil import now_ms

bp = Blueprint("analytics", __name__, url_prefix="/api/analytics")


def _check_tz(name: str) -> bool:
    try:
        analytics.zone(name)
    except analytics.RangeError as exc:
        raise marshmallow.ValidationError(str(exc)) from None
    return True


class RangeQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    range = fields.String(load_default="24h",
                          validate=validate.OneOf([*analytics.RANGES, "custom"]))  # fmt: skip
    start = Timestamp(load_default=None, metadata={"description": "with range=custom"})
    end = Timestamp(load_default=None, metadata={"description": "with range=custom"})


class TzQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    tz = fields.String(load_default="UTC", validate=_check_tz,
                       metadata={"description": "IANA time zone of the buckets"})  # fmt: skip


class TrendsQuerySchema(RangeQuerySchema, TzQuerySchema):
    bucket = fields.String(load_default=None, validate=validate.OneOf(analytics.BUCKETS),
                           metadata={"description": "default: by range"})  # fmt: skip
    job_id = fields.String(data_key="jobId", load_default=None, validate=ID)


class JobsQuerySchema(RangeQuerySchema):
    sort = fields.String(load_default="runs", validate=validate.OneOf(analytics.SORT_KEYS))
    order = fields.String(load_default="desc", validate=validate.OneOf(["asc", "desc"]))
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000),
                           metadata={"description": "rows of the sorted table"})  # fmt: skip
    offset = fields.Integer(load_default=0, validate=validate.Range(0, 1_000_000),
                            metadata={"description": "rows to skip first"})  # fmt: skip


class TotalsOutSchema(Schema):
    start = Timestamp()
    end = Timestamp()
    runs = fields.Integer()
    success = fields.Integer()
    failure = fields.Integer(metadata={"description": "failed, timed out or missed"})
    success_rate = fields.Float(
        data_key="successRate", allow_none=True,
        metadata={"description": "success / (success + failure); cancelled runs are neither"},
    )  # fmt: skip
    avg_duration = fields.Float(data_key="avgDuration", allow_none=True)
    p95 = fields.Float(allow_none=True)


class JobCountsOutSchema(Schema):
    total = fields.Integer()
    enabled = fields.Integer()
    health = fields.Dict(keys=fields.String(), values=fields.Integer())


class SummaryOutSchema(Schema):
    timezone = fields.String()
    last24h = fields.Nested(TotalsOutSchema)
    today = fields.Nested(TotalsOutSchema, metadata={"description": "since local midnight"})
    jobs = fields.Nested(JobCountsOutSchema)


class TrendPointOutSchema(TotalsOutSchema):
    p50 = fields.Float(allow_none=True)


class TrendsOutSchema(Schema):
    range = fields.String()
    bucket = fields.String()
    timezone = fields.String()
    job_id = fields.String(data_key="jobId", allow_none=True)
    start = Timestamp()
    end = Timestamp()
    buckets = fields.List(fields.Nested(TrendPointOutSchema))


class VersionsQuerySchema(RangeQuerySchema):
    job_id = fields.String(data_key="jobId", required=True, validate=ID)
    by = fields.String(load_default="job", validate=validate.OneOf(VERSION_KINDS),
                       metadata={"description": "the job's version, or the app's"})  # fmt: skip


class VersionOutSchema(Schema):
    version = fields.String(allow_none=True, metadata={"description": "null: none reported"})
    runs = fields.Integer()
    success = fields.Integer()
    failure = fields.Integer(metadata={"description": "failed, timed out or missed"})
    success_rate = fields.Method("_success_rate", data_key="successRate", allow_none=True)
    avg_duration = fields.Float(attribute="duration_avg_ms", data_key="avgDuration",
                                allow_none=True)  # fmt: skip
    p95 = fields.Float(attribute="duration_p95_ms", allow_none=True)
    first_started_at = Timestamp(data_key="firstStartedAt")
    last_started_at = Timestamp(data_key="lastStartedAt")

    def _success_rate(self, stats: VersionStats) -> float | None:
        return analytics.success_rate(stats.success, stats.failure)


class VersionsOutSchema(Schema):
    job_id = fields.String(data_key="jobId")
    by = fields.String()
    range = fields.String()
    start = Timestamp()
    end = Timestamp()
    versions = fields.List(fields.Nested(VersionOutSchema), metadata={
        "description": "newest first (by first start); from the stored records, so within "
                       "the execution retention"})  # fmt: skip


class JobRowOutSchema(Schema):
    id = fields.String()
    name = fields.String()
    runs = fields.Integer()
    success = fields.Integer()
    failure = fields.Integer()
    success_rate = fields.Float(data_key="successRate", allow_none=True)
    avg_duration = fields.Float(data_key="avgDuration", allow_none=True)
    p50 = fields.Float(allow_none=True)
    p95 = fields.Float(allow_none=True)
    p99 = fields.Float(allow_none=True)
    last_failure_at = Timestamp(data_key="lastFailureAt", allow_none=True)
    health = fields.String()


class JobsOutSchema(Schema):
    range = fields.String()
    start = Timestamp(metadata={
        "description": "the range widened to whole UTC hours (days, over 48 hours)"})  # fmt: skip
    end = Timestamp()
    sort = fields.String()
    order = fields.String()
    total = fields.Integer(metadata={"description": "rows of the whole table (jobs)"})
    offset = fields.Integer()
    limit = fields.Integer()
    jobs = fields.List(fields.Nested(JobRowOutSchema))


_tz_query, _trends_query, _jobs_query = TzQuerySchema(), TrendsQuerySchema(), JobsQuerySchema()
_summary_out, _trends_out, _jobs_out = SummaryOutSchema(), TrendsOutSchema(), JobsOutSchema()
_versions_query, _versions_out = VersionsQuerySchema(), VersionsOutSchema()


def _answer(schema: Schema, data: Any) -> Response:
    return jsonify({"success": True, "data": schema.dump(data)})


@contextlib.contextmanager
def _range_errors() -> Iterator[None]:
    """A range that cannot be answered becomes a 422 naming the parameter."""
    try:
        yield
    except analytics.RangeError as exc:
        raise ValidationError(str(exc), details={exc.field: [str(exc)]}) from None


@bp.get("/summary")
@require_reader
def summary() -> Response:
    """Runs of the last 24 h and of today (local), success rate, average and p95 duration, and
    the tenant's jobs by health."""
    tz = _tz_query.load(request.args)["tz"]
    result = analytics.summary(get_backend(), principal().tenant_id, now_ms(), tz)
    return _answer(_summary_out, result)


@bp.get("/trends")
@require_reader
def trends() -> Response:
    """Counts, success rate and p50/p95 per local bucket, of the tenant or of one job."""
    args = _trends_query.load(request.args)
    with _range_errors():
        start, end = analytics.resolve_range(args["range"], now_ms(), args["start"], args["end"])
        bucket = args["bucket"] or analytics.default_bucket(args["range"], start, end)
        points = analytics.trends(get_backend(), principal().tenant_id, args["job_id"],
                                  start, end, bucket, args["tz"])  # fmt: skip
    data = {"range": args["range"], "bucket": bucket, "timezone": args["tz"],
            "job_id": args["job_id"], "start": points[0].start, "end": points[-1].end,
            "buckets": points}  # fmt: skip
    return _answer(_trends_out, data)


@bp.get("/jobs")
@require_reader
def jobs() -> Response:
    """One row per job: runs, success rate, failures, p50/p95/p99, last failure and health;
    a page of ``limit`` rows of the sorted table from ``offset``, and the table's ``total``."""
    args = _jobs_query.load(request.args)
    now = now_ms()
    with _range_errors():
        start, end = analytics.resolve_range(args["range"], now, args["start"], args["end"])
    table = analytics.jobs_table(get_backend(), principal().tenant_id, start, end,
                                 args["sort"], args["order"], now,
                                 offset=args["offset"], limit=args["limit"])  # fmt: skip
    data = {"range": args["range"], "start": table.start, "end": table.end,
            "sort": args["sort"], "order": args["order"], "total": table.total,
            "offset": table.offset, "limit": args["limit"], "jobs": table.rows}  # fmt: skip
    return _answer(_jobs_out, data)


@bp.get("/versions")
@require_reader
def versions() -> Response:
    """One job's runs, success rate, average and p95 duration per version (of the job, or of
    the app with ``by=app``), newest first, to compare a release with the one before."""
    args = _versions_query.load(request.args)
    with _range_errors():
        start, end = analytics.resolve_range(args["range"], now_ms(), args["start"], args["end"])
    found = get_backend().version_stats(principal().tenant_id, args["job_id"], args["by"],
                                        start, end)  # fmt: skip
    data = {"job_id": args["job_id"], "by": args["by"], "range": args["range"], "start": start,
            "end": end, "versions": found}  # fmt: skip
    return _answer(_versions_out, data)
