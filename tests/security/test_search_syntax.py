"""RediSearch syntax in user input is inert: searched literally, never an operator, never a 5xx,
never another tenant's data.

Tenant B has two runs and two jobs whose words, tags, hosts, versions and job ids are chosen
so that each payload's literal meaning and its meaning as query syntax give different
answers (``-foo`` is the word "foo", not "without foo"; ``(foo|bar)`` is both words, not
either; ``%%fuzzy%%`` is "fuzzy", not "fuzzx"). Tenant A has every one of those words, tags,
hosts, versions and ids too, plus ``MARK``: none of it may ever show up for B.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Tenants
from flask import Flask, url_for
from flask.testing import FlaskClient
from markupsafe import escape

from chronos.timeutil import now_ms

from .conftest import MARK, Browser, make_user

WORDS_1 = "foo unterminated fuzzy param tenant x"
WORDS_2 = "bar fuzzx quux"

#: Free text -> the ids (b1/j1, b2/j2) a literal search finds among B's runs and jobs.
TEXT = {
    "*": [],
    "{}": [],
    "@tenant:{x}": [1],
    "-foo": [1],
    '"unterminated': [1],
    "%%fuzzy%%": [1],
    "(foo|bar)": [],
    "(a|b)": [],
    "$param": [1],
    "~x": [1],
    "fuzz*": [],
    "foo -bar": [],
    "@stdout:foo": [],
    "@description:foo": [],
    "foo|quux": [],
    "'quux'": [2],
    "bar*quux": [2],
    "\\-foo": [1],
    "x=>{$weight:2}": [],
    "@tenant:{tenant\\-a}": [],
    "[1 2]": [],
    "%": [],
}
#: TAG filters (exact values) -> B's matches.
TAGS = {
    "(a|b)": [1],
    "*": [1],
    "a": [2],
    "a|b": [],
    "@tag:{a}": [],
    "a*": [],
    "{a}": [],
    "b": [2],
    " a": [],
}
HOSTS = {"*": [1], "x": [2], "x*": [], "{x}": [], "-x": [], "@host:{x}": []}
VERSIONS = {"{x}": [1], "x": [2], "*": [], "x|{x}": [], "$p0": []}
JOB_IDS = {"a|b": [1], "a": [2], "*": [], "a*": [], "{a|b}": [], "-a": [], "a\\|b": []}
LONG = ["foo " * 300, "x" * 5000, "@" * 300 + "{" * 300, "é" * 257]


def _job(n: int, words: str, tags: list[str], mark: str = "") -> dict[str, Any]:
    return {
        "id": f"j{n}",
        "name": f"{words} {mark}",
        "description": f"{words} {mark}",
        "tags": tags,
    }


def _run(n: int, words: str, job_id: str, host: str, version: str, mark: str = "") -> dict:
    started = now_ms() - 3_600_000 + n
    return {
        "execId": f"b{n}" if not mark else f"a{n}",
        "jobId": job_id,
        "status": "failed",
        "startedAt": started,
        "finishedAt": started + 10,
        "stdout": f"{words} {mark}",
        "errorMessage": f"{words} {mark}",
        "host": host,
        "jobVersion": version,
    }


class Lookups:
    def __init__(self, client: FlaskClient, b_key: str, browser: Browser) -> None:
        self.client, self.headers, self.browser = client, Tenants.headers(b_key), browser

    def api(self, path: str, **query: str) -> list[dict[str, Any]] | None:
        """The listing's items, or None for a 422; never a server error nor A's data."""
        answer = self.client.get(path, query_string=query, headers=self.headers)
        assert answer.status_code in (200, 422), (path, query, answer.text)
        assert MARK not in answer.get_data(as_text=True), (path, query)
        return answer.get_json()["data"] if answer.status_code == 200 else None

    def runs(self, **query: str) -> list[int] | None:
        found = self.api("/api/executions", **query)
        return None if found is None else sorted(int(r["execId"][1:]) for r in found)

    def jobs(self, **query: str) -> list[int] | None:
        found = self.api("/api/jobs", **query)
        return None if found is None else sorted(int(j["id"][1:]) for j in found)

    def page(self, path: str, statuses: tuple[int, ...] = (200,), **query: str) -> str:
        answer = self.browser.get(path, **query)
        assert answer.status_code in statuses, (path, query, answer.status_code)
        text = answer.get_data(as_text=True)
        for value in query.values():  # the page repeats the query in its form
            text = text.replace(f'value="{escape(value)}"', "")
        assert MARK not in text, (path, query)
        return text

    def page_runs(self, **query: str) -> list[int]:
        text = self.page("/search", **query)
        return [n for n in (1, 2) if f'href="{exec_link(f"b{n}")}"' in text]

    def page_jobs(self, **query: str) -> list[int]:
        text = self.page("/jobs", **query)
        return [n for n in (1, 2) if f'href="{job_link(f"j{n}")}"' in text]


def exec_link(exec_id: str) -> str:
    return str(escape(url_for("dashboard.execution_detail", exec_id=exec_id)))


def job_link(job_id: str) -> str:
    return str(escape(url_for("dashboard.job_detail", job_id=job_id)))


@pytest.fixture
def look(app: Flask, client: FlaskClient, tenants: Tenants) -> Any:
    a_key, b_key = tenants.key("tenant-a", "ingest"), tenants.key("tenant-b", "ingest", "read")
    for key, mark in ((a_key, MARK), (b_key, "")):
        jobs = [_job(1, WORDS_1, ["(a|b)", "*"], mark), _job(2, WORDS_2, ["a", "b"], mark)]
        runs = [_run(1, WORDS_1, "a|b", "*", "{x}", mark), _run(2, WORDS_2, "a", "x", "x", mark)]
        if mark:  # A has every word, tag, host and version on one run and one job
            jobs.append(_job(3, f"{WORDS_1} {WORDS_2}", ["(a|b)", "*", "a", "b"], mark))
            runs.append(_run(3, f"{WORDS_1} {WORDS_2}", "a|b", "*", "{x}", mark))
        for path, body in (
            ("/api/ingest/jobs/register", {"jobs": jobs}),
            ("/api/ingest/executions/batch", {"executions": runs}),
        ):
            answer = client.post(path, json=body, headers=Tenants.headers(key))
            assert answer.status_code == 200 and not answer.get_json()["rejected"], answer.text
    make_user(app, "bob", "tenant-b")
    with app.test_request_context():
        yield Lookups(client, b_key, Browser(app).login("bob"))


def test_free_text_is_searched_literally(look: Lookups) -> None:
    for q, expected in TEXT.items():
        assert look.runs(q=q) == expected, q
        on_job = look.api("/api/jobs/a|b/executions", q=q) or []  # b1 is the run of "a|b"
        assert [run["execId"] for run in on_job] == ["b1"] * (1 in expected), q
        assert look.jobs(q=q) == expected, q
        assert look.page_runs(q=q) == expected, q
        assert look.page_jobs(q=q) == expected, q


def test_tags_match_exactly(look: Lookups) -> None:
    for tag, expected in TAGS.items():
        assert look.jobs(tag=tag) == expected, tag
        assert look.page_jobs(tag=tag) == expected, tag


@pytest.mark.parametrize(
    ("field", "table"), [("host", HOSTS), ("version", VERSIONS), ("jobId", JOB_IDS)]
)
def test_filters_match_exactly(look: Lookups, field: str, table: dict[str, list[int]]) -> None:
    page_field = {"jobId": "job"}.get(field, field)
    for value, expected in table.items():
        assert look.runs(**{field: value}) == expected, value
        assert look.page_runs(**{page_field: value}) == expected, value


def test_status_is_a_value_never_syntax(look: Lookups) -> None:
    assert look.runs(status="failed") == [1, 2] and look.runs(status="success") == []
    assert look.page_runs(status="success") == []
    for status in ("success|timeout", "*", "-failed", "{success}", "succ*", "@status:{success}"):
        assert look.runs(status=status) is None, status  # the API knows its statuses: 422
        # The page ignores what is not a status: no filter, rather than an operator
        assert look.page_runs(status=status) == [1, 2], status


def test_path_ids_and_analytics_job_ids_are_literal(look: Lookups) -> None:
    for job_id, expected in JOB_IDS.items():
        runs = look.api(f"/api/jobs/{job_id.replace('|', '%7C')}/executions")
        assert sorted(int(r["execId"][1:]) for r in runs or []) == expected, job_id
        trend = look.api("/api/analytics/trends", jobId=job_id)
        assert sum(b["runs"] for b in trend["buckets"]) == len(expected), job_id  # type: ignore[call-overload]
        assert look.api(f"/api/jobs/{job_id}/triggers") == []


@pytest.mark.parametrize("value", LONG, ids=["words", "one-word", "syntax", "unicode"])
def test_long_and_odd_input_is_refused_or_searched_never_a_server_error(
    look: Lookups, value: str
) -> None:
    for name in ("q", "jobId", "host", "version", "cursor"):
        assert look.api("/api/executions", **{name: value}) in (
            None,
            [],
            look.api("/api/executions", q="foo"),
        )
    for name in ("q", "tag"):
        look.api("/api/jobs", **{name: value})
    for name in ("q", "job", "host", "version", "status", "from", "to"):
        look.page("/search", **{name: value})
    for name in ("q", "tag", "health", "enabled"):
        look.page("/jobs", **{name: value})
    for path in ("/search", "/jobs"):  # a cursor that is not one: the error page
        look.page(path, statuses=(422,), cursor=value)
