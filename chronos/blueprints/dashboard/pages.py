"""Dashboard pages: overview, jobs, job detail, execution detail, search and analytics.

Every page reads through the backend with the logged-in user's tenant; times are shown in the
user's time zone (the ``tz`` cookie that ``live.js`` sets from the browser, else UTC).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote, urlencode

from flask import abort, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from chronos import analytics, charts, cron, formatting
from chronos.blueprints.dashboard import admin_required, bp, login_required
from chronos.extension import get_backend
from chronos.health import HEALTHS, job_health
from chronos.models import ALL_STATUSES, VERSION_KINDS, Execution, ExecutionQuery, Job, JobQuery
from chronos.schemas import lifecycle
from chronos.timeutil import now_ms, parse_timestamp, to_iso

HOUR, DAY = 3_600_000, 86_400_000
RANGES = ("24h", "7d", "30d", "90d")
ATTENTION = ("failing", "missed", "late")
PAGE = 50
#: Rows a page of the analytics jobs table holds: each costs a merge of its duration sketches
#: over the range (~0.2 ms for 90 days), the rest of the table only its counts.
TABLE_PAGE = 25


def _tz() -> str:
    # live.js writes the cookie with encodeURIComponent ("Europe%2FParis"); cookies are not
    # percent-decoded for us.
    return formatting.zone(request.args.get("tz") or unquote(request.cookies.get("tz") or ""))


@bp.app_template_filter("local")
def _local(ms: int | None, seconds: bool = True) -> str:
    return formatting.local_time(ms, g.get("tz") or "UTC", seconds)


@bp.app_template_filter("in_tz")
def _in_tz(ms: int | None, tz: str) -> str:
    return formatting.local_time(ms, formatting.zone(tz))


@bp.app_template_filter("duration")
def _duration(ms: float | None) -> str:
    return formatting.duration(ms)


@bp.app_template_filter("percent")
def _percent(value: float | None) -> str:
    return formatting.percent(value)


@bp.before_request
def _remember_tz() -> None:
    g.tz = _tz()


def _tenant() -> str:
    return g.principal.tenant_id


def _statuses() -> tuple[str, ...]:
    """The ``status`` filter: one status or several separated by commas; unknown ones are
    ignored (the filter menu only offers known ones)."""
    wanted = (request.args.get("status") or "").split(",")
    return tuple(s for s in dict.fromkeys(wanted) if s in ALL_STATUSES)


def _time_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        return parse_timestamp(raw)
    except ValueError:
        return None  # a hand-edited URL: ignore the bad bound rather than fail the page


def _describe(job: Job) -> str:
    if not job.schedule:
        return "at " + formatting.local_time(job.run_at, job.timezone) if job.run_at else "manual"
    try:
        return cron.describe(job.schedule)
    except ValueError:
        return job.schedule


def _next_run(job: Job, now: int) -> int | None:
    try:
        return cron.plan(job, now)
    except ValueError:
        return None


@bp.get("/")
@login_required
def overview() -> str:
    backend, tenant, now = get_backend(), _tenant(), now_ms()
    every_job = analytics.all_jobs(backend, tenant)
    summary = analytics.summary(backend, tenant, now, g.tz, every_job)
    attention = [job for job in every_job if job_health(job, now) in ATTENTION][:20]
    recent = backend.search_executions(tenant, ExecutionQuery(since=now - DAY, limit=20)).items
    return render_template("overview.html", summary=summary, attention=attention,
                           recent=recent, health=job_health, now=now)  # fmt: skip


@bp.get("/jobs")
@login_required
def jobs() -> str:
    backend, tenant, now = get_backend(), _tenant(), now_ms()
    q = request.args.get("q") or None
    tag = request.args.get("tag") or None
    health = request.args.get("health") or None
    enabled = {"yes": True, "no": False}.get(request.args.get("enabled", ""))
    cursor = request.args.get("cursor") or None
    query = JobQuery(enabled=enabled, tag=tag, text=q, limit=PAGE, cursor=cursor)
    if health:
        items: list[Job] = []
        for _ in range(20):
            page = backend.list_jobs(tenant, query)
            items += [j for j in page.items if job_health(j, now) == health]
            query.cursor = page.next_cursor
            query.limit = PAGE - len(items)
            if query.cursor is None or len(items) >= PAGE:
                break
        next_cursor = query.cursor
    else:
        page = backend.list_jobs(tenant, query)
        items, next_cursor = page.items, page.next_cursor
    day0 = now - now % DAY
    edges = [day0 - 6 * DAY + i * DAY for i in range(8)]
    rows = []
    for job in items:
        buckets = backend.metric_buckets(tenant, job.id, edges)
        rows.append({
            "job": job, "schedule": _describe(job), "next": _next_run(job, now),
            "health": job_health(job, now),
            "trend": charts.sparkline([b.runs for b in buckets], [b.failure for b in buckets]),
        })  # fmt: skip
    args = {k: v for k, v in request.args.items() if k != "cursor" and v}
    next_url = url_for(".jobs", **args, cursor=next_cursor) if next_cursor else None
    return render_template("jobs.html", rows=rows, next_url=next_url, args=args, healths=HEALTHS)


def _range(now: int) -> tuple[str, int, int, str]:
    chosen = request.args.get("range", "7d")
    start, end = _time_arg("from"), _time_arg("to")
    if chosen == "custom" and start is not None and end is not None and start < end:
        bucket = request.args.get("bucket") or analytics.default_bucket("custom", start, end)
        return chosen, start, end, bucket
    if chosen not in RANGES:
        chosen = "7d"
    start, end = analytics.resolve_range(chosen, now)
    bucket = request.args.get("bucket") or analytics.default_bucket(chosen, start, end)
    return chosen, start, end, bucket


def _trends(tenant: str, job_id: str | None, chosen: str, start: int, end: int,
            bucket: str) -> tuple[list[analytics.TrendPoint], str]:  # fmt: skip
    """The trend in ``bucket``s, or in the range's default bucket when the URL asked for one
    that does not fit (too many buckets, or not a bucket at all)."""
    backend = get_backend()
    try:
        return analytics.trends(backend, tenant, job_id, start, end, bucket, g.tz), bucket
    except analytics.RangeError:
        fallback = analytics.default_bucket(chosen, start, end)
        return analytics.trends(backend, tenant, job_id, start, end, fallback, g.tz), fallback


def _search_url(**params: Any) -> str:
    return url_for(".search") + "?" + urlencode({k: v for k, v in params.items() if v})


def _duration_unit(trend: list[analytics.TrendPoint]) -> tuple[float, str]:
    """The unit the duration chart reads best in: ``(ms per unit, suffix)``."""
    top = max((v for b in trend for v in (b.p50, b.p95) if v is not None), default=0.0)
    for per, unit in ((HOUR, " h"), (60_000, " min"), (1000, " s")):
        if top >= 2 * per:
            return per, unit
    return 1, " ms"


def _charts(trend: list[analytics.TrendPoint], job_id: str | None) -> dict[str, Any]:
    bars, points = [], []
    per, unit = _duration_unit(trend)
    for bucket in trend:
        label = formatting.local_time(bucket.start, g.tz, seconds=False)
        href = _search_url(job=job_id, **{"from": to_iso(bucket.start), "to": to_iso(bucket.end)})
        bars.append(charts.Bar(label, bucket.success, bucket.failure, href))
        durations = tuple(None if v is None else v / per for v in (bucket.p50, bucket.p95))
        points.append(charts.Point(label, durations))
    return {
        "outcomes": charts.stacked_bars(bars, "Successful and failed runs per bucket"),
        "durations": charts.lines(points, ("p50", "p95"), "Duration per bucket", unit),
    }


@bp.get("/jobs/<path:job_id>")
@login_required
def job_detail(job_id: str) -> str:
    backend, tenant, now = get_backend(), _tenant(), now_ms()
    job = backend.get_job(tenant, job_id)
    if job is None:
        abort(404, f"no job {job_id!r}")
    chosen, start, end, bucket = _range(now)
    trend, bucket = _trends(tenant, job_id, chosen, start, end, bucket)
    (totals,) = backend.metric_buckets(tenant, job_id, [start, end])
    (quantiles,) = backend.duration_quantiles(tenant, job_id, [start, end], [0.5, 0.95, 0.99])
    fires: list[int] = []
    if job.schedule and job.enabled:
        after = max(now, job.run_at or 0)
        try:
            fires = cron.next_fires(job.schedule, job.timezone, after, 5)
        except ValueError:
            fires = []
    by = request.args.get("by") if request.args.get("by") in VERSION_KINDS else "job"
    versions = analytics.compare_versions(backend.version_stats(tenant, job_id, by, start, end))
    triggers = backend.list_triggers(tenant, job_id, 10)
    q = request.args.get("q") or None
    page = backend.search_executions(tenant, ExecutionQuery(
        job_id=job_id, statuses=_statuses(), text=q, limit=25,
        cursor=request.args.get("cursor") or None))  # fmt: skip
    by_trigger = {}
    if triggers:
        recent = backend.search_executions(tenant, ExecutionQuery(job_id=job_id, limit=200))
        by_trigger = {e.trigger_id: e for e in recent.items if e.trigger_id}
    lifecycle_rows = [(t, by_trigger.get(t.trigger_id),
                       lifecycle(t, by_trigger.get(t.trigger_id))) for t in triggers]  # fmt: skip
    args = {k: v for k, v in request.args.items() if k != "cursor" and v}
    next_url = (url_for(".job_detail", job_id=job_id, **args, cursor=page.next_cursor)
                if page.next_cursor else None)  # fmt: skip
    return render_template(
        "job.html", job=job, health=job_health(job, now), schedule=_describe(job), fires=fires,
        totals=totals, quantiles=quantiles, chart=_charts(trend, job_id), range=chosen,
        ranges=RANGES, start=start, end=end, bucket=bucket, lifecycle=lifecycle_rows,
        executions=page.items, next_url=next_url, args=args, versions=versions, by=by,
    )  # fmt: skip


@bp.post("/jobs/<path:job_id>/enabled")
@admin_required
def set_enabled(job_id: str) -> Response:
    from chronos.scheduler.planning import first_fire

    backend, tenant, now = get_backend(), _tenant(), now_ms()
    enabled = request.form.get("enabled") == "1"
    if backend.get_job(tenant, job_id) is None:
        abort(404, f"no job {job_id!r}")
    job = backend.set_job_enabled(tenant, job_id, enabled, now)
    backend.set_next_fire(tenant, job_id, first_fire(job, now) if enabled else None)
    return redirect(url_for(".job_detail", job_id=job_id))


@bp.get("/executions/<path:exec_id>")
@login_required
def execution_detail(exec_id: str) -> str:
    execution = get_backend().get_execution(_tenant(), exec_id)
    if execution is None:
        abort(404, f"no execution {exec_id!r}")
    snippet = (formatting.code(execution.code_snippet, execution.code_language)
               if execution.code_snippet else None)  # fmt: skip
    return render_template(
        "execution.html", ex=execution, snippet=snippet,
        labels=sorted(execution.labels.items()),
        metadata=json.dumps(execution.metadata, indent=2, ensure_ascii=False, sort_keys=True)
        if execution.metadata else None,
    )  # fmt: skip


def _hits(execution: Execution, words: list[str]) -> list[tuple[str, Any]]:
    found = []
    lowered = [w.lower() for w in words]
    for label, text in (("error", execution.error_message), ("stack", execution.error_stack),
                        ("stdout", execution.stdout), ("stderr", execution.stderr),
                        ("type", execution.error_type)):  # fmt: skip
        if text and (not words or any(w in text.lower() for w in lowered)):
            found.append((label, formatting.highlight(text, words)))
    return found[:2]


@bp.get("/search")
@login_required
def search() -> str:
    backend, tenant, now = get_backend(), _tenant(), now_ms()
    args = {k: v for k, v in request.args.items() if v and k != "cursor"}
    q = args.get("q")
    since, until = _time_arg("from"), _time_arg("to")
    if q is None and since is None and not args.get("job"):
        since = now - 7 * DAY  # a browse without a query: the last week, newest first
    query = ExecutionQuery(
        job_id=args.get("job"), statuses=_statuses(), text=q, since=since, until=until,
        job_version=args.get("version"), host=args.get("host"), limit=25,
        cursor=request.args.get("cursor") or None,
    )  # fmt: skip
    page = backend.search_executions(tenant, query)
    terms = formatting.search_terms(q)
    results = [(e, _hits(e, terms)) for e in page.items]
    next_url = (url_for(".search", **args, cursor=page.next_cursor)
                if page.next_cursor else None)  # fmt: skip
    return render_template("search.html", results=results, args=args, next_url=next_url,
                           since=since, until=until)  # fmt: skip


@bp.get("/analytics")
@login_required
def analytics_page() -> str:
    backend, tenant, now = get_backend(), _tenant(), now_ms()
    chosen, start, end, bucket = _range(now)
    job_id = request.args.get("job") or None
    trend, bucket = _trends(tenant, job_id, chosen, start, end, bucket)
    sort = request.args.get("sort", "runs")
    sort = sort if sort in analytics.SORT_KEYS else "runs"
    order = "asc" if request.args.get("order") == "asc" else "desc"
    offset = request.args.get("offset", "0")
    offset = int(offset) if offset.isdigit() and len(offset) < 7 else 0
    table = analytics.jobs_table(backend, tenant, start, end, sort=sort, order=order, now=now,
                                 offset=offset, limit=TABLE_PAGE)  # fmt: skip
    base = {k: v for k, v in request.args.items() if k not in ("sort", "order", "offset") and v}
    after = offset + TABLE_PAGE
    pages = {"previous": max(0, offset - TABLE_PAGE) if offset else None,
             "next": after if after < table.total else None}  # fmt: skip
    return render_template(
        "analytics.html", chart=_charts(trend, job_id), trend=trend, table=table.rows,
        total=table.total, offset=offset, pages=pages, range=chosen,
        ranges=RANGES, bucket=bucket, start=start, end=end, sort=sort, order=order, base=base,
        job_id=job_id, buckets=("hour", "day", "week", "month"), to_iso=to_iso,
    )  # fmt: skip
