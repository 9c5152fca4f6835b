"""The dashboard in a real browser: headless Chromium over real HTTP and websockets.

Logs in, walks every page against the seeded data (see ``conftest.py``), searches, follows a
chart bar and a table link to executions, watches an execution arrive live, and checks that a
user of another tenant sees nothing of the first. Every page is saved as a screenshot under
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from chronos import cron, formatting
from chronos.models import FAILURE_STATUSES
from chronos.timeutil import now_ms, parse_timestamp

from .conftest import DAY, PARIS, PASSWORD, Seed

pytestmark = pytest.mark.redis

SCHEDULE_WORDS = {
    "nightly-backup": "at 03:00 every day",
    "invoice-sync": "every 15 minutes",
    "report-mailer": "at 09:30 on Monday to Friday",
    "cache-warmer": "at minute 0 of every hour",
    "legacy-export": "at 00:00 on day 1 of the month",
    "data-cleanup": "every 5 minutes",
}
HOSTILE = "@stdout:{x} | *"
IGNORED_LOADS = ("/favicon.ico",)


# helpers -------------------------------------------------------------------------------------
class Session:
    """A browser context of one user, with the page's script errors and failed requests."""

    def __init__(self, browser: Browser, base: str, **options: Any) -> None:
        self.base = base
        self.context: BrowserContext = browser.new_context(
            timezone_id=PARIS, locale="en-GB", **{"viewport": {"width": 1280, "height": 900},
                                                 **options})  # fmt: skip
        self.context.set_default_timeout(10_000)
        self.page: Page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on("console", self._console)
        self.page.on("response", self._response)

    def _console(self, message: Any) -> None:
        # Failed loads are reported by _response (pages answer 401 and 404 on purpose).
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(f"console: {message.text} at {message.location}")

    def _response(self, response: Any) -> None:
        request = response.request
        if (response.status >= 400 and request.resource_type != "document"
                and not request.url.endswith(IGNORED_LOADS)):  # fmt: skip
            self.problems.append(f"{response.status} for {request.resource_type} {request.url}")

    def goto(self, path: str, status: int = 200) -> Page:
        response = self.page.goto(self.base + path)
        assert response is not None and response.status == status, (path, response)
        return self.page

    def login(self, username: str, password: str = PASSWORD) -> Page:
        self.goto("/login")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page).to_have_url(self.base + "/")
        expect(self.page.locator(".session .user")).to_have_text(username)
        return self.page

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def sessions(browser: Browser, live) -> Any:
    opened: list[Session] = []

    def open_session(**options: Any) -> Session:
        session = Session(browser, live.url, **options)
        opened.append(session)
        return session

    yield open_session
    problems = [p for s in opened for p in s.problems]
    for session in opened:
        session.close()
    assert not problems, problems  # no script errors, no CSP violations, no failed loads


def shot(page: Page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def texts(page: Page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


def facts(page: Page) -> dict[str, str]:
    """The ``<dl class="facts">`` of a page as ``{dt: dd}``."""
    return page.evaluate("""() => Object.fromEntries(
        [...document.querySelectorAll('dl.facts dt')].map(
            dt => [dt.textContent.trim(), dt.nextElementSibling.textContent.trim()]))""")


def local(ms: int | None) -> str:
    return formatting.local_time(ms, PARIS)


def post_execution(base: str, key: str, execution: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        base + "/api/ingest/executions", data=json.dumps(execution).encode(), method="POST",
        headers={"content-type": "application/json", "x-api-key": key})  # fmt: skip
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())


def api_status(base: str, path: str, key: str) -> int:
    request = urllib.request.Request(base + path, headers={"x-api-key": key})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def assert_nothing_of(page: Page, seed: Seed, tenant: str, words: tuple[str, ...]) -> None:
    """None of the tenant's job or execution ids in the page, nor ``words`` in its text (the
    search box may echo them)."""
    html, text = page.content(), page.locator("body").inner_text()
    leaked = [x for x in (*seed.job_ids(tenant), *seed.exec_ids(tenant)) if x in html]
    leaked += [w for w in words if w in text]
    assert not leaked, f"{page.url} shows {tenant}'s {leaked}"


# the walk ------------------------------------------------------------------------------------
def test_login_and_walk_every_page(sessions, seeded: Seed, screenshots: Path) -> None:
    s = sessions()
    page = s.goto("/jobs")  # not logged in: to the login form, and back after it
    expect(page).to_have_url(re.compile(r"/login\?next="))
    shot(page, screenshots, "login")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("wrong username or password")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(s.base + "/jobs")

    check_overview(s, seeded, screenshots)
    check_jobs(s, seeded, screenshots)
    check_job_detail(s, seeded, screenshots)
    check_execution_detail(s, seeded, screenshots)
    check_search(s, seeded, screenshots)
    check_analytics(s, seeded, screenshots)
    check_keys(s, seeded, screenshots)


def check_overview(s: Session, seed: Seed, screenshots: Path) -> None:
    page = s.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Overview").click()
    expect(page).to_have_url(s.base + "/")
    now = seed.now
    day = seed.runs("acme", now - DAY, now)
    failed = seed.failures("acme", now - DAY, now)
    succeeded = sum(e.status == "success" for e in day)
    expect(page.locator("[data-kpi=jobs]")).to_have_text(str(len(seed.jobs["acme"])))
    expect(page.locator(".kpi", has=page.locator("[data-kpi=jobs]"))).to_contain_text("5 active")
    expect(page.locator("[data-kpi=runs]")).to_have_text(str(len(day)))
    expect(page.locator(".kpi", has=page.locator("[data-kpi=runs]"))).to_contain_text(
        f"{failed} failed"
    )
    expect(page.locator("[data-kpi=success-rate]")).to_have_text(
        formatting.percent(succeeded / (succeeded + failed))
    )
    expect(page.locator("[data-kpi=p95]")).not_to_have_text("–")

    attention = page.locator("section[aria-labelledby=attention] tbody tr")
    expected_attention = [
        j.id
        for j in seed.jobs["acme"]
        if j.enabled and seed.last_status("acme", j.id) in FAILURE_STATUSES
    ]
    assert [t.split("\t")[0] for t in attention.all_inner_texts()] == expected_attention

    recent = sorted((e for e in seed.executions["acme"] if e.started_at >= now - DAY),
                    key=lambda e: e.started_at, reverse=True)[:20]  # fmt: skip
    rows = page.locator("tbody[data-live-prepend=execution] tr")
    expect(rows).to_have_count(len(recent))
    assert texts(page, "tbody[data-live-prepend=execution] tr td:last-child") == [
        e.exec_id for e in recent
    ]
    assert texts(page, "tbody[data-live-prepend=execution] tr td:first-child")[0] == local(
        recent[0].started_at
    )  # the browser's zone (Europe/Paris) came through the tz cookie
    expect(page.locator("#live-status")).to_have_text("live")
    shot(page, screenshots, "overview")


def job_rows(page: Page) -> list[str]:
    return texts(page, "#jobs-table tbody tr td:first-child a")


def check_jobs(s: Session, seed: Seed, screenshots: Path) -> None:
    page = s.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    expect(page.locator("#jobs-table tbody tr")).to_have_count(len(seed.jobs["acme"]))
    assert job_rows(page) == seed.job_ids("acme")  # registration order
    health = {}
    for job in seed.jobs["acme"]:
        row = page.locator("#jobs-table tbody tr").filter(
            has=page.get_by_role("link", name=job.id, exact=True)
        )
        expect(row.locator("td").nth(1)).to_contain_text(SCHEDULE_WORDS[job.id])
        expect(row.locator("td").nth(1)).to_contain_text(job.schedule)
        last = seed.last_status("acme", job.id)
        health[job.id] = ("paused" if not job.enabled else
                          "failing" if last in ("failed", "timeout") else "ok")  # fmt: skip
        expect(row.locator(".badge[class*=health-]")).to_have_text(health[job.id])
        expect(row.locator(f".badge.health-{health[job.id]}")).to_have_count(1)
        expect(row.locator(f".badge.status-{last}")).to_have_count(1)
        runs = len(seed.runs("acme", seed.now - 7 * DAY, seed.now, job.id))
        fails = seed.failures("acme", seed.now - 7 * DAY, seed.now, job.id)
        expect(row.locator("svg.spark")).to_have_attribute(
            "aria-label", re.compile(rf"^{runs} runs?, {fails} failed$")
        )
    shot(page, screenshots, "jobs")

    form = page.locator("form.filters")
    form.get_by_label("Health").select_option("failing")
    form.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"health=failing"))
    assert job_rows(page) == [j for j, h in health.items() if h == "failing"]
    form.get_by_label("Health").select_option("")
    form.get_by_label("Enabled").select_option("no")
    form.get_by_role("button", name="Filter").click()
    assert job_rows(page) == [j.id for j in seed.jobs["acme"] if not j.enabled]
    form.get_by_label("Enabled").select_option("yes")
    form.get_by_label("Search").fill("invoices")
    form.get_by_role("button", name="Filter").click()
    assert job_rows(page) == ["invoice-sync"]
    form.get_by_label("Search").fill("no such words")
    form.get_by_role("button", name="Filter").click()
    expect(page.locator("#jobs-table tbody")).to_have_text("No jobs match.")
    shot(page, screenshots, "jobs-filtered-empty")


def check_job_detail(s: Session, seed: Seed, screenshots: Path) -> None:
    page = s.page
    job = next(j for j in seed.jobs["acme"] if j.id == "invoice-sync")
    before = now_ms()
    s.goto("/jobs")
    page.get_by_role("link", name=job.id, exact=True).click()
    expect(page).to_have_url(s.base + "/jobs/invoice-sync")
    after = now_ms()
    expect(page.locator("h1")).to_contain_text("Invoice sync")
    expect(page.locator("h1 .badge")).to_have_text("failing")
    definition = facts(page)
    assert definition["Schedule"] == f"{SCHEDULE_WORDS[job.id]} {job.schedule}"
    assert definition["Time zone"] == PARIS
    assert definition["Max runtime"] == "none"
    assert definition["Tags"] == "billing"
    assert definition["Enabled"].startswith("yes")
    fires = texts(page, "dl.facts dt:text-is('Next runs') + dd div")
    assert fires in (
        [formatting.local_time(f, PARIS) for f in cron.next_fires(job.schedule, PARIS, t, 5)]
        for t in (before, after)
    )

    week = seed.runs("acme", seed.now - 7 * DAY, seed.now, job.id)
    week_failed = seed.failures("acme", seed.now - 7 * DAY, seed.now, job.id)
    expect(page.locator("[data-kpi=runs]")).to_have_text(str(len(week)))
    expect(page.locator("[data-kpi=success-rate]")).to_have_text(
        formatting.percent((len(week) - week_failed) / len(week))
    )
    section = page.locator("section[aria-labelledby=kpis]")
    expect(section.locator("svg.chart")).to_have_count(2)
    expect(section.locator("figcaption").first).to_have_text("Successes and failures (daily)")
    bars = section.locator("svg.chart a")
    labels = [bars.nth(i).get_attribute("aria-label") for i in range(bars.count())]
    counted = [tuple(map(int, re.search(r"(\d+) succeeded, (\d+) failed", label).groups()))
               for label in labels]  # fmt: skip
    assert sum(a + b for a, b in counted) == len(week)
    assert sum(b for _, b in counted) == week_failed
    expect(page.locator("#executions-section tbody tr")).to_have_count(len(week))

    # Versions: the release of 9 hours ago against the one before it.
    versions = page.locator("table[data-versions] tbody tr")
    expect(versions).to_have_count(2)
    cells = [versions.nth(i).locator("td").all_inner_texts() for i in range(2)]
    assert [c[:5] for c in cells] == [
        ["v42", "5", "1", formatting.percent(4 / 5), "+13.3 pp"],
        ["v41", "6", "2", formatting.percent(4 / 6), "–"],
    ]
    assert cells[0][6] != "–" and cells[0][7].endswith("%") and cells[1][7] == "–"
    shot(page, screenshots, "job-detail")
    page.get_by_role("navigation", name="Group by").get_by_role("link", name="app version").click()
    expect(versions).to_have_count(1)
    expect(versions.locator("td").first).to_have_text("none reported")
    expect(versions.locator("td").nth(1)).to_have_text(str(len(week)))
    page.get_by_role("navigation", name="Group by").get_by_role("link", name="job version").click()
    versions.first.get_by_role("link", name="v42").click()
    expect(page).to_have_url(re.compile(r"/search\?.*version=v42"))
    expect(page.locator("#search-results > li")).to_have_count(5)
    s.goto("/jobs/invoice-sync")

    page.locator("nav[aria-label=Range]").get_by_role("link", name="24h").click()
    day = seed.runs("acme", seed.now - DAY, seed.now, job.id)
    expect(page.locator("[data-kpi=runs]")).to_have_text(str(len(day)))
    expect(section.locator("figcaption").first).to_have_text("Successes and failures (hourly)")

    # A bar of the 7-day chart leads to its runs, and a run to its page.
    page.locator("nav[aria-label=Range]").get_by_role("link", name="7d").click()
    bar = page.locator("section[aria-labelledby=kpis] svg.chart a").last
    ok, bad = map(int, re.search(r"(\d+) succeeded, (\d+) failed",
                                 bar.get_attribute("aria-label")).groups())  # fmt: skip
    bar.click()
    expect(page).to_have_url(re.compile(r"/search\?"))
    query = parse_qs(urlsplit(page.url).query)
    assert query["job"] == [job.id]
    start, end = parse_timestamp(query["from"][0]), parse_timestamp(query["to"][0])
    expected = sorted((e for e in seed.executions["acme"]
                       if e.job_id == job.id and start <= e.started_at < end),
                      key=lambda e: e.started_at, reverse=True)  # fmt: skip
    results = page.locator("#search-results > li")
    expect(results).to_have_count(ok + bad)
    assert texts(page, "#search-results > li > div:first-child > a:first-child") == [
        e.exec_id for e in expected
    ]
    assert set(texts(page, "#search-results > li a[href^='/jobs/']")) == {job.id}
    shot(page, screenshots, "search-from-chart")
    target = expected[0]
    results.first.get_by_role("link", name=target.exec_id).click()
    expect(page).to_have_url(s.base + f"/executions/{target.exec_id}")
    expect(page.locator("h1 .badge")).to_have_text(target.status)
    shot(page, screenshots, "execution-from-chart")

    s.goto("/jobs/nightly-backup")
    assert facts(page)["Max runtime"] == "3600 s"
    expect(page.locator("h1 .badge")).to_have_text("failing")
    s.goto("/jobs/legacy-export")
    assert facts(page)["Next runs"] == "none scheduled"
    expect(page.locator("h1 .badge")).to_have_text("paused")
    s.goto("/jobs/no-such-job", status=404)


def check_execution_detail(s: Session, seed: Seed, screenshots: Path) -> None:
    page = s.page
    ex = next(e for e in seed.executions["acme"] if e.exec_id == seed.rich_exec_id)
    s.goto(f"/executions/{ex.exec_id}")
    expect(page.locator("h1 .badge.status-failed")).to_have_text("failed")
    expect(page.locator("main p.muted").first).to_have_text(f"{ex.exec_id} of {ex.job_id}")
    assert facts(page) == {
        "Started": local(ex.started_at), "Finished": local(ex.finished_at),
        "Duration": formatting.duration(ex.duration_ms), "Exit code": "1", "Host": "worker-7",
        "Attempt": "2", "Trigger": "trg_manual_0001", "App version": "2.4.1",
        "Job version": "v17", "SDK version": "chronos-python 0.3.0",
        "Received": local(ex.received_at), "Labels": "region=eu-west shard=7",
    }  # fmt: skip
    expect(page.locator("section[aria-labelledby=error] p")).to_have_text(
        "ValueError: xylophone tuning failed for partition 7"
    )
    expect(page.locator("pre[data-stream=stack]")).to_contain_text("line 42, in clean")
    expect(page.locator("pre[data-stream=stdout]")).to_have_text(ex.stdout)
    expect(page.locator("pre[data-stream=stderr]")).to_have_text(ex.stderr)
    expect(page.locator("pre.output").first).to_contain_text('"batch": 42')
    code = page.locator("section[aria-labelledby=code] .highlight")
    expect(code).to_have_count(1)
    expect(code).to_contain_text("def clean(partition: int) -> int:")
    keyword = code.locator(".k, .kn, .kd").first
    expect(keyword).to_have_text(re.compile(r"^(def|for|in|return)$"))
    colours = keyword.evaluate("""k => [getComputedStyle(k).color,
        getComputedStyle(k.closest('pre')).color]""")
    assert colours[0] != colours[1], "keywords are not coloured: pygments.css missing?"
    shot(page, screenshots, "execution-detail")
    page.get_by_role("link", name=ex.job_id, exact=True).click()
    expect(page).to_have_url(s.base + f"/jobs/{ex.job_id}")
    s.goto("/executions/exz-001-zeta-etl", status=404)  # zeta's


def check_search(s: Session, seed: Seed, screenshots: Path) -> None:
    page = s.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Search").click()
    expect(page.locator("main p.muted").first).to_contain_text("last 7 days")
    week = [e for e in seed.executions["acme"] if e.started_at >= seed.now - 7 * DAY]
    expect(page.locator("#search-results > li")).to_have_count(min(len(week), 25))
    page.locator("form[role=search]").get_by_label("Text").fill("xylophone")
    page.locator("form[role=search]").get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"/search\?q=xylophone"))
    hits = sorted(seed.with_word("acme", "xylophone"), key=lambda e: e.started_at,
                  reverse=True)  # fmt: skip
    assert len(hits) == 3
    results = page.locator("#search-results > li")
    expect(results).to_have_count(len(hits))
    assert texts(page, "#search-results > li > div:first-child > a:first-child") == [
        e.exec_id for e in hits
    ]
    for i in range(len(hits)):
        expect(results.nth(i).locator("mark").first).to_have_text(
            re.compile("^xylophone$", re.IGNORECASE)
        )
    assert {m.lower() for m in texts(page, "#search-results mark")} == {"xylophone"}
    shot(page, screenshots, "search")
    results.nth(0).get_by_role("link", name=hits[0].exec_id).click()
    expect(page).to_have_url(s.base + f"/executions/{hits[0].exec_id}")

    # Query syntax is inert: no error, and nothing of another tenant whose output has the words.
    s.goto("/search?q=" + quote(HOSTILE))
    expect(page.locator("form[role=search]").get_by_label("Text")).to_have_value(HOSTILE)
    expect(page.locator(".error-page, [role=alert]")).to_have_count(0)
    expect(page.locator("#search-results")).to_have_text("Nothing found.")
    assert_nothing_of(page, seed, "zeta", ("zebrafish",))
    shot(page, screenshots, "search-hostile")
    for q in ("zebrafish", "*", "@tenant:{zeta}", "\\", '"'):
        s.goto("/search?q=" + quote(q))
        expect(page.locator("#search-results")).to_have_text("Nothing found.")
        assert_nothing_of(page, seed, "zeta", ("zebrafish",))


def analytics_order(page: Page) -> list[str]:
    return texts(page, "#jobs-analytics tbody tr td:first-child")


def check_analytics(s: Session, seed: Seed, screenshots: Path) -> None:
    page = s.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Analytics").click()
    expect(page.locator("svg.chart")).to_have_count(2)
    runs = {j: len(seed.runs("acme", seed.now - 7 * DAY, seed.now, j))
            for j in seed.job_ids("acme")}  # fmt: skip
    by_id = sorted(runs)
    desc = sorted(by_id, key=lambda j: runs[j], reverse=True)
    asc = sorted(by_id, key=lambda j: runs[j])
    expect(page.locator("#jobs-analytics tbody tr")).to_have_count(len(runs))
    assert analytics_order(page) == desc
    assert [int(t) for t in texts(page, "#jobs-analytics tbody tr td:nth-child(2)")] == [
        runs[j] for j in desc
    ]
    expect(page.locator("#jobs-analytics th[aria-sort=descending]")).to_have_text("Runs")
    total = sum(runs.values())
    page.locator("details summary").click()  # the figures behind the charts
    trend = [int(t) for t in texts(page, "#trend-table tbody tr td:nth-child(2)")]
    assert sum(trend) == total
    shot(page, screenshots, "analytics")

    page.locator("#jobs-analytics thead").get_by_role("link", name="Runs").click()
    expect(page.locator("#jobs-analytics th[aria-sort=ascending]")).to_have_text("Runs")
    assert analytics_order(page) == asc != desc
    page.locator("#jobs-analytics thead").get_by_role("link", name="Job").click()
    assert analytics_order(page) == sorted(by_id, reverse=True)
    shot(page, screenshots, "analytics-sorted")

    # The failures of a job lead to its failed runs, and one of them to its page.
    row = page.locator("#jobs-analytics tbody tr").filter(
        has=page.get_by_role("link", name="invoice-sync", exact=True)
    )
    failed = [
        e
        for e in seed.executions["acme"]
        if e.job_id == "invoice-sync" and e.status in FAILURE_STATUSES
    ]
    row.locator("td").nth(6).get_by_role("link").click()
    expect(page.locator("#search-results > li")).to_have_count(len(failed))
    page.locator("#search-results > li").first.locator("a").first.click()
    expect(page).to_have_url(re.compile(r"/executions/exa-\d+-invoice-sync$"))
    expect(page.locator("h1 .badge")).to_have_text("failed")


def check_keys(s: Session, seed: Seed, screenshots: Path) -> None:
    page = s.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API keys").click()
    expect(page.locator("#keys-table tbody tr")).to_have_count(1)  # the seed's
    shot(page, screenshots, "keys")
    page.get_by_label("Name").fill("ci-deploy")
    page.get_by_role("checkbox", name="read").check()
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("h1")).to_have_text("API key created")
    secret = page.locator("#new-key").input_value()
    assert re.fullmatch(r"chr_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", secret)
    key_id = secret.split("_")[1]
    expect(page.locator("main")).to_contain_text("only time it is shown")
    expect(page.locator("main")).to_contain_text("ingest, read")
    shot(page, screenshots, "key-created")
    assert api_status(s.base, "/api/jobs", secret) == 200

    page.get_by_role("link", name="Back to the API keys").click()
    assert secret not in page.content()  # shown once, never again
    expect(page.locator("#keys-table tbody tr")).to_have_count(2)
    row = page.locator("#keys-table tbody tr").filter(has_text=f"chr_{key_id}_")
    expect(row).to_contain_text("ci-deploy")
    expect(row.locator(".badge")).to_have_text("active")
    row.get_by_role("button", name=f"Revoke key chr_{key_id}").click()
    expect(row.locator(".badge")).to_have_text("revoked")
    expect(row.get_by_role("button")).to_have_count(0)
    assert api_status(s.base, "/api/jobs", secret) == 401
    shot(page, screenshots, "keys-revoked")


# live updates and the tenant wall ------------------------------------------------------------
def kpi_numbers(page: Page) -> dict[str, int]:
    """The overview's counts: jobs, enabled jobs, runs and failed runs of the last 24 h."""
    names = {"jobs": "jobs", "enabled": "jobs-enabled", "runs": "runs", "failed": "failed"}
    return {key: int(page.locator(f"[data-kpi={name}]").inner_text().split()[0])
            for key, name in names.items()}  # fmt: skip


def wait_live(page: Page) -> None:
    expect(page.locator("#live-status")).to_have_text("live")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")


def test_new_execution_appears_live_within_2s_for_its_tenant_only(
    sessions, seeded: Seed, screenshots: Path
) -> None:
    alice, zed = sessions(), sessions()
    alice.login("alice")
    zed.login("zed")
    wait_live(alice.page)
    wait_live(zed.page)
    rows = "tbody[data-live-prepend=execution] tr"
    before_alice, before_zed = alice.page.locator(rows).count(), zed.page.locator(rows).count()
    kpis = {s: kpi_numbers(s.page) for s in (alice, zed)}

    now = now_ms()
    sent = time.monotonic()
    post_execution(alice.base, seeded.ingest_keys["acme"], {
        "execId": "exa-live-001", "jobId": "invoice-sync", "status": "success",
        "startedAt": now - 1500, "finishedAt": now, "durationMs": 1500})  # fmt: skip
    row = alice.page.locator(f"{rows}[data-exec-id='exa-live-001']")
    row.wait_for(timeout=2000)
    assert time.monotonic() - sent < 2.0
    expect(alice.page.locator(rows).first).to_have_attribute("data-exec-id", "exa-live-001")
    expect(alice.page.locator(rows)).to_have_count(before_alice + 1)
    expect(row.locator("td").nth(1)).to_have_text("invoice-sync")
    expect(row.locator(".badge.status-success")).to_have_text("success")
    # Written as the server writes the rows around it.
    expect(row.locator("td").nth(0)).to_have_text(local(now - 1500))
    expect(row.locator("td").nth(3)).to_have_text(formatting.duration(1500))
    expect(row.get_by_role("link", name="invoice-sync")).to_have_attribute(
        "href", "/jobs/invoice-sync"
    )
    expect(alice.page.locator("#live-status")).to_have_text("live")
    # The figures at the top follow (refetched at most every 5 s), for this tenant only.
    expect(alice.page.locator("[data-kpi=runs]")).to_have_text(
        str(kpis[alice]["runs"] + 1), timeout=7000
    )
    assert kpi_numbers(alice.page)["failed"] == kpis[alice]["failed"]
    shot(alice.page, screenshots, "live-overview")

    # zed's page, open all along, never gets it.
    zed.page.wait_for_timeout(max(0, 2000 - (time.monotonic() - sent) * 1000))
    expect(zed.page.locator(rows)).to_have_count(before_zed)
    assert "exa-live-001" not in zed.page.content()
    assert_nothing_of(zed.page, seeded, "acme", ("xylophone", "exa-live-001"))

    # ... but gets its own tenant's, which alice does not.
    sent = time.monotonic()
    post_execution(zed.base, seeded.ingest_keys["zeta"], {
        "execId": "exz-live-001", "jobId": "zeta-etl", "status": "failed",
        "startedAt": now, "finishedAt": now + 800, "durationMs": 800})  # fmt: skip
    zed.page.locator(f"{rows}[data-exec-id='exz-live-001']").wait_for(timeout=2000)
    expect(zed.page.locator(f"{rows}[data-exec-id='exz-live-001'] .badge")).to_have_class(
        re.compile(r"\bstatus-failed\b")
    )
    shot(zed.page, screenshots, "live-overview-zed")
    expect(zed.page.locator("[data-kpi=failed]")).to_have_text(
        f"{kpis[zed]['failed'] + 1} failed", timeout=7000
    )
    assert kpi_numbers(zed.page)["runs"] == kpis[zed]["runs"] + 1
    alice.page.wait_for_timeout(max(0, 2000 - (time.monotonic() - sent) * 1000))
    assert "exz-live-001" not in alice.page.content()
    expect(alice.page.locator(rows)).to_have_count(before_alice + 1)
    assert kpi_numbers(alice.page)["runs"] == kpis[alice]["runs"] + 1

    # A job registered meanwhile is announced on the open overview, to its tenant only.
    request = urllib.request.Request(
        alice.base + "/api/ingest/jobs/register", method="POST",
        data=json.dumps({"jobs": [{"id": "job:brand-new", "schedule": "0 7 * * *"}]}).encode(),
        headers={"content-type": "application/json",
                 "x-api-key": seeded.ingest_keys["acme"]})  # fmt: skip
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    notice = alice.page.locator("[data-live-notice]")
    expect(notice).to_be_visible(timeout=2000)
    expect(notice).to_contain_text("job:brand-new")
    expect(alice.page.locator("[data-kpi=jobs]")).to_have_text(
        str(kpis[alice]["jobs"] + 1), timeout=7000
    )
    expect(alice.page.locator("[data-kpi=jobs-enabled]")).to_have_text(
        f"{kpis[alice]['enabled'] + 1} active"
    )
    zed.page.wait_for_timeout(500)
    expect(zed.page.locator("[data-live-notice]")).to_be_hidden()
    assert kpi_numbers(zed.page)["jobs"] == kpis[zed]["jobs"]

    row.get_by_role("link", name="exa-live-001").click()
    expect(alice.page).to_have_url(alice.base + "/executions/exa-live-001")
    expect(alice.page.locator("h1 .badge")).to_have_text("success")


def test_another_tenant_sees_nothing_of_the_first(sessions, seeded: Seed, screenshots: Path):
    s = sessions()
    page = s.login("zed")
    words = ("xylophone", "marmalade", "quokka", "Invoice sync")
    now = seeded.now
    expect(page.locator("[data-kpi=jobs]")).to_have_text(str(len(seeded.jobs["zeta"])))
    expect(page.locator("[data-kpi=runs]")).to_have_text(
        str(len(seeded.runs("zeta", now - DAY, now)))
    )
    expect(page.locator("tbody[data-live-prepend=execution] tr")).to_have_count(
        len(seeded.executions["zeta"])
    )
    assert_nothing_of(page, seeded, "acme", words)
    shot(page, screenshots, "zed-overview")

    s.goto("/jobs")
    assert job_rows(page) == seeded.job_ids("zeta")
    assert_nothing_of(page, seeded, "acme", words)
    shot(page, screenshots, "zed-jobs")

    for q in ("xylophone", "marmalade", "invoice", HOSTILE, "*"):
        s.goto("/search?q=" + quote(q))
        assert_nothing_of(page, seeded, "acme", words)
    s.goto("/search")
    assert set(texts(page, "#search-results > li > div:first-child > a:first-child")) == set(
        seeded.exec_ids("zeta")
    )
    s.goto("/search?q=zebrafish")
    expect(page.locator("#search-results mark").first).to_have_text("zebrafish")
    assert_nothing_of(page, seeded, "acme", words)
    shot(page, screenshots, "zed-search")
    for job_id in seeded.job_ids("acme"):
        s.goto(f"/search?job={quote(job_id)}")
        expect(page.locator("#search-results")).to_have_text("Nothing found.")

    s.goto("/analytics")
    assert sorted(analytics_order(page)) == sorted(seeded.job_ids("zeta"))
    assert_nothing_of(page, seeded, "acme", words)
    s.goto("/keys")
    expect(page.locator("#keys-table tbody tr")).to_have_count(1)
    expect(page.locator("#keys-table tbody")).to_contain_text("by zed")
    # Not admin: no admin-scope keys to hand out.
    expect(page.get_by_role("checkbox", name="admin")).to_have_count(0)

    s.goto("/jobs/invoice-sync", status=404)
    expect(page.locator("main")).not_to_contain_text("Invoice sync")
    s.goto(f"/executions/{seeded.rich_exec_id}", status=404)  # the 404 names the id asked for
    for word in ("xylophone", "marmalade", "worker-7", "ValueError"):
        expect(page.locator("main")).not_to_contain_text(word)


# layout and keyboard -------------------------------------------------------------------------
def page_width(page: Page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def test_phone_width_has_no_sideways_scrolling(sessions, seeded: Seed, screenshots: Path):
    s = sessions(viewport={"width": 375, "height": 800}, has_touch=True, is_mobile=True)
    page = s.login("alice")
    wide = {}
    for name, path in [("overview", "/"), ("jobs", "/jobs"), ("job-detail", "/jobs/invoice-sync"),
                       ("execution-detail", f"/executions/{seeded.rich_exec_id}"),
                       ("search", "/search?q=xylophone"), ("analytics", "/analytics"),
                       ("keys", "/keys")]:  # fmt: skip
        s.goto(path)
        shot(page, screenshots, f"phone-{name}")
        if page_width(page) > 375 + 1:
            wide[name] = page_width(page)
    assert not wide, f"pages wider than the phone: {wide}"

    # Tables scroll inside their wrapper instead.
    s.goto("/jobs")
    wrap = page.locator(".table-wrap").first
    assert wrap.evaluate("w => w.scrollWidth > w.clientWidth")
    assert wrap.evaluate("w => getComputedStyle(w).overflowX") == "auto"

    # The whole nav is on screen and works.
    nav = page.get_by_role("navigation", name="Main")
    for label in ("Overview", "Jobs", "Search", "Analytics", "API keys"):
        box = nav.get_by_role("link", name=label).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, label
        assert box["height"] >= 24, f"{label} is a small tap target: {box}"
    nav.get_by_role("link", name="Search").tap()
    expect(page).to_have_url(s.base + "/search")
    nav.get_by_role("link", name="Overview").tap()
    expect(page).to_have_url(s.base + "/")
    assert page_width(page) <= 375 + 1


def test_keyboard_skip_link_and_labelled_login(sessions, seeded: Seed) -> None:
    s = sessions()
    page = s.goto("/login")
    for label, field in (("Username", "#username"), ("Password", "#password")):
        expect(page.get_by_label(label)).to_have_count(1)
        assert page.get_by_label(label).evaluate("e => '#' + e.id") == field
    first = page.evaluate("""() => [...document.querySelectorAll(
        'a[href], button, input:not([type=hidden]), select, textarea, [tabindex]')]
        .filter(e => e.tabIndex >= 0)[0].className""")
    assert first == "skip-link"
    # The form works from the keyboard alone.
    page.get_by_label("Username").focus()
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(s.base + "/")

    page.keyboard.press("Tab")
    focused = page.locator(":focus")
    expect(focused).to_have_text("Skip to content")
    box = focused.bounding_box()
    assert box is not None and box["y"] >= 0, "the focused skip link is off screen"
    page.keyboard.press("Enter")
    expect(page).to_have_url(s.base + "/#content")
    expect(page.locator("main#content")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text(re.compile(r"^exa-|^nightly-backup$"))


CONTRAST = """el => {
    const rgb = c => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
    const lum = c => {
        const [r, g, b] = rgb(c).map(v => v / 255).map(
            v => v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4));
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    let bg = el;
    while (bg && rgb(getComputedStyle(bg).backgroundColor).length === 3
           && /rgba\\(.*, 0\\)$/.test(getComputedStyle(bg).backgroundColor)) bg = bg.parentElement;
    const [a, b] = [lum(getComputedStyle(el).color), lum(getComputedStyle(bg).backgroundColor)];
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_code_and_output_are_readable(sessions, seeded: Seed, screenshots: Path, scheme: str):
    s = sessions(color_scheme=scheme)
    page = s.login("alice")
    s.goto(f"/executions/{seeded.rich_exec_id}")
    shot(page, screenshots, f"execution-detail-{scheme}")
    # Plain names in the code (no token class of their own) and the output text.
    for selector in ("section[aria-labelledby=code] .highlight code", "pre[data-stream=stdout]",
                     "h1", "dl.facts dd"):  # fmt: skip
        ratio = page.locator(selector).first.evaluate(CONTRAST)
        assert ratio >= 4.5, f"{selector} in {scheme} mode: contrast {ratio:.2f}"
