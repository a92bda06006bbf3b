"""Flask: one client per process, a context per request, stopped at exit.

Run:  PHASEFLAG_BASE_URL=http://127.0.0.1:8080/api/v1 PHASEFLAG_API_KEY=sdk-dev-123456789 \
      flask --app examples.flask_app run
With no PHASEFLAG_BASE_URL set it serves the bundled sample ruleset offline.
Under gunicorn --preload the client forks with the workers and resyncs in each.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, g, jsonify, request

from phaseflag import EvaluationContext, PhaseFlagClient

SAMPLE = Path(__file__).resolve().parents[1] / "bootstrap_samples" / "ruleset.json"


def make_client() -> PhaseFlagClient:
    """Configured from PHASEFLAG_* variables; offline on the sample ruleset otherwise."""
    if os.environ.get("PHASEFLAG_BASE_URL"):
        return PhaseFlagClient(bootstrap_file=os.environ.get("PHASEFLAG_BOOTSTRAP_FILE"))
    return PhaseFlagClient(base_url="", api_key="", bootstrap_file=SAMPLE)


def create_app(client: PhaseFlagClient | None = None) -> Flask:
    app = Flask(__name__)
    flags = client or make_client()
    flags.start()  # stop() runs at interpreter exit (atexit) and flushes events
    flags.wait_until_ready(timeout=5.0)
    app.extensions["phaseflag"] = flags

    @app.before_request
    def flag_context() -> None:
        g.flag_context = EvaluationContext(
            user_id=request.headers.get("X-User-Id"),
            session_id=request.cookies.get("session"),
            attributes={
                "plan": request.headers.get("X-User-Plan", "free"),
                "country": request.headers.get("X-Country", "US"),
            },
        )

    @app.get("/checkout")
    def checkout() -> object:
        use_new_flow = flags.get_boolean_value("new-checkout-flow", False, g.flag_context)
        config = flags.get_json_value("checkout-config", {"provider": "stripe"}, g.flag_context)
        return jsonify(flow="new" if use_new_flow else "legacy", provider=config["provider"])

    @app.get("/flags")
    def all_flags() -> object:
        """What a browser page needs: every flag's value for this user."""
        return jsonify(flags.all_flags(g.flag_context))

    return app


if __name__ == "__main__":
    create_app().run(port=5000)
