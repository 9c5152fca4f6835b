"""The OpenAPI 3 document of the JSON API, generated from the marshmallow schemas."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from chronos import __version__
from chronos.blueprints.analytics import (
    JobsOutSchema,
    JobsQuerySchema,
    SummaryOutSchema,
    TrendsOutSchema,
    TrendsQuerySchema,
    TzQuerySchema,
    VersionsOutSchema,
    VersionsQuerySchema,
)
from chronos.blueprints.settings import RetentionAnswerSchema, RetentionUpdateSchema
from chronos.schemas import (
    ExecutionEventSchema,
    ExecutionListQuerySchema,
    ExecutionOutSchema,
    JobDefSchema,
    JobListQuerySchema,
    JobOutSchema,
    Timestamp,
    TriggerOutSchema,
    TriggerQuerySchema,
)


class ErrorSchema(Schema):
    success = fields.Boolean(required=True)
    error = fields.String(required=True, metadata={"description": "what was wrong"})
    code = fields.String(required=True)
    details = fields.Raw()


class RejectedSchema(Schema):
    index = fields.Integer(required=True)
    errors = fields.Dict(keys=fields.String(), values=fields.Raw(), required=True)


class RegisterRequestSchema(Schema):
    jobs = fields.List(fields.Nested(JobDefSchema), required=True)


class RegisterResultSchema(Schema):
    index = fields.Integer()
    id = fields.String()
    outcome = fields.String(metadata={"enum": ["created", "updated"]})


class RegisterResponseSchema(Schema):
    success = fields.Boolean()
    results = fields.List(fields.Nested(RegisterResultSchema))
    rejected = fields.List(fields.Nested(RejectedSchema))


class BatchRequestSchema(Schema):
    executions = fields.List(fields.Nested(ExecutionEventSchema), required=True)


class WriteResultSchema(Schema):
    index = fields.Integer()
    execId = fields.String()
    outcome = fields.String(metadata={"enum": ["created", "updated", "duplicate"]})


class BatchResponseSchema(Schema):
    success = fields.Boolean()
    accepted = fields.Integer(metadata={"description": "stored now (new, or running→final)"})
    duplicates = fields.Integer(metadata={"description": "already stored; nothing changed"})
    ingested = fields.Integer(metadata={"description": "same as accepted (earlier clients)"})
    results = fields.List(fields.Nested(WriteResultSchema))
    rejected = fields.List(fields.Nested(RejectedSchema))


class RegisterRejectedSchema(RegisterResponseSchema):
    """The 422 answer when every job was rejected: the usual answer plus the error fields."""

    error = fields.String(required=True)
    code = fields.String(required=True)


class BatchRejectedSchema(BatchResponseSchema):
    """The 422 answer when every execution was rejected."""

    error = fields.String(required=True)
    code = fields.String(required=True)


class OneResponseSchema(WriteResultSchema):
    success = fields.Boolean()


class JobPageSchema(Schema):
    success = fields.Boolean()
    data = fields.List(fields.Nested(JobOutSchema))
    nextCursor = fields.String(allow_none=True)


class ExecutionPageSchema(Schema):
    success = fields.Boolean()
    data = fields.List(fields.Nested(ExecutionOutSchema))
    nextCursor = fields.String(allow_none=True)


class JobOneSchema(Schema):
    success = fields.Boolean()
    data = fields.Nested(JobOutSchema)


class ExecutionOneSchema(Schema):
    success = fields.Boolean()
    data = fields.Nested(ExecutionOutSchema)


class TriggerLifecycleSchema(TriggerOutSchema):
    execId = fields.String(allow_none=True)
    startedAt = fields.String(allow_none=True)
    finishedAt = fields.String(allow_none=True)
    lifecycle = fields.String(metadata={"enum": [
        "scheduled", "delivered", "started", "finished", "missed", "timeout"]})  # fmt: skip


class TriggerListSchema(Schema):
    success = fields.Boolean()
    data = fields.List(fields.Nested(TriggerLifecycleSchema))


class SummaryAnswerSchema(Schema):
    success = fields.Boolean()
    data = fields.Nested(SummaryOutSchema)


class TrendsAnswerSchema(Schema):
    success = fields.Boolean()
    data = fields.Nested(TrendsOutSchema)


class JobsAnswerSchema(Schema):
    success = fields.Boolean()
    data = fields.Nested(JobsOutSchema)


class VersionsAnswerSchema(Schema):
    success = fields.Boolean()
    data = fields.Nested(VersionsOutSchema)


_ERRORS = {
    "400": "the body is not JSON or not of the expected shape",
    "401": "missing or invalid API key",
    "403": "the key lacks the needed scope",
    "413": "the body or the batch is over the limit",
    "422": "invalid input; field messages in details (or every batch item rejected)",
    "429": "over a rate limit (ingest, failed authentications); retry after Retry-After",
    "503": "storage unavailable; retry after Retry-After seconds",
    "404": "no such thing in the key's tenant",
}


def _op(summary: str, ok: str, body: str | None = None, params: Any = None,
        codes: tuple[str, ...] = ("401", "403", "422", "429", "503"),
        schemas: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """One operation; ``schemas`` names the answer schema of a status that is not ``Error``."""
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"apiKey": []}, {"bearer": []}],
        "responses": {"200": {"description": "OK", "content": {
            "application/json": {"schema": ok}}}},  # fmt: skip
    }
    for code in codes:
        schema = (schemas or {}).get(code, "Error")
        op["responses"][code] = {"description": _ERRORS[code],
                                 "content": {"application/json": {"schema": schema}}}  # fmt: skip
    if body:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": body}}}  # fmt: skip
    if params:
        op["parameters"] = [{"in": "query", "schema": params}]
    return op


def _path_param(name: str) -> dict[str, Any]:
    return {"in": "path", "name": name, "required": True, "schema": {"type": "string"}}


def _timestamp_property(converter: Any, field: Any, **kwargs: Any) -> dict[str, Any]:
    if isinstance(field, Timestamp):
        return {"oneOf": [
            {"type": "string", "format": "date-time", "example": "2026-01-31T12:00:00.000Z"},
            {"type": "integer", "description": "epoch milliseconds"},
        ]}  # fmt: skip
    return {}


def build_spec() -> dict[str, Any]:
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="Chronos API", version=__version__, openapi_version="3.0.3",
        plugins=[plugin],
        info={"description": "Job telemetry ingest and read API. Timestamps are accepted as "
              "ISO 8601 (with offset or Z) or epoch milliseconds, and answered as ISO 8601 UTC "
              "with milliseconds and Z."},
    )  # fmt: skip
    plugin.converter.add_attribute_function(_timestamp_property)
    spec.components.security_scheme("apiKey", {"type": "apiKey", "in": "header",
                                               "name": "x-api-key"})  # fmt: skip
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for name, schema in {
        "Error": ErrorSchema, "JobDef": JobDefSchema, "Job": JobOutSchema,
        "ExecutionEvent": ExecutionEventSchema, "Execution": ExecutionOutSchema,
        "RegisterRequest": RegisterRequestSchema, "RegisterResponse": RegisterResponseSchema,
        "BatchRequest": BatchRequestSchema, "BatchResponse": BatchResponseSchema,
        "OneResponse": OneResponseSchema, "RegisterRejected": RegisterRejectedSchema,
        "BatchRejected": BatchRejectedSchema, "JobPage": JobPageSchema,
        "ExecutionPage": ExecutionPageSchema, "JobOne": JobOneSchema,
        "ExecutionOne": ExecutionOneSchema, "TriggerList": TriggerListSchema,
        "AnalyticsSummary": SummaryAnswerSchema, "AnalyticsTrends": TrendsAnswerSchema,
        "AnalyticsJobs": JobsAnswerSchema, "AnalyticsVersions": VersionsAnswerSchema,
    }.items():  # fmt: skip
        spec.components.schema(name, schema=schema)
    write_codes = ("400", "401", "403", "413", "422", "429", "503")
    spec.path("/api/ingest/jobs/register", operations={"post": _op(
        "Create or update job definitions", "RegisterResponse", "RegisterRequest",
        codes=write_codes, schemas={"422": "RegisterRejected"})})  # fmt: skip
    spec.path("/api/ingest/executions/batch", operations={"post": _op(
        "Store executions idempotently (per-item results)", "BatchResponse", "BatchRequest",
        codes=write_codes, schemas={"422": "BatchRejected"})})  # fmt: skip
    spec.path("/api/ingest/executions", operations={"post": _op(
        "Store one execution idempotently", "OneResponse", "ExecutionEvent",
        codes=write_codes)})  # fmt: skip
    spec.path("/api/jobs", operations={"get": _op(
        "List jobs", "JobPage", params=JobListQuerySchema)})  # fmt: skip
    job_codes = ("401", "403", "404", "429", "503")
    #: 404 too: an id the route cannot hold (a line break, a leading "/") matches no route.
    listing_codes = ("401", "403", "404", "422", "429", "503")
    spec.path("/api/jobs/{jobId}", parameters=[_path_param("jobId")], operations={"get": _op(
        "Get a job", "JobOne", codes=job_codes)})  # fmt: skip
    spec.path("/api/jobs/{jobId}/executions", parameters=[_path_param("jobId")],
              operations={"get": _op("A job's executions", "ExecutionPage",
                                     params=ExecutionListQuerySchema,
                                     codes=listing_codes)})  # fmt: skip
    spec.path("/api/jobs/{jobId}/triggers", parameters=[_path_param("jobId")],
              operations={"get": _op("A job's recent scheduled instants and their lifecycle",
                                     "TriggerList", params=TriggerQuerySchema,
                                     codes=listing_codes)})  # fmt: skip
    spec.path("/api/executions", operations={"get": _op(
        "Search executions", "ExecutionPage", params=ExecutionListQuerySchema)})  # fmt: skip
    spec.path("/api/executions/{execId}", parameters=[_path_param("execId")],
              operations={"get": _op("Get an execution", "ExecutionOne", codes=job_codes)})
    spec.path("/api/analytics/summary", operations={"get": _op(
        "Runs of the last 24 h and of today, success rate, average and p95 duration, jobs by "
        "health", "AnalyticsSummary", params=TzQuerySchema)})  # fmt: skip
    spec.path("/api/analytics/trends", operations={"get": _op(
        "Counts, success rate and p50/p95 per bucket of the user's time zone",
        "AnalyticsTrends", params=TrendsQuerySchema)})  # fmt: skip
    spec.path("/api/analytics/jobs", operations={"get": _op(
        "Per-job runs, success rate, failures, p50/p95/p99, last failure and health",
        "AnalyticsJobs", params=JobsQuerySchema)})  # fmt: skip
    spec.path("/api/analytics/versions", operations={"get": _op(
        "One job's runs, success rate, average and p95 duration per job or app version, "
        "newest first", "AnalyticsVersions", params=VersionsQuerySchema)})  # fmt: skip
    spec.components.schema("Retention", schema=RetentionAnswerSchema)
    spec.components.schema("RetentionUpdate", schema=RetentionUpdateSchema)
    spec.path("/api/settings/retention", operations={
        "get": _op("The tenant's retention: values in force, defaults, its own overrides "
                   "(admin scope)", "Retention", codes=("401", "403", "429", "503")),
        "put": _op("Change the tenant's retention: the fields given (null: back to the "
                   "default), keeping the others (admin scope)", "Retention", "RetentionUpdate",
                   codes=("400", "401", "403", "422", "429", "503")),
    })  # fmt: skip
    return spec.to_dict()
