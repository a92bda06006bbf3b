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

    def test_lifespan_passes_through(self, app: Any) -> None:
        """Non-HTTP scopes (lifespan) reach the app untouched."""
        from starlette.testclient import TestClient

        with TestClient(app) as http:  # runs lifespan startup/shutdown through the middleware
            assert http.get("/swap").status_code == 200
