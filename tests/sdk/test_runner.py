"""ChronosRunner: run records, per-run capture, truncation, timeouts, overlap, track()."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chronos_sdk import ChronosClient, ChronosRunner, MockTransport, Request, Response, __version__

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Recorder:
    """A runner whose client posts to an in-memory transport; ``events()`` flushes and reads."""

    def __init__(self, **runner_kwargs: Any) -> None:
        self.sent: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        client = ChronosClient("k", "http://chronos.test", transport=MockTransport(self.handle),
                               flush_interval=0.01)
        runner_kwargs.setdefault("app_version", "1.2.3")
        self.runner = ChronosRunner(client=client, **runner_kwargs)

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.sent.extend(request.json()["executions"])
        return Response(200, body=b'{"success": true}')

    def events(self, job_id: str | None = None) -> list[dict[str, Any]]:
        assert self.runner.flush(5)
        with self.lock:
            return [e for e in self.sent if job_id is None or e["jobId"] == job_id]

    def terminal(self, job_id: str) -> dict[str, Any]:
        (event,) = [e for e in self.events(job_id) if e["status"] != "running"]
        return event


@pytest.fixture
def rec() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.runner.close()


@pytest.fixture
def make_rec() -> Iterator[Callable[..., Recorder]]:
    made: list[Recorder] = []

    def make(**kwargs: Any) -> Recorder:
        made.append(Recorder(**kwargs))
        return made[-1]

    yield make
    for recorder in made:
        recorder.runner.close()


class ReportError(Exception):
    pass


def test_success_records_running_then_success_with_the_same_exec_id(rec: Recorder) -> None:
    def nightly() -> int:
        print("hello from the job")
        print("a warning", file=sys.stderr)
        return 42

    rec.runner.register("nightly", nightly, version="v7", labels={"team": "data"})
    result = rec.runner.run_now("nightly", trigger_id="trig-1", attempt=2)

    assert result.ok and result.value == 42 and result.exc is None
    running, done = rec.events("nightly")
    assert running["status"] == "running" and done["status"] == "success"
    assert running["execId"] == done["execId"] == result.exec_id
    assert ISO.match(done["startedAt"]) and ISO.match(done["finishedAt"])
    assert done["startedAt"] == running["startedAt"]
    assert isinstance(done["durationMs"], int) and done["exitCode"] == 0
    assert done["stdout"] == "hello from the job\n"
    assert done["stderr"] == "a warning\n"
    assert done["attempt"] == 2 and done["triggerId"] == "trig-1"
    assert done["jobVersion"] == "v7" and done["labels"] == {"team": "data"}
    assert done["appVersion"] == "1.2.3" and done["sdkVersion"] == __version__
    assert done["host"]
    assert done["codeLanguage"] == "python" and "def nightly" in done["codeSnippet"]
    assert "errorType" not in done and "metadata" not in done


def test_failure_is_recorded_and_returned_never_raised(rec: Recorder) -> None:
    def broken() -> None:
        print("step 1 done")
        print("about to fail", file=sys.stderr)
        raise ReportError("the report is broken")

    rec.runner.register("broken", broken)
    result = rec.runner.run_now("broken")

    assert result.status == "failed" and isinstance(result.exc, ReportError)
    done = rec.terminal("broken")
    assert done["exitCode"] == 1
    assert done["errorType"].endswith("test_runner.ReportError")
    assert done["errorMessage"] == "the report is broken"
    assert "Traceback" in done["errorStack"] and "ReportError" in done["errorStack"]
    assert done["stdout"] == "step 1 done\n"  # both streams kept on failure
    assert done["stderr"] == "about to fail\n"


@pytest.mark.parametrize(("code", "status", "exit_code"),
                         [(3, "failed", 3), (0, "success", 0), (None, "success", 0),
                          ("bad input", "failed", 1)])
def test_system_exit_sets_the_exit_code(rec: Recorder, code, status, exit_code) -> None:
    def exits() -> None:
        sys.exit(code)

    rec.runner.register("exits", exits)
    result = rec.runner.run_now("exits")
    assert result.status == status and result.exit_code == exit_code
    assert rec.terminal("exits")["exitCode"] == exit_code


def test_builtin_error_type_is_the_bare_name(rec: Recorder) -> None:
    rec.runner.register("zero", lambda: 1 / 0)
    rec.runner.run_now("zero")
    assert rec.terminal("zero")["errorType"] == "ZeroDivisionError"


def test_concurrent_threaded_runs_capture_only_their_own_output(rec: Recorder) -> None:
    barrier = threading.Barrier(8)

    def make_handler(i: int) -> Callable[[], None]:
        def handler() -> None:
            barrier.wait(5)
            for n in range(20):
                print(f"out-{i}-{n}")
                print(f"err-{i}-{n}", file=sys.stderr)
                time.sleep(0.001)
            if i % 2:
                raise RuntimeError(f"odd {i}")

        return handler

    for i in range(8):
        rec.runner.register(f"t{i}", make_handler(i))
    results: dict[int, Any] = {}

    def run(i: int) -> None:
        results[i] = rec.runner.run_now(f"t{i}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    for i in range(8):
        assert results[i].status == ("failed" if i % 2 else "success")
        done = rec.terminal(f"t{i}")
        assert done["stdout"].splitlines() == [f"out-{i}-{n}" for n in range(20)]
        assert done["stderr"].splitlines() == [f"err-{i}-{n}" for n in range(20)]


def test_concurrent_async_runs_capture_only_their_own_output(rec: Recorder) -> None:
    def make_handler(i: int) -> Callable[[], Any]:
        async def handler() -> int:
            for n in range(10):
                print(f"out-{i}-{n}")
                print(f"err-{i}-{n}", file=sys.stderr)
                await asyncio.sleep(0.001)
            if i == 5:
                raise ValueError("five")
            return i

        return handler

    for i in range(8):
        rec.runner.register(f"a{i}", make_handler(i))

    async def main() -> list[Any]:
        return await asyncio.gather(*(rec.runner.arun_now(f"a{i}") for i in range(8)))

    results = asyncio.run(main())
    assert [r.value for r in results] == [0, 1, 2, 3, 4, None, 6, 7]
    assert results[5].status == "failed"
    for i in range(8):
        done = rec.terminal(f"a{i}")
        assert done["stdout"].splitlines() == [f"out-{i}-{n}" for n in range(10)]
        assert done["stderr"].splitlines() == [f"err-{i}-{n}" for n in range(10)]


def test_output_truncation_keeps_head_and_tail(make_rec) -> None:
    rec = make_rec(max_output_bytes=1000)

    def chatty() -> None:
        print("FIRST LINE")
        for n in range(5000):
            print(f"line {n} ünïcödé")
        print("LAST LINE")

    rec.runner.register("chatty", chatty)
    rec.runner.run_now("chatty")
    done = rec.terminal("chatty")
    out = done["stdout"]
    assert out.startswith("FIRST LINE\n") and out.endswith("LAST LINE\n")
    assert len(out.encode()) <= 1000
    match = re.search(r"\n…\[truncated (\d+) bytes\]…\n", out)
    assert match
    full = "FIRST LINE\n" + "".join(f"line {n} ünïcödé\n" for n in range(5000)) + "LAST LINE\n"
    head, tail = out[: match.start()], out[match.end() :]
    assert full.startswith(head) and full.endswith(tail)
    assert int(match.group(1)) == len(full.encode()) - len(head.encode()) - len(tail.encode())
    assert done["metadata"] == {"truncated": ["stdout"]}
    assert "stderr" in done and done["stderr"] == ""


def test_sync_timeout_is_recorded_and_the_thread_abandoned(rec: Recorder, caplog) -> None:
    release = threading.Event()
    finished = threading.Event()

    def slow() -> None:
        print("started")
        release.wait(10)
        finished.set()

    rec.runner.register("slow", slow, timeout=0.2)
    t0 = time.monotonic()
    result = rec.runner.run_now("slow")
    assert time.monotonic() - t0 < 1
    release.set()
    finished.wait(5)

    assert result.status == "timeout"
    done = rec.terminal("slow")
    assert done["status"] == "timeout" and done["errorType"] == "TimeoutError"
    assert done["stdout"] == "started\n"
    assert "abandoned" in caplog.text


def test_async_timeout_cancels_the_handler(rec: Recorder) -> None:
    cancelled = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    rec.runner.register("aslow", slow, timeout=0.2)
    result = rec.runner.run_now("aslow")  # no loop running here: asyncio.run
    assert result.status == "timeout" and cancelled == [True]
    assert rec.terminal("aslow")["status"] == "timeout"


def test_a_handler_raising_timeout_error_is_a_failure_not_a_timeout(rec: Recorder) -> None:
    def raises() -> None:
        raise TimeoutError("upstream timed out")

    rec.runner.register("raises", raises, timeout=5)
    assert rec.runner.run_now("raises").status == "failed"


def test_overlap_skip_records_a_cancelled_run(rec: Recorder) -> None:
    started, release = threading.Event(), threading.Event()

    def long_job() -> None:
        started.set()
        release.wait(5)

    rec.runner.register("long", long_job, overlap="skip")
    first: list[Any] = []
    worker = threading.Thread(target=lambda: first.append(rec.runner.run_now("long")))
    worker.start()
    assert started.wait(5)
    skipped = rec.runner.run_now("long")
    release.set()
    worker.join(5)

    assert skipped.status == "cancelled" and first[0].status == "success"
    events = rec.events("long")
    cancelled = [e for e in events if e["execId"] == skipped.exec_id]
    assert len(cancelled) == 1  # no running event for a run that never started
    assert cancelled[0]["status"] == "cancelled"
    assert cancelled[0]["errorMessage"] == "skipped: previous run still running"
    assert rec.runner.run_now("long").status == "success"  # the slot is free again


def test_track_records_success_and_failure_and_reraises(rec: Recorder) -> None:
    with rec.runner.track("manual", trigger_id="t-9") as run:
        print("tracked output")
    error = ValueError("boom")
    with pytest.raises(ValueError) as info, rec.runner.track("manual") as failing:
        raise error
    assert info.value is error

    events = rec.events("manual")
    ok = [e for e in events if e["execId"] == run.exec_id]
    bad = [e for e in events if e["execId"] == failing.exec_id]
    assert [e["status"] for e in ok] == ["running", "success"]
    assert ok[1]["stdout"] == "tracked output\n" and ok[1]["triggerId"] == "t-9"
    assert [e["status"] for e in bad] == ["running", "failed"]
    assert bad[1]["errorMessage"] == "boom" and bad[1]["exitCode"] == 1
    assert run.result is not None and run.result.ok


def test_atrack_in_async_code(rec: Recorder) -> None:
    async def main() -> None:
        async with rec.runner.atrack("amanual"):
            print("async tracked")
        with pytest.raises(KeyError):
            async with rec.runner.atrack("amanual"):
                raise KeyError("k")

    asyncio.run(main())
    statuses = [e["status"] for e in rec.events("amanual")]
    assert statuses.count("success") == 1 and statuses.count("failed") == 1


def test_code_snippet_can_be_turned_off(make_rec) -> None:
    rec = make_rec(capture_code=False, capture_console=False)

    def quiet() -> None:
        print("not captured")

    rec.runner.register("quiet", quiet)
    rec.runner.run_now("quiet")
    done = rec.terminal("quiet")
    assert "codeSnippet" not in done and "codeLanguage" not in done
    assert "stdout" not in done and "stderr" not in done


def test_async_handler_inside_a_running_loop_needs_arun_now(rec: Recorder) -> None:
    async def handler() -> str:
        return "ok"

    async def sync_handler_from_async() -> Any:
        return await rec.runner.arun_now("sync")

    rec.runner.register("async", handler)
    rec.runner.register("sync", lambda: "from a thread")

    async def main() -> None:
        with pytest.raises(RuntimeError, match="arun_now"):
            rec.runner.run_now("async")
        assert (await rec.runner.arun_now("async")).value == "ok"
        assert (await sync_handler_from_async()).value == "from a thread"

    asyncio.run(main())


def test_unknown_job_is_a_clear_error(rec: Recorder) -> None:
    with pytest.raises(KeyError, match="no handler registered for job 'nope'"):
        rec.runner.run_now("nope")


def test_decorator_declares_job_definitions_for_sync_jobs() -> None:
    bodies: list[Any] = []

    def handler(request: Request) -> Response:
        bodies.append(request.json())
        return Response(200, body=json.dumps({"success": True, "results": []}).encode())

    client = ChronosClient("k", "http://chronos.test", transport=MockTransport(handler))
    runner = ChronosRunner(client=client, app_version="1")

    @runner.job("nightly", schedule="0 3 * * *", timezone="Europe/Paris", tags=["etl"],
                timeout=90.5, description="the nightly load")
    def nightly() -> None:
        pass

    @runner.job("helper", register=False)
    def helper() -> None:
        pass

    assert runner.sync_jobs() == {"success": True, "results": []}
    assert bodies == [{"jobs": [{
        "id": "nightly", "description": "the nightly load", "schedule": "0 3 * * *",
        "runMode": "recurring", "timezone": "Europe/Paris", "tags": ["etl"],
        "maxRuntimeSeconds": 91,
    }]}]
    assert runner.run_now("helper").ok  # registered as a handler all the same
    runner.close()


def test_importing_the_sdk_stays_light() -> None:
    code = (
        "import chronos_sdk, chronos_sdk.wrapper, sys; "
        "bad = {'flask','redis','apscheduler','marshmallow','werkzeug'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_sync_handler_timing_out_under_arun_now(rec: Recorder) -> None:
    release, finished = threading.Event(), threading.Event()

    def slow() -> None:
        release.wait(5)
        finished.set()

    rec.runner.register("slow-in-async", slow, timeout=0.1)
    result = asyncio.run(rec.runner.arun_now("slow-in-async"))
    release.set()  # the abandoned thread ends after its loop is closed, quietly
    assert finished.wait(5)
    assert result.status == "timeout"


def test_keyboard_interrupt_is_recorded_then_propagates(rec: Recorder) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    rec.runner.register("ctrl-c", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rec.runner.run_now("ctrl-c")
    assert rec.terminal("ctrl-c")["status"] == "cancelled"


def test_end_to_end_over_http(ingest) -> None:
    runner = ChronosRunner("test-key", ingest.url, flush_interval=0.05, app_version="9")

    @runner.job("e2e", schedule="*/5 * * * *")
    def e2e() -> None:
        print("over the wire")

    assert runner.sync_jobs()["success"] is True
    assert runner.run_now("e2e").ok
    runner.close()
    running, done = ingest.accepted()
    assert (running["status"], done["status"]) == ("running", "success")
    assert done["stdout"] == "over the wire\n" and done["appVersion"] == "9"
    assert all(r.headers["x-api-key"] == "test-key" for r in ingest.requests)
