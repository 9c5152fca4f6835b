"""Tenant settings for ``admin``-scoped API keys: ``GET``/``PUT /api/settings/retention``.

Both answer ``{"success": true, "data": {...}}`` with the values in force (the tenant's own,
else the installation's default), the ``defaults`` and the tenant's own ``overrides`` (``null``
where it follows the default). ``PUT`` changes the fields it is given (``null``: back to the
default) and keeps the others.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from chronos.auth import principal, require_key
from chronos.errors import BadRequest
from chronos.extension import get_backend
from chronos.retention import BOUNDS, RetentionSettings, defaults_from_config

bp = Blueprint("settings", __name__, url_prefix="/api/settings")

DESCRIPTIONS = {
    "execution_days": "execution records are kept this many days after their run started "
    "(0: until the per-job cap removes them)",
    "max_executions_per_job": "records kept per job, its newest by start time (0: no cap)",
    "metrics_days": "hourly/daily metrics and daily duration sketches are kept this many days",
}


class WholeNumber(fields.Integer):
    """A JSON integer, strictly: not a string, a fraction or a boolean."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool):
            raise ValidationError("Not a valid integer.")
        return super()._deserialize(value, attr, data, **kwargs)


def _setting(name: str, **kwargs: Any) -> WholeNumber:
    low, high = BOUNDS[name]
    return WholeNumber(
        validate=validate.Range(low, high, error=f"must be from {low} to {high}"),
        metadata={"description": DESCRIPTIONS[name], "minimum": low, "maximum": high},
        **kwargs,
    )


class RetentionValuesSchema(Schema):
    execution_days = _setting("execution_days", data_key="executionDays")
    max_executions_per_job = _setting("max_executions_per_job", data_key="maxExecutionsPerJob")
    metrics_days = _setting("metrics_days", data_key="metricsDays")


class RetentionOverridesSchema(Schema):
    """The tenant's own values; ``null`` follows the default."""

    execution_days = _setting("execution_days", data_key="executionDays", allow_none=True)
    max_executions_per_job = _setting("max_executions_per_job", data_key="maxExecutionsPerJob",
                                      allow_none=True)  # fmt: skip
    metrics_days = _setting("metrics_days", data_key="metricsDays", allow_none=True)


class RetentionUpdateSchema(RetentionOverridesSchema):
    """``PUT`` body: the fields to change (``null``: back to the default); at least one.
    Unknown fields are refused, so that a misspelt setting is never silently ignored."""

    class Meta:
        unknown = RAISE

    @validates_schema
    def _something(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError("give at least one of executionDays, maxExecutionsPerJob, "
                                  "metricsDays")  # fmt: skip


class RetentionOutSchema(RetentionValuesSchema):
    defaults = fields.Nested(RetentionValuesSchema)
    overrides = fields.Nested(RetentionOverridesSchema)


class RetentionAnswerSchema(Schema):
    success = fields.Boolean()
    data = fields.Nested(RetentionOutSchema)


_out = RetentionOutSchema()
_update = RetentionUpdateSchema()


def _answer(own: RetentionSettings) -> Response:
    defaults = defaults_from_config(current_app.config)
    data = {**_values(own.over(defaults)), "defaults": _values(defaults), "overrides": _values(own)}
    return jsonify({"success": True, "data": _out.dump(data)})


def _values(settings: RetentionSettings) -> dict[str, int | None]:
    return {name: getattr(settings, name) for name in BOUNDS}


@bp.get("/retention")
@require_key("admin")
def get_retention() -> Response:
    return _answer(get_backend().get_retention(principal().tenant_id))


@bp.put("/retention")
@require_key("admin")
def put_retention() -> Response:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object such as {"executionDays": 7}')
    changes = _update.load(body)
    backend, tenant = get_backend(), principal().tenant_id
    backend.set_retention(tenant, backend.get_retention(tenant).changed(**changes))
    return _answer(backend.get_retention(tenant))
