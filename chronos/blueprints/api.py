"""The read API for ``read``-scoped keys: jobs and executions, always of the key's tenant.

Lists answer ``{"success": true, "data": [...], "nextCursor": "..."|null}``; pass
``cursor=<nextCursor>`` for the next page.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from chronos.auth import principal, require_key
from chronos.errors import NotFound
from chronos.extension import get_backend
from chronos.health import job_health
from chronos.models import ExecutionQuery, Job, JobQuery, Page
from chronos.schemas import (
    ExecutionListQuerySchema,
    ExecutionOutSchema,
    JobListQuerySchema,
    JobOutSchema,
    TriggerOutSchema,
    TriggerQuerySchema,
    lifecycle,
)
from chronos.timeutil import now_ms, to_iso

bp = Blueprint("api", __name__, url_prefix="/api")

_job_out = JobOutSchema()
_exec_out = ExecutionOutSchema()
_job_query = JobListQuerySchema()
_trigger_out = TriggerOutSchema()
_trigger_query = TriggerQuerySchema()
_exec_query = ExecutionListQuerySchema()


def _page(page: Page[Any], schema: Any) -> Response:
    return jsonify({"success": True, "data": schema.dump(page.items, many=True),
                    "nextCursor": page.next_cursor})  # fmt: skip


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3 document of this API (public: it holds no data)."""
    from chronos.openapi import build_spec

    return jsonify(build_spec())


#: A health filter scans at most this many pages of jobs per request; the answer then holds
#: what was found so far and a cursor to go on from.
HEALTH_SCAN_PAGES = 20


def _jobs_out(jobs: list[Job]) -> list[dict[str, Any]]:
    now = now_ms()
    dumped = _job_out.dump(jobs, many=True)
    for item, job in zip(dumped, jobs):
        item["health"] = job_health(job, now)
    return dumped


@bp.get("/jobs")
@require_key("read")
def list_jobs() -> Response:
    args = _job_query.load(request.args)
    tenant, wanted = principal().tenant_id, args["health"]
    query = JobQuery(enabled=args["enabled"], tag=args["tag"], text=args["q"],
                     limit=args["limit"], cursor=args["cursor"])  # fmt: skip
    if wanted is None:
        page = get_backend().list_jobs(tenant, query)
        return jsonify({"success": True, "data": _jobs_out(page.items),
                        "nextCursor": page.next_cursor})  # fmt: skip
    # Health depends on the time, so it is not indexed: scan in order, keeping the position.
    found: list[Job] = []
    cursor, now = args["cursor"], now_ms()
    for _ in range(HEALTH_SCAN_PAGES):
        query.limit, query.cursor = args["limit"] - len(found), cursor
        page = get_backend().list_jobs(tenant, query)
        found += [job for job in page.items if job_health(job, now) == wanted]
        cursor = page.next_cursor
        if cursor is None or len(found) >= args["limit"]:
            break
    return jsonify({"success": True, "data": _jobs_out(found), "nextCursor": cursor})


@bp.get("/jobs/<path:job_id>/executions")
@require_key("read")
def job_executions(job_id: str) -> Response:
    return _executions(job_id)


@bp.get("/jobs/<path:job_id>")
@require_key("read")
def get_job(job_id: str) -> Response:
    job = get_backend().get_job(principal().tenant_id, job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return jsonify({"success": True, "data": _jobs_out([job])[0]})


@bp.get("/jobs/<path:job_id>/triggers")
@require_key("read")
def job_triggers(job_id: str) -> Response:
    """The job's recent scheduled instants with their lifecycle: scheduled, delivered (to a
    runner), started and finished (from the executions carrying the trigger), or missed."""
    tenant = principal().tenant_id
    backend = get_backend()
    limit = _trigger_query.load(request.args)["limit"]
    triggers = backend.list_triggers(tenant, job_id, limit)
    runs = backend.search_executions(tenant, ExecutionQuery(job_id=job_id, limit=1000)).items
    by_trigger = {run.trigger_id: run for run in runs if run.trigger_id}
    data = []
    for trigger in triggers:
        run = by_trigger.get(trigger.trigger_id)
        item = _trigger_out.dump(trigger)
        item["execId"] = run.exec_id if run else None
        item["startedAt"] = to_iso(run.started_at) if run and run.status != "missed" else None
        item["finishedAt"] = to_iso(run.finished_at) if run and run.terminal else None
        item["lifecycle"] = lifecycle(trigger, run)
        data.append(item)
    return jsonify({"success": True, "data": data})


@bp.get("/executions")
@require_key("read")
def list_executions() -> Response:
    return _executions(None)


@bp.get("/executions/<path:exec_id>")
@require_key("read")
def get_execution(exec_id: str) -> Response:
    execution = get_backend().get_execution(principal().tenant_id, exec_id)
    if execution is None:
        raise NotFound(f"no execution {exec_id!r}")
    return jsonify({"success": True, "data": _exec_out.dump(execution)})


def _executions(job_id: str | None) -> Response:
    args = _exec_query.load(request.args)
    query = ExecutionQuery(
        job_id=job_id if job_id is not None else args["job_id"], statuses=args["status"],
        text=args["q"], since=args["since"], until=args["until"], job_version=args["version"],
        host=args["host"], limit=args["limit"], cursor=args["cursor"],
    )  # fmt: skip
    return _page(get_backend().search_executions(principal().tenant_id, query), _exec_out)
