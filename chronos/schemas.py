"""Marshmallow schemas of the JSON API: the wire format, in camelCase, and its validation.

Every timestamp field accepts ISO 8601 (with an offset or ``Z``; naive means UTC) or epoch
milliseconds, and every answer gives timestamps as ISO 8601 UTC with milliseconds and ``Z``.
Unknown fields are ignored, so clients of the earlier system keep working.
"""

from __future__ import annotations

import functools
import json
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates

from chronos import cron
from chronos.health import HEALTHS
from chronos.models import ALL_STATUSES, Execution, Trigger
from chronos.timeutil import parse_timestamp, to_iso

ID = validate.Length(min=1, max=256)
SHORT = validate.Length(max=256)


class Timestamp(fields.Field):
    """Epoch ms inside; ISO 8601 or epoch ms on input; ISO 8601 UTC ``Z`` on output."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        try:
            return parse_timestamp(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return to_iso(value)


def shape_problem(value: Any, max_depth: int, max_values: int) -> str | None:
    """``"depth"`` if JSON ``value`` nests deeper than ``max_depth``, ``"size"`` if it holds
    more than ``max_values`` values in all, else ``None``. Iterative and stopping at the first
    excess, so a huge or deep value costs little."""
    stack, count = [(value, 0)], 0
    while stack:
        item, depth = stack.pop()
        children = list(item.values()) if isinstance(item, dict) else item
        if not isinstance(children, list):
            continue
        count += len(children)
        if count > max_values:
            return "size"
        if depth >= max_depth:
            return "depth"
        stack.extend((child, depth + 1) for child in children)
    return None


class BoundedDict(fields.Dict):
    """A JSON object of at most ``max_bytes`` when encoded, nested at most ``MAX_DEPTH`` deep
    (storage refuses deeper documents, and encoding them could exhaust Python's stack)."""

    MAX_DEPTH = 32

    def __init__(self, max_bytes: int = 16 * 1024, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_bytes = max_bytes

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        # The shape first, cheaply: every value takes at least 2 bytes of JSON ("0,").
        problem = shape_problem(value, self.MAX_DEPTH, self.max_bytes // 2)
        if problem == "depth":
            raise ValidationError(f"must nest at most {self.MAX_DEPTH} levels deep")
        too_big = f"must encode to at most {self.max_bytes} bytes of JSON"
        if problem == "size":
            raise ValidationError(too_big)
        result = super()._deserialize(value, attr, data, **kwargs)
        if len(json.dumps(result, separators=(",", ":"))) > self.max_bytes:
            raise ValidationError(too_big)
        return result


def check_cron(expression: str) -> str:
    """The expression if it is a valid 5-field cron (or 6 with seconds first); the rules
    live in ``chronos.cron.validate``."""
    try:
        cron.validate(expression)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    return expression


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{name!r} is not an IANA time zone (e.g. 'Europe/Paris')") from None
    return name


class JobDefSchema(Schema):
    """A job definition sent by an app (``POST /api/ingest/jobs/register``)."""

    class Meta:
        unknown = EXCLUDE

    id = fields.String(required=True, validate=ID)
    name = fields.String(validate=SHORT)
    description = fields.String(validate=validate.Length(max=4096))
    schedule = fields.String(validate=validate.Length(max=256), allow_none=True)
    run_mode = fields.String(data_key="runMode", validate=validate.OneOf(["recurring", "once"]))
    run_at = Timestamp(data_key="runAt", allow_none=True)
    timezone = fields.String(validate=validate.Length(max=64))
    enabled = fields.Boolean()
    tags = fields.List(fields.String(validate=validate.Length(min=1, max=64)),
                       validate=validate.Length(max=50))  # fmt: skip
    version = fields.String(validate=SHORT, allow_none=True)
    grace_seconds = fields.Integer(data_key="graceSeconds", allow_none=True,
                                   validate=validate.Range(min=0, max=7 * 86400))  # fmt: skip
    max_runtime_seconds = fields.Integer(
        data_key="maxRuntimeSeconds",
        allow_none=True,
        validate=validate.Range(min=1, max=30 * 86400),
    )
    org_id = fields.String(data_key="orgId", validate=SHORT, allow_none=True)
    app_id = fields.String(data_key="appId", validate=SHORT, allow_none=True)
    metadata = BoundedDict(keys=fields.String())

    @validates("schedule")
    def _schedule(self, value: str | None, **kwargs: Any) -> None:
        if value:
            check_cron(value)

    @validates("timezone")
    def _timezone(self, value: str, **kwargs: Any) -> None:
        check_timezone(value)


class ExecutionEventSchema(Schema):
    """One execution's telemetry (``POST /api/ingest/executions[/batch]``)."""

    class Meta:
        unknown = EXCLUDE

    exec_id = fields.String(data_key="execId", validate=ID)
    job_id = fields.String(data_key="jobId", required=True, validate=ID)
    #: ``missed`` is decided by the server, never reported by apps.
    status = fields.String(
        required=True, validate=validate.OneOf(sorted(ALL_STATUSES - {"missed"}))
    )
    started_at = Timestamp(data_key="startedAt", required=True)
    finished_at = Timestamp(data_key="finishedAt", allow_none=True)
    duration_ms = fields.Integer(data_key="durationMs", allow_none=True,
                                 validate=validate.Range(min=0, max=400 * 86_400_000))  # fmt: skip
    exit_code = fields.Integer(data_key="exitCode", allow_none=True,
                               validate=validate.Range(min=-2**31, max=2**31 - 1))  # fmt: skip
    stdout = fields.String(allow_none=True)
    stderr = fields.String(allow_none=True)
    error_type = fields.String(data_key="errorType", allow_none=True, validate=SHORT)
    error_message = fields.String(data_key="errorMessage", allow_none=True)
    error_stack = fields.String(data_key="errorStack", allow_none=True)
    code_snippet = fields.String(data_key="codeSnippet", allow_none=True)
    code_language = fields.String(data_key="codeLanguage", allow_none=True,
                                  validate=validate.Length(max=32))  # fmt: skip
    attempt = fields.Integer(allow_none=True, validate=validate.Range(min=0, max=10_000))
    trigger_id = fields.String(data_key="triggerId", allow_none=True, validate=ID)
    host = fields.String(allow_none=True, validate=SHORT)
    app_version = fields.String(data_key="appVersion", allow_none=True, validate=SHORT)
    job_version = fields.String(data_key="jobVersion", allow_none=True, validate=SHORT)
    sdk_version = fields.String(data_key="sdkVersion", allow_none=True, validate=SHORT)
    labels = BoundedDict(keys=fields.String(validate=validate.Length(min=1, max=64)),
                         values=fields.String(validate=validate.Length(max=256)),
                         max_bytes=8 * 1024)  # fmt: skip
    metadata = BoundedDict(keys=fields.String())


@functools.cache
def _wire_names() -> dict[str, str]:
    return {name: f.data_key or name for name, f in ExecutionEventSchema().fields.items()}


class WireFieldNames(fields.List):
    """Names of ``ExecutionEventSchema`` fields, answered as their wire (camelCase) names."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        wire = _wire_names()
        return super()._serialize([wire.get(n, n) for n in value or ()], attr, obj, **kwargs)


class ExecutionOutSchema(ExecutionEventSchema):
    """An execution as the API answers it."""

    truncated = WireFieldNames(fields.String())
    received_at = Timestamp(data_key="receivedAt")


class JobStateSchema(Schema):
    last_exec_id = fields.String(data_key="lastExecId", allow_none=True)
    last_status = fields.String(data_key="lastStatus", allow_none=True)
    last_started_at = Timestamp(data_key="lastStartedAt", allow_none=True)
    last_finished_at = Timestamp(data_key="lastFinishedAt", allow_none=True)
    last_duration_ms = fields.Integer(data_key="lastDurationMs", allow_none=True)
    last_success_at = Timestamp(data_key="lastSuccessAt", allow_none=True)
    last_failure_at = Timestamp(data_key="lastFailureAt", allow_none=True)
    last_trigger_id = fields.String(data_key="lastTriggerId", allow_none=True)
    last_fired_at = Timestamp(data_key="lastFiredAt", allow_none=True)
    last_trigger_started_at = Timestamp(data_key="lastTriggerStartedAt", allow_none=True)


class TriggerOutSchema(Schema):
    """One scheduled instant of a job and where it is in its lifecycle."""

    trigger_id = fields.String(data_key="triggerId")
    job_id = fields.String(data_key="jobId")
    scheduled_for = Timestamp(data_key="scheduledFor")
    fired_at = Timestamp(data_key="firedAt")
    deadline = Timestamp()
    status = fields.String()
    runner = fields.String(allow_none=True)
    delivered_at = Timestamp(data_key="deliveredAt", allow_none=True)
    deliveries = fields.Integer()


class TriggerQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))


def lifecycle(trigger: Trigger, run: Execution | None) -> str:
    """``scheduled``, ``delivered``, ``started``, ``finished``, ``missed`` or ``timeout``."""
    if run is not None:
        if run.status == "missed":
            return "missed"
        if run.status == "timeout":
            return "timeout"
        return "finished" if run.terminal else "started"
    return trigger.status


class JobOutSchema(JobDefSchema):
    """A job as the API answers it (the API adds ``health``)."""

    created_at = Timestamp(data_key="createdAt")
    updated_at = Timestamp(data_key="updatedAt")
    state = fields.Nested(JobStateSchema)


class PageQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=1000))
    cursor = fields.String(load_default=None, validate=validate.Length(max=512))


class JobListQuerySchema(PageQuerySchema):
    health = fields.String(load_default=None, validate=validate.OneOf(HEALTHS))
    enabled = fields.Boolean(load_default=None)
    tag = fields.String(load_default=None, validate=validate.Length(min=1, max=64))
    q = fields.String(load_default=None, validate=validate.Length(max=256))


class StatusList(fields.String):
    """One status or several separated by commas (``failed,timeout,missed``): a tuple."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        statuses = tuple(dict.fromkeys(part.strip() for part in text.split(",")))
        unknown = [s for s in statuses if s not in ALL_STATUSES]
        if unknown or not statuses:
            raise ValidationError(f"each status must be one of {', '.join(sorted(ALL_STATUSES))}")
        return statuses


class ExecutionListQuerySchema(PageQuerySchema):
    job_id = fields.String(data_key="jobId", load_default=None, validate=ID)
    status = StatusList(load_default=(), metadata={
        "description": "one status, or several separated by commas: any of them"})  # fmt: skip
    q = fields.String(load_default=None, validate=validate.Length(max=256))
    since = Timestamp(data_key="from", load_default=None)
    until = Timestamp(data_key="to", load_default=None)
    # Non-empty: an empty filter value means nothing a TAG index can match.
    version = fields.String(load_default=None, validate=ID)
    host = fields.String(load_default=None, validate=ID)
