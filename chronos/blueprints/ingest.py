"""The ingest API, wire-compatible with the earlier system's SDK.

``POST /api/ingest/jobs/register``, ``POST /api/ingest/executions/batch`` and
``POST /api/ingest/executions``, for API keys with the ``ingest`` scope. A bad item is
rejected with its index and field messages and never drops its good neighbours.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import ValidationError

from chronos.auth import check_rate, principal, require_key
from chronos.errors import BadRequest, PayloadTooLarge
from chronos.extension import get_backend
from chronos.ingest import build_execution, merge_job
from chronos.models import Event
from chronos.prometheus import count_ingest
from chronos.scheduler.planning import first_fire, needs_plan
from chronos.schemas import ExecutionEventSchema, JobDefSchema
from chronos.timeutil import now_ms

bp = Blueprint("ingest", __name__, url_prefix="/api/ingest")

_job_schema = JobDefSchema()
_event_schema = ExecutionEventSchema()


def _items(key: str) -> list[Any]:
    check_rate(principal(), "ingest", current_app.config["CHRONOS_INGEST_RATE_PER_MINUTE"])
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        raise BadRequest(f'the body must be a JSON object {{"{key}": [...]}}')
    items = body[key]
    limit = current_app.config["CHRONOS_MAX_BATCH_ITEMS"]
    if len(items) > limit:
        raise PayloadTooLarge(f"at most {limit} {key} per request; split the batch",
                              details={"limit_items": limit})  # fmt: skip
    return items


def _load(schema: Any, item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ValidationError({"_schema": ["each item must be a JSON object"]})
    data = schema.load(item)
    if data.get("finished_at") is not None and data["finished_at"] < data.get("started_at", 0):
        raise ValidationError({"finishedAt": ["must not be before startedAt"]})
    return data


def _answer(body: dict[str, Any], ok: int, rejected: list[Any]) -> Response:
    everything_rejected = rejected and ok == 0
    body = {"success": not everything_rejected, **body, "rejected": rejected}
    if everything_rejected:  # the error envelope's fields, next to the per-item answer
        body["error"] = "every item was rejected; see 'rejected'"
        body["code"] = "validation_error"
    response = jsonify(body)
    response.status_code = 422 if everything_rejected else 200
    return response


@bp.post("/jobs/register")
@require_key("ingest")
def register_jobs() -> Response:
    tenant = principal().tenant_id
    backend, now = get_backend(), now_ms()
    items = _items("jobs")
    loaded, rejected = [], []
    for index, item in enumerate(items):
        try:
            loaded.append((index, _load(_job_schema, item)))
        except ValidationError as exc:
            rejected.append({"index": index, "errors": exc.messages})
    stored = backend.get_jobs([(tenant, data["id"]) for _, data in loaded])
    jobs = [merge_job(tenant, data, existing) for (_, data), existing in zip(loaded, stored)]
    outcomes = backend.upsert_jobs(tenant, jobs, now)
    count_ingest("job", outcomes, len(rejected))
    for job, existing in zip(jobs, stored):
        if needs_plan(existing, job):  # a new or rescheduled job gets its next fire time
            backend.set_next_fire(tenant, job.id, first_fire(job, now))
    for job, outcome in zip(jobs, outcomes):
        backend.publish(Event(tenant, "job", {"jobId": job.id, "outcome": outcome}))
    results = [{"index": i, "id": j.id, "outcome": o}
               for (i, _), j, o in zip(loaded, jobs, outcomes)]  # fmt: skip
    return _answer({"results": results}, len(jobs), rejected)


def _write(items: list[Any]) -> tuple[list[Any], list[str], list[dict[str, Any]]]:
    tenant = principal().tenant_id
    now, max_output = now_ms(), current_app.config["CHRONOS_MAX_OUTPUT_BYTES"]
    executions, indexes, rejected = [], [], []
    for index, item in enumerate(items):
        try:
            data = _load(_event_schema, item)
        except ValidationError as exc:
            rejected.append({"index": index, "errors": exc.messages})
            continue
        executions.append(build_execution(tenant, data, now, max_output))
        indexes.append(index)
    outcomes = get_backend().write_executions(tenant, executions) if executions else []
    count_ingest("execution", outcomes, len(rejected))
    results = [
        {"index": i, "execId": e.exec_id, "outcome": o}
        for i, e, o in zip(indexes, executions, outcomes)
    ]
    return results, outcomes, rejected


@bp.post("/executions/batch")
@require_key("ingest")
def ingest_batch() -> Response:
    results, outcomes, rejected = _write(_items("executions"))
    duplicates = outcomes.count("duplicate")
    body = {"accepted": len(outcomes) - duplicates, "duplicates": duplicates,
            "ingested": len(outcomes) - duplicates, "results": results}  # fmt: skip
    return _answer(body, len(outcomes), rejected)


@bp.post("/executions")
@require_key("ingest")
def ingest_one() -> Response:
    check_rate(principal(), "ingest", current_app.config["CHRONOS_INGEST_RATE_PER_MINUTE"])
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the body must be one execution as a JSON object")
    results, _, rejected = _write([body])
    if rejected:
        raise ValidationError(rejected[0]["errors"])
    return jsonify({"success": True, **results[0]})
