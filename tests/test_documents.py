"""The RedisJSON layout of execution records: what stays named, what is packed, and that
records of the earlier layout (every field named) still read the same."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from chronos.backends.redis_stack import documents as docs
from chronos.backends.redis_stack.keys import Keys, enc
from chronos.models import Execution
from migrations_redis import schemas

FULL = Execution(
    tenant_id="t|1", exec_id="run:ü", job_id="{x}", status="failed", started_at=1_000,
    finished_at=5_000, duration_ms=4_000, exit_code=0, stdout="out ✓", stderr="",
    error_type="ValueError", error_message="bad «x»", error_stack="Traceback\n",
    code_snippet="def f(): ...", code_language="python", attempt=2, trigger_id="tr*",
    host="w\\1", app_version="1.2", job_version="a b", sdk_version="0.1",
    labels={"env": "prod"}, metadata={"n": [1, None, {"k": {}}]}, truncated=["stdout"],
    received_at=6_000,
)  # fmt: skip


def stored(execution: Execution) -> dict[str, Any]:
    """The document as Redis would hand it back (through JSON)."""
    return json.loads(docs.dumps(docs.execution_to_doc(execution)))


def indexed_paths() -> set[str]:
    return {part for part in schemas.executions_v2(Keys("p:")) if part.startswith("$.")}


def test_every_field_round_trips() -> None:
    assert docs.execution_from_doc(stored(FULL)) == FULL
    minimal = Execution("t", "e", "j", "running", 1)
    assert docs.execution_from_doc(stored(minimal)) == minimal


def test_indexed_fields_stay_named_and_the_small_ones_are_packed() -> None:
    doc = stored(FULL)
    for path in indexed_paths():
        parts = path[2:].split(".")
        value: Any = doc
        for part in parts:
            value = value[part]
        assert value is not None, path
    assert set(json.loads(doc["_x"])) == docs.EXEC_PACKED
    assert docs.EXEC_PACKED.isdisjoint(doc)
    assert doc["_k"] == {"t": enc("t|1"), "job": enc("{x}"), "v": enc("a b"),
                         "host": enc("w\\1"), "trig": enc("tr*"), "av": enc("1.2")}  # fmt: skip
    assert doc["code_snippet"] == FULL.code_snippet  # repeats run to run: stored once by Redis


def test_fields_without_a_value_are_left_out() -> None:
    doc = stored(Execution("t", "e", "j", "running", 1, stdout=""))
    assert set(doc) == {"tenant_id", "exec_id", "job_id", "status", "started_at", "stdout",
                        "_k", "_x"}  # fmt: skip
    assert json.loads(doc["_x"]) == {"received_at": 0}


def test_a_record_of_the_earlier_layout_reads_the_same() -> None:
    """Before ``_x``, every field was named, nulls and empty values included."""
    old = {f.name: getattr(FULL, f.name) for f in dataclasses.fields(Execution)}
    old["_k"] = stored(FULL)["_k"]
    assert docs.execution_from_doc(json.loads(json.dumps(old))) == FULL
    bare = Execution("t", "e", "j", "running", 1)
    old = {f.name: getattr(bare, f.name) for f in dataclasses.fields(Execution)}
    assert docs.execution_from_doc(json.loads(json.dumps(old))) == bare
