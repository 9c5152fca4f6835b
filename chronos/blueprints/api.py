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
from chronos.models import ExecutionQuery, JobQuery, Page
from chronos.schemas import (
    ExecutionListQuerySchema,
    ExecutionOutSchema,
    JobListQuerySchema,
    JobOutSchema,
)

bp = Blueprint("api", __name__, url_prefix="/api")

_job_out = JobOutSchema()
_exec_out = ExecutionOutSchema()
_job_query = JobListQuerySchema()
_exec_query = ExecutionListQuerySchema()


def _page(page: Page[Any], schema: Any) -> Response:
    return jsonify({"success": True, "data": schema.dump(page.items, many=True),
                    "nextCursor": page.next_cursor})  # fmt: skip


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3 document of this API (public: it holds no data)."""
    from chronos.openapi import build_spec

    return jsonify(build_spec())


@bp.get("/jobs")
@require_key("read")
def list_jobs() -> Response:
    args = _job_query.load(request.args)
    query = JobQuery(enabled=args["enabled"], tag=args["tag"], text=args["q"],
                     limit=args["limit"], cursor=args["cursor"])  # fmt: skip
    return _page(get_backend().list_jobs(principal().tenant_id, query), _job_out)


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
    return jsonify({"success": True, "data": _job_out.dump(job)})


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
        job_id=job_id if job_id is not None else args["job_id"], status=args["status"],
        text=args["q"], since=args["since"], until=args["until"], job_version=args["version"],
        host=args["host"], limit=args["limit"], cursor=args["cursor"],
    )  # fmt: skip
    return _page(get_backend().search_executions(principal().tenant_id, query), _exec_out)
