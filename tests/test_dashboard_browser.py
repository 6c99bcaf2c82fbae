"""The dashboard in a real browser: Playwright driving Debian's Chromium (no downloaded browsers).

Checks what only a browser can: the client-side filters and the URL they write, the live
refresh that re-renders rows without a reload, that XSS payloads stay text (no dialog, no
``window.__xss``), and that the page raises no CSP violations or script errors.  Screenshots
of the list page and a failed execution go to ``test-artifacts/dashboard-*.png``.

Needs ``pip install playwright`` and ``apt-get install chromium``; skipped (with the reason)
when either is missing.  ``playwright install`` is never needed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from reconciler.service.httpserver import ServerThread

from .test_dashboard import NL_SUMMARY, XSS_CLOSE, XSS_IMG, XSS_SCRIPT, FakeSource, _detail, _row, serve

CHROMIUM = os.environ.get("DASHBOARD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
REFRESH_SECONDS = 0.2

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the Python package 'playwright' is not installed (pip install playwright)")
if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

expect = sync_api.expect
Page = sync_api.Page


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture()
def server(source: FakeSource) -> Iterator[ServerThread]:
    with serve(source, refresh_seconds=REFRESH_SECONDS) as s:
        yield s


class Watch:
    """Everything a page must never do: open a dialog, log an error (CSP violations are
    console errors), throw, or request anything outside the dashboard."""

    def __init__(self, page: Any, origin: str) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.foreign: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("request", lambda r: None if r.url.startswith(origin) else self.foreign.append(r.url))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def check(self, page: Any) -> None:
        assert self.dialogs == [], "a payload opened a dialog"
        assert page.evaluate("window.__xss") is None, "a payload ran"
        assert self.errors == []
        assert self.foreign == []


@pytest.fixture()
def page(browser: Any, server: ServerThread) -> Iterator[tuple[Any, Watch]]:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="light")
    p = context.new_page()
    p.set_default_timeout(10_000)
    watch = Watch(p, server.url)
    try:
        yield p, watch
    finally:
        context.close()


def row_names(page: Any) -> list[str]:
    return list(page.locator("#rows tr[data-name]").evaluate_all("rows => rows.map(r => r.dataset.name)"))


def query_of(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def test_list_page_shows_every_execution(page: tuple[Any, Watch], server: ServerThread) -> None:
    p, watch = page
    p.goto(server.url + "/")
    expect(p.locator("#repo-health")).to_have_text("Degraded")
    expect(p.locator("#repo-health")).to_have_class(re.compile(r"\bhealth-Degraded\b"))
    expect(p.locator("#rows tr[data-name]")).to_have_count(6)
    assert row_names(p) == ["oom-payment-api", "restart-checkout", "db-failover", "scale-search", "rotate-certs",
                            "xss-probe"]
    expect(p.locator("#result-count")).to_have_text("6 of 6 executions")
    expect(p.locator('tr[data-name="scale-search"] .col-health .badge')).to_have_text("Suspended")
    expect(p.locator('tr[data-name="restart-checkout"] .col-phase .reason')).to_have_text("ResourceBusy")
    # the stylesheet applied (badges are coloured pills) and the script took over (no-JS button hidden)
    color = p.locator('tr[data-name="oom-payment-api"] .col-health .badge').evaluate(
        "e => getComputedStyle(e).borderRadius")
    assert color.endswith("px") and color != "0px"
    expect(p.locator("button.nojs-only")).to_be_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    p.screenshot(path=str(ARTIFACTS / "dashboard-list.png"), full_page=True)
    watch.check(p)


def test_phase_filter_updates_rows_and_url(page: tuple[Any, Watch], server: ServerThread) -> None:
    p, watch = page
    p.goto(server.url + "/")
    expect(p.locator("#rows tr[data-name]")).to_have_count(6)
    p.evaluate("window.__marker = 'same page'")
    p.select_option("#f-phase", "Failed")
    expect(p.locator("#rows tr[data-name]")).to_have_count(2)
    assert row_names(p) == ["oom-payment-api", "xss-probe"]
    for phase in p.locator("#rows .col-phase .badge").all_text_contents():
        assert phase == "Failed"
    assert query_of(p) == {"phase": ["Failed"]}
    expect(p.locator("#result-count")).to_have_text("2 of 6 executions")
    expect(p.locator("#f-clear")).to_be_visible()
    expect(p.locator('a.count[data-value="Failed"]')).to_have_class(re.compile(r"\bactive\b"))
    # combine with health, then clear everything
    p.select_option("#f-health", "Degraded")
    assert query_of(p) == {"phase": ["Failed"], "health": ["Degraded"]}
    p.click("#f-clear")
    expect(p.locator("#rows tr[data-name]")).to_have_count(6)
    assert urlsplit(p.url).query == ""
    # the count chips filter too, and a second click clears
    p.click('a.count[data-value="Skipped"]')
    expect(p.locator("#rows tr[data-name]")).to_have_count(1)
    assert query_of(p) == {"phase": ["Skipped"]}
    expect(p.locator("#f-phase")).to_have_value("Skipped")
    p.click('a.count[data-value="Skipped"]')
    expect(p.locator("#rows tr[data-name]")).to_have_count(6)
    assert p.evaluate("window.__marker") == "same page", "filtering must not reload the page"
    watch.check(p)


def test_shared_filtered_link_opens_filtered(page: tuple[Any, Watch], server: ServerThread) -> None:
    p, watch = page
    p.goto(server.url + "/?sync=OutOfSync")
    expect(p.locator("#rows tr[data-name]")).to_have_count(1)
    assert row_names(p) == ["scale-search"]
    expect(p.locator("#f-sync")).to_have_value("OutOfSync")
    p.goto(server.url + "/?q=team%3Dpayments")
    expect(p.locator("#f-q")).to_have_value("team=payments")
    assert row_names(p) == ["oom-payment-api"]
    watch.check(p)


def test_text_search(page: tuple[Any, Watch], server: ServerThread) -> None:
    p, watch = page
    p.goto(server.url + "/")
    expect(p.locator("#rows tr[data-name]")).to_have_count(6)
    p.fill("#f-q", "postgres")
    expect(p.locator("#rows tr[data-name]")).to_have_count(1)
    assert row_names(p) == ["db-failover"]
    assert query_of(p) == {"q": ["postgres"]}
    p.fill("#f-q", "team=shop")  # a label
    expect(p.locator("#rows tr[data-name]")).to_have_count(1)
    assert row_names(p) == ["restart-checkout"]
    p.fill("#f-q", "restart-pods@2")  # a workflow
    assert row_names(p) == ["restart-checkout"]
    p.fill("#f-q", "no such thing")
    expect(p.locator("#rows tr.empty")).to_have_text("No executions match these filters.")
    p.fill("#f-q", "")
    expect(p.locator("#rows tr[data-name]")).to_have_count(6)
    # "/" focuses the search box
    p.locator("body").click(position={"x": 5, "y": 300})
    p.keyboard.press("/")
    expect(p.locator("#f-q")).to_be_focused()
    watch.check(p)


def test_failed_detail_page(page: tuple[Any, Watch], server: ServerThread) -> None:
    p, watch = page
    p.goto(server.url + "/")
    p.click('tr[data-name="oom-payment-api"] a.name')
    p.wait_for_url(server.url + "/executions/oom-payment-api")
    expect(p.locator("#failure-summary")).to_have_text(NL_SUMMARY)
    expect(p.locator("#failure-summary")).to_be_visible()
    expect(p.locator("#timeline tbody tr")).to_have_count(3)
    expect(p.locator("#timeline tbody tr").last.locator("code.sha")).to_have_text("c3d4e5f")
    expect(p.locator("#status-commits li")).to_have_count(3)
    expect(p.locator("#spec")).to_contain_text("kind: WorkflowExecution")
    p.click("summary")
    expect(p.locator("#rendered")).to_contain_text("kind: PipelineRun")
    ARTIFACTS.mkdir(exist_ok=True)
    p.screenshot(path=str(ARTIFACTS / "dashboard-detail-failed.png"), full_page=True)
    watch.check(p)


def test_xss_payloads_stay_text(page: tuple[Any, Watch], server: ServerThread) -> None:
    p, watch = page
    p.goto(server.url + "/")
    row = p.locator('tr[data-name="xss-probe"]')
    expect(row).to_have_count(1)
    text = row.text_content() or ""
    assert XSS_SCRIPT in text
    assert XSS_IMG in text
    assert XSS_CLOSE in text
    # the payloads created no elements
    assert row.locator("script, img, svg, style, iframe").count() == 0
    assert p.locator("body script").count() == 1  # only the JSON island
    # filtering by a payload re-renders it, still as text
    p.fill("#f-q", "<script>alert(1)</script>")
    expect(p.locator("#rows tr[data-name]")).to_have_count(1)
    p.goto(server.url + "/executions/xss-probe")
    body = p.locator("main").text_content() or ""
    assert XSS_SCRIPT in body and XSS_CLOSE in body and XSS_IMG in body
    assert p.locator("main script, main img, main iframe, main style").count() == 0
    assert p.locator("main svg").count() == 0
    p.click("summary")
    expect(p.locator("#rendered")).to_contain_text(XSS_SCRIPT)
    p.wait_for_timeout(300)  # give a stray onerror/onload time to fire
    watch.check(p)


def test_refresh_updates_rows_without_reloading(page: tuple[Any, Watch], server: ServerThread,
                                                source: FakeSource) -> None:
    p, watch = page
    p.goto(server.url + "/?q=team%3Ddata")
    running = p.locator('tr[data-name="db-failover"]')
    expect(running.locator(".col-phase .badge")).to_have_text("Running")
    expect(p.locator("#repo-health")).to_have_text("Degraded")
    p.evaluate("window.__marker = 'before refresh'")
    source.update("db-failover", phase="Completed", reason="Succeeded", health="Healthy", duration="3m05s",
                  completionTime="2026-11-22T04:31:00Z", message="all 5 tasks succeeded")
    source.update("oom-payment-api", phase="Completed", health="Healthy")
    source.update("xss-probe", phase="Completed", health="Healthy")
    expect(running.locator(".col-phase .badge")).to_have_text("Completed")
    expect(running.locator(".col-health .badge")).to_have_class(re.compile(r"\bhealth-Healthy\b"))
    expect(running.locator(".col-duration")).to_have_text("3m05s")
    p.wait_for_function("document.querySelector('#repo-health').textContent === 'Suspended'")
    expect(p.locator('[data-count="phases.Completed"]')).to_have_text("4")
    assert p.evaluate("window.__marker") == "before refresh", "the page reloaded"
    assert query_of(p) == {"q": ["team=data"]}, "refresh keeps the filters"
    # a row that stops matching the filters leaves; new executions appear, removed ones go
    source.update("db-failover", labels={"team": "db"})
    expect(p.locator("#rows tr.empty")).to_have_text("No executions match these filters.")
    p.fill("#f-q", "")
    expect(p.locator("#rows tr[data-name]")).to_have_count(6)
    source.remove("rotate-certs")
    source.add(_detail(_row("new-remediation", phase="Pending", reason="Accepted", health="Progressing",
                            sync="OutOfSync", run="", duration="")))
    expect(p.locator('tr[data-name="new-remediation"] .col-sync .badge')).to_have_text("OutOfSync")
    expect(p.locator('tr[data-name="rotate-certs"]')).to_have_count(0)
    expect(p.locator("#result-count")).to_have_text("6 of 6 executions")
    assert p.evaluate("window.__marker") == "before refresh"
    watch.check(p)


def test_refresh_survives_an_unavailable_server(page: tuple[Any, Watch], server: ServerThread,
                                                source: FakeSource) -> None:
    p, watch = page
    p.goto(server.url + "/")
    expect(p.locator("#rows tr[data-name]")).to_have_count(6)
    original = source.executions

    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("git unreachable")

    source.executions = broken  # type: ignore[method-assign]
    expect(p.locator("#refresh-state")).to_contain_text("retrying")
    expect(p.locator("#rows tr[data-name]")).to_have_count(6)  # the last good rows stay
    source.executions = original  # type: ignore[method-assign]
    expect(p.locator("#refresh-state")).to_have_text("")
    watch.errors = [e for e in watch.errors if "503" not in e]  # the failed fetches are logged by the browser
    watch.check(p)


def test_unknown_execution_page(page: tuple[Any, Watch], server: ServerThread) -> None:
    p, watch = page
    response = p.goto(server.url + "/executions/does-not-exist")
    assert response is not None and response.status == 404
    expect(p.locator("h1")).to_have_text("Not found")
    watch.errors = [e for e in watch.errors if "404" not in e]
    watch.check(p)


def test_dark_mode_renders(browser: Any, server: ServerThread) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="dark")
    try:
        p = context.new_page()
        p.goto(server.url + "/")
        expect(p.locator("#rows tr[data-name]")).to_have_count(6)
        background = p.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(15, 20, 27)"
        ARTIFACTS.mkdir(exist_ok=True)
        p.screenshot(path=str(ARTIFACTS / "dashboard-list-dark.png"), full_page=True)
    finally:
        context.close()


def test_narrow_screen(browser: Any, server: ServerThread) -> None:
    context = browser.new_context(viewport={"width": 420, "height": 900}, color_scheme="light")
    try:
        p = context.new_page()
        p.goto(server.url + "/")
        expect(p.locator("#rows tr[data-name]")).to_have_count(6)
        expect(p.locator('tr[data-name="db-failover"] .col-run')).to_be_hidden()
        width = p.evaluate("document.documentElement.scrollWidth")
        assert width <= 420, "the page itself must not scroll sideways (the table scrolls in its box)"
        ARTIFACTS.mkdir(exist_ok=True)
        p.screenshot(path=str(ARTIFACTS / "dashboard-list-narrow.png"), full_page=True)
    finally:
        context.close()
