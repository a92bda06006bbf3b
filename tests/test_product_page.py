"""Every snippet of the product page (the PhaseFlag Python SDK page) runs as shown.

The page is a promise to users, so its snippets are kept here verbatim (``PAGE``) and run
in order in one namespace, as a reader would paste them. The page's API URL and key are
served by a real ``PhaseFlagServer`` on loopback holding the sample ruleset; its example
paths and CDN URLs point at the sample file and that server. Names the page leaves to the
reader (``render_new_checkout``, ``apply_theme``) are stubs. Nothing else is changed.
When the page itself is at hand (``../shared/seeds/001_*``) each snippet is checked to
still be on it word for word, so this copy cannot drift from what users read.
"""

from __future__ import annotations

import atexit
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from phaseflag import PhaseFlagClient
from phaseflag.server import PhaseFlagServer

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "bootstrap_samples" / "ruleset.json"
PAGE_FILES = sorted((ROOT.parent / "shared" / "seeds").glob("001_*"))
PAGE_URL = "https://api.phaseflag.com/api/v1"
PAGE_KEY = "sdk-dev-xxxxxxxxxxxx"

#: The page's ```python snippets, in page order, by section title; verbatim.
PAGE: dict[str, str] = {
    "Initialization": """\
from phaseflag import PhaseFlagClient

client = PhaseFlagClient(
    base_url="https://api.phaseflag.com/api/v1",  # including /api/v1
    api_key="sdk-dev-xxxxxxxxxxxx",
    polling_interval=30.0,   # seconds between ruleset fetches (default: 30)
)

# Fetch initial ruleset and start background threads
client.start()

# Block until the first ruleset fetch completes (timeout in seconds)
client.wait_until_ready(timeout=5.0)
""",
    "Boolean flag": """\
from phaseflag import EvaluationContext

context = EvaluationContext(user_id="user-123")

# Returns False if flag is off, not found, or not boolean
enabled = client.get_boolean_value("new-checkout-flow", False, context)

if enabled:
    render_new_checkout()
else:
    render_legacy_checkout()
""",
    "String flag": """\
theme = client.get_string_value("ui-theme", "light", context)
# Returns "dark", "light", or "system"
apply_theme(theme)
""",
    "JSON flag": """\
config = client.get_json_value("checkout-config", {"provider": "stripe"}, context)
# Returns a dict, e.g. {"showPromoCode": True, "maxItems": 10, "provider": "stripe"}
print(config["provider"])
""",
    "Full evaluation result": """\
result = client.get_variation("new-checkout-flow", context)

if result:
    print(result.value)          # True
    print(result.reason)         # "targeting_match" | "percentage_rollout" | "default"
    print(result.variation_key)  # "enabled"
""",
    "EvaluationContext": """\
from phaseflag import EvaluationContext

context = EvaluationContext(
    user_id="user-123",           # used for percentage rollout bucketing
    session_id="sess-abc",        # fallback when user_id is not available
    attributes={
        "email": "alice@example.com",
        "plan": "pro",
        "country": "US",
        "app_version": "2.4.1",
        "account_age": 365,
    },
)

enabled = client.get_boolean_value("beta-feature", False, context)
""",
    "Context Manager": """\
from phaseflag import PhaseFlagClient, EvaluationContext

with PhaseFlagClient(
    base_url="https://api.phaseflag.com/api/v1",
    api_key="sdk-dev-xxxxxxxxxxxx",
) as client:
    client.wait_until_ready(timeout=5.0)
    context = EvaluationContext(user_id="user-123")
    result = client.get_boolean_value("my-flag", False, context)
    print(result)
# Client is automatically stopped and events flushed on exit
""",
    "FastAPI Integration": """\
from contextlib import asynccontextmanager
from fastapi import FastAPI, Request
from phaseflag import PhaseFlagClient, EvaluationContext

pf_client: PhaseFlagClient

@asynccontextmanager
async def lifespan(app: FastAPI):
    global pf_client
    pf_client = PhaseFlagClient(
        base_url="https://api.phaseflag.com/api/v1",
        api_key="sdk-dev-xxxxxxxxxxxx",
    )
    pf_client.start()
    pf_client.wait_until_ready(timeout=10.0)
    yield
    pf_client.stop()

app = FastAPI(lifespan=lifespan)

@app.get("/checkout")
async def checkout(request: Request, user_id: str):
    context = EvaluationContext(
        user_id=user_id,
        attributes={"plan": request.headers.get("X-User-Plan", "free")},
    )
    use_new_flow = pf_client.get_boolean_value("new-checkout-flow", False, context)
    return {"flow": "new" if use_new_flow else "legacy"}
""",
    "Listen for Flag Changes": """\
def on_flags_changed(flags: dict) -> None:
    print(f"Ruleset updated: {len(flags)} flags loaded")
    # Re-evaluate and update your application state

unsubscribe = client.on_flags_changed(on_flags_changed)

# Remove the listener later
unsubscribe()
""",
    "Flag Mocking (Testing)": """\
from phaseflag import PhaseFlagClient

# Empty base_url disables HTTP — safe for unit tests
client = PhaseFlagClient(base_url="", api_key="")

client.set_override("new-checkout-flow", True)
assert client.get_boolean_value("new-checkout-flow", False) is True

client.clear_override("new-checkout-flow")
client.clear_all_overrides()
""",
    "Bootstrap Loading": """\
# From a local file (useful for tests or edge environments)
client = PhaseFlagClient(
    base_url="https://api.phaseflag.com/api/v1",
    api_key="sdk-dev-xxxxxxxxxxxx",
    bootstrap_file="/etc/phaseflag/bootstrap.json",
)

# From a URL (e.g., your own CDN endpoint)
client = PhaseFlagClient(
    base_url="https://api.phaseflag.com/api/v1",
    api_key="sdk-dev-xxxxxxxxxxxx",
    bootstrap_url="https://cdn.example.com/flags/bootstrap.json",
)
""",
    "Offline Mode": """\
client = PhaseFlagClient(
    base_url="https://api.phaseflag.com/api/v1",
    api_key="sdk-dev-xxxxxxxxxxxx",
    offline_mode=True,
    bootstrap_file="/etc/phaseflag/bootstrap.json",
)
client.start()
# If the API is unreachable, the client will use the bootstrap data and
# become ready immediately.
""",
    "Remote Evaluation": """\
result = client.evaluate(
    flag_key="new-checkout-flow",
    ctx=EvaluationContext(user_id="user-123"),
)

print(result.value)   # True
print(result.reason)  # "targeting_match"
""",
    "Event Tracking": """\
from phaseflag.types import EvaluationEvent

client.track_event(EvaluationEvent(
    flag_key="new-checkout-flow",
    variation_key="enabled",
    user_id="user-123",
    metadata={"page": "checkout"},
))

# Flush all queued events immediately
client.flush_events()
""",
    "Configuration Reference": """\
from phaseflag import PhaseFlagClient

client = PhaseFlagClient(
    base_url="https://api.phaseflag.com/api/v1",  # required
    api_key="sdk-dev-xxxxxxxxxxxx",              # required
    polling_interval=30.0,                        # seconds between ruleset fetches
    event_flush_interval=30.0,                    # seconds between event flushes
    event_batch_size=100,                         # max events before auto-flush
    bootstrap_file="/path/to/bootstrap.json",     # optional
    bootstrap_url="https://cdn.example.com/b.json", # optional
    offline_mode=False,                           # use bootstrapped data if API is down
)
""",
    "Cleanup": """\
import atexit

client = PhaseFlagClient(
    base_url="https://api.phaseflag.com/api/v1",
    api_key="sdk-dev-xxxxxxxxxxxx",
)
client.start()

atexit.register(client.stop)
""",
}


def test_snippets_are_the_pages_own() -> None:
    """Each kept snippet is on the product page word for word (when the page is at hand)."""
    if not PAGE_FILES:
        pytest.skip("the product page (../shared/seeds/001_*) is not next to this checkout")
    text = PAGE_FILES[0].read_text(encoding="utf-8")
    for title, code in PAGE.items():
        assert f"{title}\n" in text, title
        assert code.strip() in text, f"the page's {title!r} snippet changed: update PAGE"
    assert text.count("\npython\n") == len(PAGE), "a snippet was added to the page"


class Page:
    """Runs snippets the way a reader would: one namespace, page URLs served locally."""

    def __init__(self, url: str, calls: list[str]) -> None:
        self.replacements = {
            PAGE_URL: url,
            "/etc/phaseflag/bootstrap.json": str(SAMPLE),
            "/path/to/bootstrap.json": str(SAMPLE),
            "https://cdn.example.com/flags/bootstrap.json": f"{url}/sdk/ruleset",
            "https://cdn.example.com/b.json": f"{url}/sdk/ruleset",
        }

        def stub(name: str) -> Callable[..., None]:
            return lambda *args: calls.append(name)

        self.ns: dict[str, Any] = {
            "__name__": "product_page",
            **{name: stub(name) for name in ("render_new_checkout", "render_legacy_checkout")},
            "apply_theme": lambda theme: calls.append(f"apply_theme({theme})"),
        }

    def run(self, *titles: str) -> dict[str, Any]:
        for title in titles:
            code = PAGE[title]
            for old, new in self.replacements.items():
                code = code.replace(old, new)
            exec(compile(code, f"product page: {title}", "exec"), self.ns)
        return self.ns


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[PhaseFlagClient]]:
    """Every client a snippet makes, stopped after the test; ready waits must succeed."""
    made: list[PhaseFlagClient] = []
    real_init, real_wait = PhaseFlagClient.__init__, PhaseFlagClient.wait_until_ready

    def init(self: PhaseFlagClient, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        real_init(self, *args, **kwargs)

    def wait(self: PhaseFlagClient, timeout: float = 5.0) -> bool:
        ready = real_wait(self, timeout)
        assert ready, "the page's wait_until_ready timed out against the local server"
        return ready

    monkeypatch.setattr(PhaseFlagClient, "__init__", init)
    monkeypatch.setattr(PhaseFlagClient, "wait_until_ready", wait)
    yield made
    for client in made:
        client.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PhaseFlagServer]:
    with PhaseFlagServer(
        SAMPLE, api_keys=[PAGE_KEY], events_out=str(tmp_path / "events.jsonl")
    ) as running:
        yield running


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
def page(server: PhaseFlagServer, calls: list[str], clients: list[PhaseFlagClient]) -> Page:
    return Page(server.url, calls)


@pytest.mark.e2e
def test_initialization_and_evaluation(
    page: Page, calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Start, wait, then each getter the page shows returns what its comment promises."""
    ns = page.run("Initialization", "Boolean flag", "String flag", "JSON flag")
    assert ns["client"].status().ruleset_version is not None
    assert ns["enabled"] is False and calls[0] == "render_legacy_checkout"  # user-123: default
    assert ns["theme"] in ("dark", "light", "system") and calls[1] == f"apply_theme({ns['theme']})"
    assert set(ns["config"]) == {"showPromoCode", "maxItems", "provider"}
    page.run("Full evaluation result", "EvaluationContext")
    assert ns["result"].reason in ("targeting_match", "percentage_rollout", "default")
    assert ns["result"].variation_key in ("enabled", "disabled")
    assert isinstance(ns["enabled"], bool)
    assert capsys.readouterr().out.startswith("stripe\n")


@pytest.mark.e2e
def test_context_manager_starts_and_stops(
    page: Page, clients: list[PhaseFlagClient], capsys: pytest.CaptureFixture[str]
) -> None:
    """``with PhaseFlagClient(...)`` starts the client (ready in time) and stops it on exit."""
    page.run("Context Manager")
    assert capsys.readouterr().out == "False\n"
    (client,) = clients
    assert client.status().state == "stopped"


@pytest.mark.e2e
def test_fastapi_integration(page: Page) -> None:
    """The lifespan starts the client and the route serves each plan its flow."""
    testclient = pytest.importorskip("fastapi.testclient")
    app = page.run("FastAPI Integration")["app"]
    with testclient.TestClient(app) as http:
        pro = http.get("/checkout", params={"user_id": "user-123"}, headers={"X-User-Plan": "pro"})
        free = http.get("/checkout", params={"user_id": "user-123"})
    assert pro.json() == {"flow": "new"}  # the sample's paid-plans rule
    assert free.json() == {"flow": "legacy"}


@pytest.mark.e2e
def test_listener_bootstrap_and_configuration(page: Page) -> None:
    """Subscribing and unsubscribing, both bootstrap forms and the full option set construct."""
    ns = page.run("Initialization", "Listen for Flag Changes")
    assert callable(ns["unsubscribe"])
    page.run("Bootstrap Loading", "Configuration Reference")
    assert ns["client"].get_boolean_value("new-checkout-flow", False) is False
    assert ns["client"].status().ruleset_version == 42  # the bootstrap file, before start()


@pytest.mark.e2e
def test_flag_mocking(page: Page) -> None:
    """The page's override snippet runs (its own asserts check the override)."""
    page.run("Flag Mocking (Testing)")


@pytest.mark.e2e
def test_offline_mode_is_ready_at_once_when_the_api_is_unreachable(
    calls: list[str], clients: list[PhaseFlagClient]
) -> None:
    """Offline mode with the API down: ready immediately, serving the bootstrap file."""
    with socket.socket() as sock:  # a loopback port nothing listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    page = Page(f"http://127.0.0.1:{port}/api/v1", calls)
    client = page.run("Flag Mocking (Testing)", "Offline Mode")["client"]  # the first imports
    assert client.wait_until_ready(timeout=0)
    assert client.status().ruleset_source == "bootstrap"
    assert client.status().ruleset_version == 42  # the sample file's version


@pytest.mark.e2e
def test_remote_evaluation_and_events(
    page: Page, server: PhaseFlagServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """evaluate() asks the server; a tracked event reaches it on flush_events()."""
    ns = page.run("Initialization", "Boolean flag", "Remote Evaluation")
    result = ns["result"]
    assert result.error_message is None, result.error_message  # answered remotely
    assert (result.value, result.reason) == (False, "default")  # user-123 has no plan
    assert capsys.readouterr().out == "False\ndefault\n"
    page.run("Event Tracking")
    sent = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert any(event.get("metadata") == {"page": "checkout"} for event in sent), sent


@pytest.mark.e2e
def test_cleanup_registers_stop_at_exit(
    page: Page, clients: list[PhaseFlagClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``atexit.register(client.stop)`` registers the client's stop (run here, not at exit)."""
    registered: list[Callable[[], Any]] = []
    monkeypatch.setattr(atexit, "register", registered.append)
    page.run("Initialization", "Cleanup")
    (stop,) = registered
    assert stop == clients[-1].stop
    stop()


def test_the_pages_install_name_is_the_distributions() -> None:
    """``pip install phaseflag-sdk`` (the page's first command) names this distribution."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '\nname = "phaseflag-sdk"\n' in pyproject
    assert 'include = ["phaseflag*"]' in pyproject  # and it installs the package imported


@pytest.mark.e2e
def test_bootstrap_url_serves_when_the_api_is_unreachable(
    calls: list[str], clients: list[PhaseFlagClient]
) -> None:
    """The page's bootstrap_url client, its API refusing connections, serves the CDN's flags
    (fetched once, after the first live fetch brought nothing)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with PhaseFlagServer(SAMPLE) as cdn:  # an open server: a CDN sends no key
        page = Page(f"http://127.0.0.1:{port}/api/v1", calls)
        page.replacements["https://cdn.example.com/flags/bootstrap.json"] = f"{cdn.url}/sdk/ruleset"
        client = page.run("Flag Mocking (Testing)", "Bootstrap Loading")["client"]
        loaded = threading.Event()
        client.on_flags_changed(lambda flags: loaded.set())
        client.start()
        assert loaded.wait(10), "bootstrap_url was not loaded after the failed live fetch"
    assert client.status().ruleset_source == "bootstrap"
    assert client.status().ruleset_version == 42
    assert not client.status().ready  # without offline_mode, ready waits for the API itself
