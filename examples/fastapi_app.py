"""FastAPI: the client lives in the app's lifespan, as on the product page.

Run:  uvicorn examples.fastapi_app:app
With no PHASEFLAG_BASE_URL set it serves the bundled sample ruleset offline.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request

from phaseflag import EvaluationContext, PhaseFlagClient

SAMPLE = Path(__file__).resolve().parents[1] / "bootstrap_samples" / "ruleset.json"


def make_client() -> PhaseFlagClient:
    if os.environ.get("PHASEFLAG_BASE_URL"):
        return PhaseFlagClient()  # PHASEFLAG_BASE_URL / PHASEFLAG_API_KEY / ...
    return PhaseFlagClient(base_url="", api_key="", bootstrap_file=SAMPLE)


def create_app(client: PhaseFlagClient | None = None) -> FastAPI:
    pf_client = client or make_client()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pf_client.start()
        pf_client.wait_until_ready(timeout=10.0)  # or AsyncPhaseFlagClient to await it
        yield
        pf_client.stop()  # flushes queued events

    app = FastAPI(lifespan=lifespan)

    @app.get("/checkout")
    async def checkout(request: Request, user_id: str) -> dict[str, str]:
        context = EvaluationContext(
            user_id=user_id,
            attributes={"plan": request.headers.get("X-User-Plan", "free")},
        )
        # A local, sub-microsecond read: safe to call inside async handlers.
        use_new_flow = pf_client.get_boolean_value("new-checkout-flow", False, context)
        return {"flow": "new" if use_new_flow else "legacy"}

    return app


app = create_app()
