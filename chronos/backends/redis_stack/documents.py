"""How jobs, executions, users and API keys are laid out as RedisJSON documents.

The user's values are stored under their own names, exactly as given. ``_k`` holds the
encoded copies that the search indices' TAG fields read (see ``keys.enc``).

An execution document names only what Redis itself reads or what repeats from run to run: the
ids, status and times, the text the executions index searches, and the handler's source
(RedisJSON stores equal strings once). The small fields nothing in Redis reads are packed into
one JSON string under ``_x``, and fields without a value are left out: RedisJSON spends tens
of bytes on every member of an object, ~600 bytes a record in all before this (see
docs/benchmarks.md). A document without ``_x`` was written before that (every field named) and
reads the same.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from chronos.backends.redis_stack.keys import enc
from chronos.models import ApiKey, Execution, Job, JobState, User

_JOB_FIELDS = {f.name for f in dataclasses.fields(Job)} - {"state"}
_EXEC_FIELDS = {f.name for f in dataclasses.fields(Execution)}
_STATE_FIELDS = {f.name for f in dataclasses.fields(JobState)}
_EXEC_ORDER = tuple(f.name for f in dataclasses.fields(Execution))
#: Execution fields packed into ``_x`` (see the module's docstring).
EXEC_PACKED = frozenset({"exit_code", "code_language", "attempt", "app_version", "sdk_version",
                         "labels", "metadata", "truncated", "received_at"})  # fmt: skip


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def job_to_doc(job: Job) -> dict[str, Any]:
    """The job's definition document; its ``state`` lives in a key of its own."""
    doc = dataclasses.asdict(job)
    del doc["state"]
    doc["_k"] = {
        "t": enc(job.tenant_id),
        "id": enc(job.id),
        "tags": [enc(tag) for tag in job.tags],
        "en": "1" if job.enabled else "0",
    }
    return doc


def job_from_doc(doc: dict[str, Any], state: dict[str, Any] | None) -> Job:
    fields = {k: v for k, v in doc.items() if k in _JOB_FIELDS}
    known = {k: v for k, v in (state or {}).items() if k in _STATE_FIELDS}
    return Job(**fields, state=JobState(**known))


def execution_to_doc(execution: Execution) -> dict[str, Any]:
    # Shallow on purpose (dataclasses.asdict deep-copies): the dict is encoded at once.
    doc: dict[str, Any] = {}
    packed: dict[str, Any] = {}
    for name in _EXEC_ORDER:
        value = getattr(execution, name)
        if value is not None and value != {} and value != []:
            (packed if name in EXEC_PACKED else doc)[name] = value
    doc["_x"] = dumps(packed)
    k: dict[str, Any] = {"t": enc(execution.tenant_id), "job": enc(execution.job_id)}
    if execution.job_version is not None:
        k["v"] = enc(execution.job_version)
    if execution.host is not None:
        k["host"] = enc(execution.host)
    if execution.trigger_id is not None:
        k["trig"] = enc(execution.trigger_id)
    if execution.app_version is not None:
        k["av"] = enc(execution.app_version)
    doc["_k"] = k
    return doc


def execution_from_doc(doc: dict[str, Any]) -> Execution:
    fields = dict(doc)
    fields.update(json.loads(doc.get("_x") or "{}"))
    return Execution(**{k: v for k, v in fields.items() if k in _EXEC_FIELDS})


def user_to_doc(user: User) -> dict[str, Any]:
    return dataclasses.asdict(user)


def user_from_doc(doc: dict[str, Any]) -> User:
    return User(**doc)


def api_key_to_doc(key: ApiKey) -> dict[str, Any]:
    doc = dataclasses.asdict(key)
    doc["scopes"] = list(key.scopes)
    return doc


def api_key_from_doc(doc: dict[str, Any]) -> ApiKey:
    doc = dict(doc)
    doc["scopes"] = tuple(doc.get("scopes") or ())
    return ApiKey(**doc)
