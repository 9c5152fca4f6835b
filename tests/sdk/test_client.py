"""ChronosClient against a real loopback HTTP server: batching, retries, drops, splits, spool."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from chronos_sdk import ChronosClient, MockTransport, Request, Response

from .conftest import Answer, FakeIngest


def event(job: str = "job-a", **extra: object) -> dict[str, object]:
    return {"jobId": job, "status": "running", "startedAt": "2026-11-28T12:00:00.123Z", **extra}


def exec_ids(events: list[dict]) -> list[str]:
    return [e["execId"] for e in events]


def test_batches_by_size(ingest: FakeIngest, make_client) -> None:
    client = make_client(batch_size=5, flush_interval=30)
    for i in range(12):
        client.send(event(n=i))
    ingest.wait_for(lambda: len(ingest.batches()) == 2)
    assert [len(b.body["executions"]) for b in ingest.batches()] == [5, 5]

    assert client.flush(5)
    batches = ingest.batches()
    assert [len(b.body["executions"]) for b in batches] == [5, 5, 2]
    assert [e["n"] for e in ingest.accepted()] == list(range(12))
    first = batches[0]
    assert first.path == "/api/ingest/executions/batch"
    assert first.headers["x-api-key"] == "test-key"
    assert first.headers["content-type"] == "application/json"
    assert client.delivered == 12


def test_batches_by_interval(ingest: FakeIngest, make_client) -> None:
    client = make_client(batch_size=100, flush_interval=0.3)
    sent_at = time.monotonic()
    for _ in range(3):
        client.send(event())
    ingest.wait_for(lambda: len(ingest.batches()) == 1)
    waited = ingest.batches()[0].at - sent_at
    assert 0.25 <= waited < 2
    assert len(ingest.batches()[0].body["executions"]) == 3


def test_an_event_after_an_idle_spell_still_leaves_by_interval(ingest, make_client) -> None:
    # The delivery thread waits without a timeout on an empty queue; the next event must wake it.
    client = make_client(batch_size=100, flush_interval=0.05)
    client.send(event(n=1))
    ingest.wait_for(lambda: len(ingest.batches()) == 1)
    time.sleep(0.1)  # the thread is idle again
    client.send(event(n=2))
    ingest.wait_for(lambda: len(ingest.batches()) == 2, timeout=2)


def test_exec_id_set_once_and_reused_after_503_retry_after(ingest: FakeIngest, make_client):
    ingest.answer(503, {"success": False, "error": "busy"}, Retry_After="1")
    client = make_client()
    mine = uuid.uuid4().hex
    client.send(event())
    client.send(event(execId=mine))
    assert client.flush(5)

    first, second = ingest.batches()
    assert first.status == 503 and second.status == 200
    ids = exec_ids(first.body["executions"])
    assert ids == exec_ids(second.body["executions"])
    assert ids[1] == mine and len(ids[0]) == 32
    assert second.at - first.at >= 0.95  # Retry-After: 1 is honoured


def test_500_is_retried_with_backoff(ingest: FakeIngest, make_client) -> None:
    ingest.answer(500)
    ingest.answer(502)
    client = make_client()
    client.send(event())
    assert client.flush(5)
    statuses = [b.status for b in ingest.batches()]
    assert statuses == [500, 502, 200]
    assert len({tuple(exec_ids(b.body["executions"])) for b in ingest.batches()}) == 1


def test_network_errors_are_retried_until_the_server_is_back(ingest: FakeIngest, make_client):
    ingest.down()
    client = make_client()
    client.send(event())
    assert not client.flush(0.3)
    ingest.up()
    assert client.flush(5)
    assert len(ingest.accepted()) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_client_errors_drop_the_batch_after_one_try(ingest, make_client, caplog, status) -> None:
    ingest.answer(status, {"success": False, "error": "nope", "code": "bad"})
    client = make_client()
    client.send(event())
    client.send(event())
    with caplog.at_level(logging.WARNING, logger="chronos_sdk"):
        assert client.flush(5)
    assert [b.status for b in ingest.batches()] == [status]
    assert client.dropped == 2
    assert f"HTTP {status} [bad]: nope" in caplog.text

    client.send(event())  # the client keeps working
    assert client.flush(5)
    assert len(ingest.accepted()) == 1


def test_413_splits_the_batch_in_halves(ingest: FakeIngest, make_client) -> None:
    def too_large(path: str, body: dict) -> Answer | None:
        events = body["executions"]
        if len(events) > 2 or any(e.get("huge") for e in events):
            return Answer(413, {"success": False, "error": "too large"})
        return None

    ingest.rule = too_large
    client = make_client(batch_size=8, flush_interval=30)
    for i in range(7):
        client.send(event(n=i, huge=(i == 4) or None))
    assert client.flush(5)

    delivered = [e["n"] for e in ingest.accepted()]
    assert delivered == [0, 1, 2, 3, 5, 6]  # order kept, the oversized event dropped
    assert client.dropped == 1
    sizes = [len(b.body["executions"]) for b in ingest.batches()]
    assert sizes[0] == 7 and max(sizes[1:]) <= 4


def test_rejected_items_are_logged_and_never_retried(ingest, make_client, caplog) -> None:
    rejected = [{"index": 1, "errors": {"status": ["not one of the statuses"]}}]
    ingest.answer(200, {"success": True, "accepted": 1, "duplicates": 0, "rejected": rejected})
    client = make_client()
    client.send(event())
    client.send(event(status="bogus"))
    with caplog.at_level(logging.WARNING, logger="chronos_sdk"):
        assert client.flush(5)
    assert len(ingest.batches()) == 1
    assert client.rejected == 1 and client.delivered == 1
    assert "not one of the statuses" in caplog.text


def test_spool_keeps_events_across_an_outage_and_a_restart(ingest, make_client, tmp_path):
    spool = tmp_path / "spool"
    ingest.down()
    first = make_client(spool_dir=spool, batch_size=2)
    for i in range(5):
        first.send(event(n=i))
    assert not first.flush(0.5)
    assert list(spool.glob("*.json"))  # failed batches are on disk while the server is down
    first.close(timeout=0.2)
    assert len(list(spool.glob("*.json"))) == 3  # everything, in batches of 2
    assert not list(spool.glob(".*"))  # no temporary files left behind

    ingest.up()
    second = make_client(spool_dir=spool)  # a new process: resends what it finds
    assert second.flush(5)
    delivered = ingest.accepted()
    assert sorted(e["n"] for e in delivered) == [0, 1, 2, 3, 4]
    assert ingest.seen.most_common(1)[0][1] == 1  # each execId exactly once
    assert list(spool.iterdir()) == []


def test_spool_file_is_deleted_only_after_a_2xx(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    seen_files: list[int] = []
    calls = iter([Response(500), Response(503), Response(200, body=b'{"accepted": 1}')])

    def handler(request: Request) -> Response:
        seen_files.append(len(list(spool.glob("*.json"))))
        return next(calls)

    client = ChronosClient("k", "http://chronos.test", transport=MockTransport(handler),
                           spool_dir=spool, backoff_base=0.01, backoff_cap=0.02)
    client.send(event())
    assert client.flush(5)
    client.close()
    assert seen_files == [0, 1, 1]  # written after the first failure, kept until the 2xx
    assert list(spool.iterdir()) == []


def test_unreadable_spool_file_is_set_aside(ingest, make_client, tmp_path, caplog) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "00000000000000000001-1-deadbeef.json").write_text("{not json")
    with caplog.at_level(logging.ERROR, logger="chronos_sdk"):
        client = make_client(spool_dir=spool)
        assert client.flush(5)
    assert [p.suffix for p in spool.iterdir()] == [".bad"]
    assert "unreadable spool file" in caplog.text


def test_full_queue_drops_the_oldest_and_counts(ingest: FakeIngest, make_client) -> None:
    client = make_client(max_queue=5, flush_interval=30)
    for i in range(8):
        client.send(event(n=i))
    assert client.dropped == 3
    assert client.flush(5)
    assert [e["n"] for e in ingest.accepted()] == [3, 4, 5, 6, 7]


def test_full_queue_spills_to_the_spool_instead(ingest, make_client, tmp_path) -> None:
    client = make_client(max_queue=4, batch_size=2, flush_interval=30, spool_dir=tmp_path)
    ingest.down()  # so nothing drains while we fill the queue
    for i in range(9):
        client.send(event(n=i))
    ingest.up()
    assert client.flush(5)
    assert client.dropped == 0
    assert sorted(e["n"] for e in ingest.accepted()) == list(range(9))
    assert list(tmp_path.glob("*.json")) == []


def test_close_flushes_and_is_idempotent(ingest: FakeIngest, make_client) -> None:
    client = make_client(flush_interval=30)
    for _ in range(3):
        client.send(event())
    client.close()
    assert len(ingest.accepted()) == 3
    client.close()
    client.send(event())  # after close: counted, never raised
    assert client.dropped == 1
    assert client.flush(0.1) is True


def test_close_without_spool_counts_what_it_could_not_deliver(ingest, make_client, caplog):
    ingest.down()
    client = make_client()
    client.send(event())
    with caplog.at_level(logging.WARNING, logger="chronos_sdk"):
        client.close(timeout=0.2)
    assert client.dropped == 1
    assert "not delivered before close" in caplog.text


@pytest.mark.parametrize("endpoint", ["not a url", "ftp://example.com", "http://", "http://[::1"])
def test_garbage_endpoint_never_raises(endpoint: str) -> None:
    client = ChronosClient("k", endpoint)
    client.send(event())
    assert client.register_jobs([{"id": "j"}]) is None
    assert client.flush(0.1) is True
    client.close()


def test_a_raising_transport_never_reaches_the_caller(caplog) -> None:
    attempts = []

    def handler(request: Request) -> Response:
        attempts.append(request)
        if len(attempts) < 3:
            raise RuntimeError("transport bug")
        return Response(200, body=b'{"success": true, "accepted": 1}')

    client = ChronosClient("k", "http://chronos.test", transport=MockTransport(handler),
                           backoff_base=0.01, backoff_cap=0.02)
    with caplog.at_level(logging.WARNING, logger="chronos_sdk"):
        assert client.register_jobs([{"id": "j"}]) is None
        client.send(event(when=datetime.now(UTC), obj=object()))  # not JSON: sent as str
        assert client.flush(5)
        client.close()
    assert len(attempts) == 3
    assert "transport bug" in caplog.text
    (sent,) = attempts[-1].json()["executions"]
    assert sent["when"].endswith("Z") and sent["obj"].startswith("<object")
    assert client.delivered == 1


def test_register_jobs_sends_now_and_returns_the_answer(ingest, make_client) -> None:
    client = make_client()
    answer = client.register_jobs([{"id": "nightly", "schedule": "0 3 * * *", "name": None}])
    assert answer == {"success": True, "results": [{"id": "nightly", "created": True}]}
    (request,) = ingest.requests
    assert request.path == "/api/ingest/jobs/register"
    assert request.body == {"jobs": [{"id": "nightly", "schedule": "0 3 * * *"}]}
    assert request.headers["x-api-key"] == "test-key"


def test_register_jobs_failure_returns_none(ingest, make_client) -> None:
    ingest.answer(401, {"success": False, "error": "invalid API key"})
    assert make_client().register_jobs([{"id": "x"}]) is None
    ingest.down()
    assert make_client().register_jobs([{"id": "x"}]) is None


def test_settings_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("CHRONOS_API_KEY", "from-env")
    monkeypatch.setenv("CHRONOS_ENDPOINT", "http://chronos.example:8080/")
    client = ChronosClient()
    assert client.api_key == "from-env"
    assert client.endpoint == "http://chronos.example:8080"
    client.close()
