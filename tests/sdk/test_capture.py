"""Head-and-tail truncation in UTF-8 bytes, and the stream proxy."""

from __future__ import annotations

import io
import re
import sys

import pytest
from chronos_sdk.capture import Capture, OutputBuffer, StreamProxy, install, truncate

MARK = re.compile(r"\n…\[truncated (\d+) bytes\]…\n")


def test_short_output_is_kept_whole_up_to_the_limit() -> None:
    text = "x" * 1000
    assert truncate(text, 1000) == (text, False)
    cut, was_cut = truncate(text + "y", 1000)
    assert was_cut and MARK.search(cut)


@pytest.mark.parametrize("limit", [200, 201, 202, 203, 500])
def test_cut_never_splits_a_multibyte_character(limit: int) -> None:
    text = "début " + "é€😀" * 200 + " fin"
    cut, was_cut = truncate(text, limit)
    assert was_cut
    assert "\ufffd" not in cut
    assert len(cut.encode()) <= limit
    match = MARK.search(cut)
    assert match
    head, tail = cut[: match.start()], cut[match.end() :]
    assert text.startswith(head) and text.endswith(tail) and tail.endswith(" fin")
    omitted = len(text.encode()) - len(head.encode()) - len(tail.encode())
    assert int(match.group(1)) == omitted


def test_buffer_memory_stays_bounded() -> None:
    buf = OutputBuffer(1000)
    for _ in range(10_000):
        buf.write(b"0123456789" * 10)
    assert buf.total == 1_000_000
    assert len(buf._head) + len(buf._tail) <= 3000
    assert len(buf.getvalue().encode()) <= 1000


def test_proxy_writes_through_and_captures_only_inside_a_run(monkeypatch) -> None:
    real = io.StringIO()
    monkeypatch.setattr(sys, "stdout", real)
    install()
    assert isinstance(sys.stdout, StreamProxy)
    print("before")
    capture = Capture(100)
    token = capture.activate()
    print("during")
    Capture.deactivate(token)
    print("after")
    assert real.getvalue() == "before\nduring\nafter\n"
    assert capture.stdout.getvalue() == "during\n"


def test_a_proxy_wrapping_a_proxy_captures_once(monkeypatch) -> None:
    real = io.StringIO()
    monkeypatch.setattr(sys, "stdout", StreamProxy(real, "stdout"))
    monkeypatch.setattr(sys, "stdout", StreamProxy(sys.stdout, "stdout"))  # wrapped again
    capture = Capture(100)
    token = capture.activate()
    print("once")
    Capture.deactivate(token)
    assert capture.stdout.getvalue() == "once\n"
    assert real.getvalue() == "once\n"
