"""Flask, Django and ASGI (Starlette/FastAPI) middleware: one context and ruleset per request."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from phaseflag import EvaluationContext, PhaseFlagClient
from phaseflag.testing import create_mock_client, flag, ruleset


def doc(version: int, flow: str) -> dict[str, Any]:
    return ruleset(
        flag("flow", flow),
        flag(
            "who",
            variations={"u1": "u1", "u2": "u2", "x": "x"},
            default="x",
            targets={"u1": ["u1"], "u2": ["u2"]},
        ),
        version=version,
    )


def swap(client: PhaseFlagClient, flow: str) -> None:
    version = client.ruleset.version + 1
    client._store.apply_document(json.dumps(doc(version, flow)).encode(), "live")


@pytest.fixture
def client() -> Iterator[PhaseFlagClient]:
    c = create_mock_client(bootstrap=doc(1, "legacy"))
    yield c
    c.stop()


def user_context(user: str | None) -> EvaluationContext | None:
    return EvaluationContext(user_id=user) if user else None


class TestFlask:
    @pytest.fixture
    def app(self, client: PhaseFlagClient) -> Any:
        flask = pytest.importorskip("flask")
        from phaseflag.integrations.flask import init_app

        app = flask.Flask(__name__)
        init_app(app, client, lambda request: user_context(request.headers.get("X-User")))
        gate: dict[str, threading.Barrier] = {}

        @app.get("/swap")
        def swap_mid_request() -> Any:
            first = client.get_string_value("flow", "?")
            swap(client, "new")
            return {"first": first, "second": client.get_string_value("flow", "?")}

        @app.get("/who")
        def who() -> Any:
            seen = []
            for _ in range(3):
                gate["barrier"].wait()
                seen.append(client.get_string_value("who", "?"))
            return {"seen": seen}

        app.config["gate"] = gate
        return app

    def test_two_reads_agree_across_a_swap(self, app: Any, client: PhaseFlagClient) -> None:
        http = app.test_client()
        assert http.get("/swap").get_json() == {"first": "legacy", "second": "legacy"}
        assert http.get("/swap").get_json() == {"first": "new", "second": "new"}

    def test_concurrent_requests_in_threads_keep_their_context(self, app: Any) -> None:
        app.config["gate"]["barrier"] = threading.Barrier(6, timeout=30)

        def request(i: int) -> tuple[str, list[str]]:
            user = f"u{1 + i % 2}"
            response = app.test_client().get("/who", headers={"X-User": user})
            return user, response.get_json()["seen"]

        with ThreadPoolExecutor(6) as pool:
            for user, seen in pool.map(request, range(6)):
                assert seen == [user] * 3

    def test_no_scope_left_after_the_request(self, app: Any, client: PhaseFlagClient) -> None:
        app.config["gate"]["barrier"] = threading.Barrier(1)
        assert app.test_client().get("/who", headers={"X-User": "u1"}).get_json() == {
            "seen": ["u1"] * 3
        }
        assert client.get_string_value("who", "?") == "x"


_django_client: dict[str, PhaseFlagClient] = {}


def _django_setup() -> Any:
    pytest.importorskip("django")
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=True,
            SECRET_KEY="test-only",
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["testserver"],
            MIDDLEWARE=[f"{__name__}.DjangoFlagMiddleware"],
            INSTALLED_APPS=[],
        )
        django.setup()
    return django


class _Forward:
    """MIDDLEWARE entry resolving to the middleware built for the current test's client."""

    def __new__(cls, get_response: Any) -> Any:  # type: ignore[misc]
        from phaseflag.integrations.django import make_middleware

        middleware = make_middleware(
            _django_client["client"], lambda request: user_context(request.headers.get("X-User"))
        )
        return middleware(get_response)


DjangoFlagMiddleware = _Forward


def _django_swap_view(request: Any) -> Any:
    from django.http import JsonResponse

    client = _django_client["client"]
    first = client.get_string_value("flow", "?")
    swap(client, "new")
    return JsonResponse({"first": first, "second": client.get_string_value("flow", "?")})


def _django_who_view(request: Any) -> Any:
    from django.http import JsonResponse

    return JsonResponse({"who": _django_client["client"].get_string_value("who", "?")})


async def _django_async_who_view(request: Any) -> Any:
    from django.http import JsonResponse

    await asyncio.sleep(0)
    return JsonResponse({"who": _django_client["client"].get_string_value("who", "?")})


def _urlpatterns() -> list[Any]:
    try:
        from django.urls import path
    except ImportError:
        return []
    return [
        path("swap", _django_swap_view),
        path("who", _django_who_view),
        path("async-who", _django_async_who_view),
    ]


urlpatterns = _urlpatterns()


class TestDjango:
    @pytest.fixture(autouse=True)
    def _setup(self, client: PhaseFlagClient) -> Iterator[None]:
        _django_setup()
        _django_client["client"] = client
        yield
        _django_client.clear()

    def test_two_reads_agree_across_a_swap(self) -> None:
        from django.test import Client

        http = Client()
        assert http.get("/swap").json() == {"first": "legacy", "second": "legacy"}
        assert http.get("/swap").json() == {"first": "new", "second": "new"}

    def test_context_from_the_request(self, client: PhaseFlagClient) -> None:
        from django.test import Client

        assert Client().get("/who", headers={"X-User": "u2"}).json() == {"who": "u2"}
        assert Client().get("/who").json() == {"who": "x"}
        assert client.get_string_value("who", "?") == "x"

    def test_async_stack(self) -> None:
        from django.test import AsyncClient

        async def main() -> list[Any]:
            http = AsyncClient()
            responses = await asyncio.gather(
                http.get("/async-who", headers={"X-User": "u1"}),
                http.get("/async-who", headers={"X-User": "u2"}),
            )
            return [r.json()["who"] for r in responses]

        assert asyncio.run(main()) == ["u1", "u2"]


class TestASGI:
    @pytest.fixture
    def app(self, client: PhaseFlagClient) -> Any:
        pytest.importorskip("fastapi")
        from fastapi import FastAPI

        from phaseflag.integrations.asgi import PhaseFlagMiddleware

        app = FastAPI()
        app.add_middleware(
            PhaseFlagMiddleware,
            client=client,
            context=lambda request: user_context(request.headers.get("x-user")),
        )
        app.state.entered = {}
        app.state.go = None

        @app.get("/swap")
        def swap_mid_request() -> dict[str, str]:  # a sync endpoint: runs in the thread pool
            first = client.get_string_value("flow", "?")
            swap(client, "new")
            return {"first": first, "second": client.get_string_value("flow", "?")}

        @app.get("/who")
        async def who(user: str) -> dict[str, list[str]]:
            seen = [client.get_string_value("who", "?")]
            app.state.entered[user].set()
            await app.state.go.wait()  # the other request runs meanwhile
            seen.append(client.get_string_value("who", "?"))
            return {"seen": seen}

        return app

    def test_two_reads_agree_across_a_swap(self, app: Any) -> None:
        from starlette.testclient import TestClient

        with TestClient(app) as http:
            assert http.get("/swap").json() == {"first": "legacy", "second": "legacy"}
            assert http.get("/swap").json() == {"first": "new", "second": "new"}

    def test_concurrent_tasks_keep_their_context(self, app: Any, client: PhaseFlagClient) -> None:
        import httpx

        async def main() -> list[list[str]]:
            app.state.entered = {"u1": asyncio.Event(), "u2": asyncio.Event()}
            app.state.go = asyncio.Event()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                r1 = asyncio.create_task(http.get("/who?user=u1", headers={"x-user": "u1"}))
                await app.state.entered["u1"].wait()
                r2 = asyncio.create_task(http.get("/who?user=u2", headers={"x-user": "u2"}))
                await app.state.entered["u2"].wait()
                app.state.go.set()
                return [(await r1).json()["seen"], (await r2).json()["seen"]]

        assert asyncio.run(main()) == [["u1", "u1"], ["u2", "u2"]]
        assert client.get_string_value("who", "?") == "x"

    def test_async_client_with_its_scope(self) -> None:
        """The middleware takes an AsyncPhaseFlagClient (started in the app's lifespan):
        its reads use the request's context and one ruleset across a swap."""
        from contextlib import asynccontextmanager

        from fastapi import FastAPI
        from starlette.testclient import TestClient

        from phaseflag import AsyncPhaseFlagClient
        from phaseflag.integrations.asgi import PhaseFlagMiddleware

        flags = AsyncPhaseFlagClient(base_url="", api_key="", bootstrap=doc(1, "legacy"))

        @asynccontextmanager
        async def lifespan(app: Any) -> Any:
            async with flags:
                yield

        api = FastAPI(lifespan=lifespan)
        api.add_middleware(
            PhaseFlagMiddleware,
            client=flags,
            context=lambda request: user_context(request.headers.get("x-user")),
        )

        @api.get("/read")
        async def read() -> dict[str, str]:
            first = flags.get_string_value("flow", "?")
            swap(flags.sync_client, "new")
            return {"who": flags.get_string_value("who", "?"), "first": first,
                    "second": flags.get_string_value("flow", "?")}  # fmt: skip

        with TestClient(api) as http:
            assert http.get("/read", headers={"x-user": "u2"}).json() == {
                "who": "u2", "first": "legacy", "second": "legacy"
            }  # fmt: skip
            assert http.get("/read").json() == {"who": "x", "first": "new", "second": "new"}

    def test_lifespan_passes_through(self, app: Any) -> None:
        """Non-HTTP scopes (lifespan) reach the app untouched."""
        from starlette.testclient import TestClient

        with TestClient(app) as http:  # runs lifespan startup/shutdown through the middleware
            assert http.get("/swap").status_code == 200


class TestBrowserBootstrap:
    """examples/browser_bootstrap.py embeds the client-side flags in the page."""

    @pytest.fixture
    def app(self) -> Iterator[Any]:
        pytest.importorskip("flask")
        from examples.browser_bootstrap import create_app

        app = create_app()
        yield app
        app.extensions["phaseflag"].stop()

    @staticmethod
    def embedded(html: str) -> dict[str, Any]:
        import re

        match = re.search(
            r'<script type="application/json" id="phaseflag-bootstrap">(.*?)</script>', html, re.S
        )
        assert match is not None
        payload: dict[str, Any] = json.loads(match.group(1))
        return payload

    def test_page_embeds_only_client_side_flags_with_details(self, app: Any) -> None:
        html = app.test_client().get("/", headers={"X-User-Plan": "pro"}).get_data(as_text=True)
        payload = self.embedded(html)
        assert payload == {
            "banner-text": {
                "value": "</script><b>50% off</b>",
                "variation_key": "sale",
                "reason": "default",
                "ruleset_version": 3,
            },
            "new-nav": {
                "value": True,
                "variation_key": "on",
                "reason": "targeting_match",
                "ruleset_version": 3,
            },
        }
        # the value holding "</script>" was escaped: the element is not closed early
        assert html.count("</script>") == 2

    def test_context_comes_from_the_request(self, app: Any) -> None:
        free = self.embedded(app.test_client().get("/").get_data(as_text=True))
        assert free["new-nav"]["value"] is False
        assert app.test_client().get("/api/flags").get_json()["new-nav"]["reason"] == "default"

    @pytest.mark.browser
    def test_headless_chromium_reads_the_embedded_flags(self, app: Any) -> None:
        """A real browser runs the page's script against the embedded payload."""
        sync_api = pytest.importorskip("playwright.sync_api")
        from werkzeug.serving import make_server

        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="bootstrap-http", daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_port}/"
            with sync_api.sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium")
                try:
                    page = browser.new_page(extra_http_headers={"X-User-Plan": "pro"})
                    page.goto(url, timeout=60_000)
                    assert page.text_content("#nav") == "new navigation"
                    free = browser.new_page()
                    free.goto(url, timeout=60_000)
                    assert free.text_content("#nav") == "classic navigation"
                finally:
                    browser.close()
        finally:
            server.shutdown()
            thread.join(timeout=10)


def test_all_flags_counts_no_exposures() -> None:
    """Evaluation summaries count getter reads of tracked flags, never all_flags snapshots."""
    doc = ruleset(flag("tracked", True, track_events=True), flag("other", 1))
    client = PhaseFlagClient(base_url="http://127.0.0.1:9/api/v1", api_key="k", bootstrap=doc)
    try:
        events = client._events
        assert events is not None
        client.all_flags(details=True)
        client.all_flags(client_side_only=True)
        assert dict(events._counts) == {}
        client.get_boolean_value("tracked", False)
        assert "tracked" in events._counts
    finally:
        client.stop()


def test_schema_declares_client_side_as_a_boolean() -> None:
    """Both validators (the fast one and jsonschema's explanation) take the field."""
    from phaseflag import load_ruleset

    good = ruleset(flag("a", True, client_side=True), flag("b", True))
    compiled = load_ruleset(json.dumps(good).encode())
    assert compiled.flags["a"].client_side is True
    assert compiled.flags["b"].client_side is False
    bad = ruleset(flag("a", True, client_side="yes"))  # fails the schema: flag isolated
    assert [p for p, _ in load_ruleset(json.dumps(bad).encode()).problems] == [
        "flags[0].client_side"
    ]
