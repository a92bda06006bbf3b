"""The flag dashboard at ``/ui``, end to end in headless Chromium (Playwright, Debian's chromium).

Set ``DASHBOARD_SCREENSHOT=path.png`` to save the screenshot the README shows.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import wait_for

from phaseflag import EvaluationContext
from phaseflag._compile import load_ruleset
from phaseflag._evaluation import explain
from phaseflag.server import PhaseFlagServer

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

KEY = "dashboard-key-4d5e6f70"
SAMPLE = Path(__file__).resolve().parents[1] / "bootstrap_samples" / "ruleset.json"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def ruleset_path(tmp_path: Path) -> Path:
    path = tmp_path / "ruleset.json"
    shutil.copyfile(SAMPLE, path)
    return path


@pytest.fixture
def server(ruleset_path: Path) -> Iterator[PhaseFlagServer]:
    with PhaseFlagServer(ruleset_path, api_keys=[KEY], ui=True, poll_interval=0.05) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def root(server: PhaseFlagServer) -> str:
    return server.url.removesuffix("/api/v1")


def connect(page: Any, server: PhaseFlagServer, key: str = KEY) -> None:
    page.goto(root(server) + "/ui")
    page.fill("#key", key)
    page.click("#key-form button")


def test_off_unless_enabled(ruleset_path: Path):
    """Without ``ui=True`` (``--ui``) there is no /ui at all."""
    with PhaseFlagServer(ruleset_path, api_keys=[KEY]) as srv:
        assert requests.get(root(srv) + "/ui", timeout=5).status_code == 404
        assert requests.get(root(srv) + "/ui/api/flags", timeout=5).status_code == 404


def test_shows_nothing_without_the_key(server: PhaseFlagServer, page: Any):
    """The page holds no data; a wrong key is refused and no flag is drawn."""
    page.goto(root(server) + "/ui")
    assert page.locator("#locked").is_visible()
    assert page.locator("article.flag").count() == 0
    assert "new-checkout-flow" not in page.content()
    connect(page, server, key="wrong-key-000000")
    page.wait_for_selector("#status.error")
    assert "refused" in page.inner_text("#status")
    assert page.locator("article.flag").count() == 0 and not page.locator("#app").is_visible()
    assert requests.get(root(server) + "/ui/api/flags", timeout=5).status_code == 401


def test_every_flag_with_type_state_rules_targets_and_rollout(server: PhaseFlagServer, page: Any):
    """Each flag: its type and on/off, rules in words, targets and the rollout as a bar."""
    connect(page, server)
    page.wait_for_selector("article.flag")
    document = json.loads(SAMPLE.read_text("utf-8"))
    assert page.locator("article.flag").count() == len(document["flags"])
    for flag in document["flags"]:
        card = page.locator(f'article.flag[data-flag="{flag["key"]}"]')
        text = card.inner_text()
        assert flag["type"] in text
        assert ("off" if flag.get("enabled") is False else "on") in text
    checkout = page.locator('article.flag[data-flag="new-checkout-flow"]').inner_text()
    assert 'if plan is one of "pro", "enterprise" then serve enabled' in checkout
    assert "users user-1, user-2 get enabled" in checkout
    assert "requires checkout-v2-backend to serve on" in checkout
    bar = page.locator('article.flag[data-flag="new-checkout-flow"] .bar span')
    widths = [bar.nth(i).evaluate("e => e.style.width") for i in range(bar.count())]
    assert widths == ["10%", "90%"]
    assert (
        page.locator('article.flag[data-flag="new-checkout-flow"] .bar span').first.bounding_box()[
            "width"
        ]
        > 0
    )


def test_evaluate_panel_shows_value_reason_variation_trace_and_bucket(
    server: PhaseFlagServer, page: Any
):
    """The panel's answer is the evaluator's: value, reason, variation, explain, bucket."""
    connect(page, server)
    page.wait_for_selector("article.flag")
    page.select_option("#eval-flag", "ui-theme")
    page.fill("#eval-user", "user-123")
    page.fill("#eval-attrs", '{"app_version": "1.0.0"}')
    page.click("#evaluate-form button")
    page.wait_for_selector("#eval-trace li")
    expected = explain(
        load_ruleset(SAMPLE.read_bytes()),
        "ui-theme",
        EvaluationContext(user_id="user-123", attributes={"app_version": "1.0.0"}),
    )
    assert page.inner_text("#eval-value") == json.dumps(expected.result.value)
    assert page.inner_text("#eval-reason") == expected.result.reason == "percentage_rollout"
    assert page.inner_text("#eval-variation") == expected.result.variation_key
    bucket = next(step["bucket"] for step in expected.steps if step["step"] == "rollout")
    assert page.inner_text("#eval-bucket") == f"{bucket} of 100000"
    trace = page.locator("#eval-trace li").all_inner_texts()
    assert trace == expected.lines()


def test_evaluation_counts_from_sdk_summaries(server: PhaseFlagServer, page: Any):
    """Summaries posted by SDKs are drawn per flag and variation, and grow live."""
    connect(page, server)
    page.wait_for_selector("article.flag")
    summary = {
        "kind": "summary",
        "start": 1,
        "end": 2,
        "counters": [
            {"flag_key": "new-checkout-flow", "variation_key": "enabled", "count": 30},
            {"flag_key": "new-checkout-flow", "variation_key": "disabled", "count": 70},
        ],
    }
    resp = requests.post(
        server.url + "/sdk/events",
        json={"events": [summary]},
        headers={"X-API-Key": KEY},
        timeout=5,
    )
    assert resp.status_code == 202
    row = page.locator('[data-counts="new-checkout-flow"]')
    row.wait_for()
    assert "100 evaluations" in row.inner_text()
    assert "enabled: 30" in row.inner_text() and "disabled: 70" in row.inner_text()
    widths = row.locator(".bar span").evaluate_all("spans => spans.map(s => s.style.width)")
    assert widths == ["70%", "30%"]  # the most served first
    requests.post(
        server.url + "/sdk/events",
        json={"events": [summary]},
        headers={"X-API-Key": KEY},
        timeout=5,
    )
    page.wait_for_function(
        "() => document.querySelector('[data-counts=\"new-checkout-flow\"]')"
        ".innerText.includes('200 evaluations')"
    )
    if target := os.environ.get("DASHBOARD_SCREENSHOT"):
        page.select_option("#eval-flag", "new-checkout-flow")
        page.fill("#eval-user", "user-42")
        page.fill("#eval-attrs", '{"plan": "free", "country": "US"}')
        page.click("#evaluate-form button")
        page.wait_for_selector("#eval-trace li")
        page.screenshot(path=target, full_page=True)


def test_updates_live_when_the_file_changes(server: PhaseFlagServer, ruleset_path: Path, page: Any):
    """Turning a flag on in the file shows in the open page without a reload."""
    connect(page, server)
    card = page.locator('article.flag[data-flag="legacy-export"]')
    card.wait_for()
    assert "off" in card.locator(".badge").all_inner_texts()
    document = json.loads(ruleset_path.read_text("utf-8"))
    document["version"] += 1
    for flag in document["flags"]:
        if flag["key"] == "legacy-export":
            flag["enabled"] = True
    ruleset_path.write_text(json.dumps(document), "utf-8")
    wait_for(lambda: server.ruleset.version == document["version"], timeout=5)
    page.wait_for_function(
        "() => [...document.querySelectorAll('article.flag[data-flag=\"legacy-export\"] .badge')]"
        ".some(b => b.textContent === 'on')"
    )
    assert f"ruleset version {document['version']}" in page.inner_text("#summary")
