"""The Flask and FastAPI examples work as documented (quick start included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from phaseflag import PhaseFlagClient

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "bootstrap_samples" / "ruleset.json"


def _client() -> PhaseFlagClient:
    return PhaseFlagClient(base_url="", api_key="", bootstrap_file=SAMPLE)


@pytest.mark.e2e
def test_quickstart_runs() -> None:
    """The README's first command prints flag values from the sample ruleset."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "ruleset 42" in out
    assert "new-checkout-flow  = True   (targeting_match)" in out


class TestFlask:
    """The Flask example evaluates per request from headers."""

    def test_checkout_uses_request_context(self) -> None:
        """A pro user gets the new flow; a free user outside the US gets the legacy one."""
        pytest.importorskip("flask")
        from examples.flask_app import create_app

        client = _client()
        app = create_app(client)
        try:
            http = app.test_client()
            pro = http.get("/checkout", headers={"X-User-Id": "u-1", "X-User-Plan": "pro"})
            assert pro.get_json() == {"flow": "new", "provider": "stripe"}
            free = http.get("/checkout", headers={"X-User-Id": "u-2", "X-Country": "DE"})
            assert free.get_json()["flow"] == "legacy"
            enterprise = http.get(
                "/flags", headers={"X-User-Id": "user-1", "X-User-Plan": "enterprise"}
            )
            assert enterprise.get_json()["new-checkout-flow"] is True
        finally:
            client.stop()

    def test_override_in_a_test(self) -> None:
        """Users' tests flip a flag with set_override, no server involved."""
        pytest.importorskip("flask")
        from examples.flask_app import create_app

        client = _client()
        client.set_override("new-checkout-flow", False)
        try:
            http = create_app(client).test_client()
            response = http.get("/checkout", headers={"X-User-Plan": "pro"})
            assert response.get_json()["flow"] == "legacy"
        finally:
            client.stop()


class TestFastAPI:
    """The FastAPI example starts and stops the client in its lifespan."""

    def test_lifespan_and_checkout(self) -> None:
        """Inside the lifespan the client is ready; after it, the client is stopped."""
        pytest.importorskip("fastapi")
        pytest.importorskip("httpx")
        from fastapi.testclient import TestClient

        from examples.fastapi_app import create_app

        client = _client()
        with TestClient(create_app(client)) as http:
            assert client.is_ready
            assert http.get("/checkout", params={"user_id": "user-1"}).json() == {"flow": "new"}
            paid = http.get("/checkout", params={"user_id": "x"}, headers={"X-User-Plan": "pro"})
            assert paid.json() == {"flow": "new"}
            free = http.get("/checkout", params={"user_id": "x"})
            assert free.json() == {"flow": "legacy"}
        assert client.status().state == "stopped"
