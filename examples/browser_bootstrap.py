"""Browser bootstrap: the server evaluates the flags marked ``"client_side": true`` for the
request's user and embeds them in the page, so browser code has its flags on first paint
with no extra request and no SDK key in the browser.

Run:  flask --app examples.browser_bootstrap run
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask

from phaseflag import EvaluationContext, PhaseFlagClient
from phaseflag.integrations.flask import init_app

RULESET: dict[str, Any] = {
    "schema_version": 1,
    "version": 3,
    "flags": [
        {
            "key": "new-nav",
            "type": "boolean",
            "client_side": True,
            "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}],
            "rules": [
                {
                    "id": "beta",
                    "conditions": [{"attribute": "plan", "operator": "in", "values": ["pro"]}],
                    "serve": {"variation": "on"},
                }
            ],
            "default": {"variation": "off"},
        },
        {
            "key": "banner-text",
            "type": "string",
            "client_side": True,
            "variations": [{"key": "sale", "value": "</script><b>50% off</b>"}],
            "default": {"variation": "sale"},
        },
        {
            "key": "fraud-threshold",  # server-only: never sent to browsers
            "type": "number",
            "variations": [{"key": "strict", "value": 0.2}],
            "default": {"variation": "strict"},
        },
    ],
}

PAGE = """<!doctype html>
<html>
<head><title>shop</title></head>
<body>
<nav id="nav">classic navigation</nav>
<script type="application/json" id="phaseflag-bootstrap">{payload}</script>
<script>
  const flags = JSON.parse(document.getElementById("phaseflag-bootstrap").textContent);
  if (flags["new-nav"] && flags["new-nav"].value) {{
    document.getElementById("nav").textContent = "new navigation";
  }}
</script>
</body>
</html>
"""


def embed_json(payload: object) -> str:
    """JSON safe inside a <script> element: ``<``, ``>`` and ``&`` escaped, so a flag value
    holding ``</script>`` cannot end the element."""
    text = json.dumps(payload, sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def create_app(client: PhaseFlagClient | None = None) -> Flask:
    app = Flask(__name__)
    flags = client or PhaseFlagClient(base_url="", api_key="", bootstrap=RULESET)
    flags.start()
    init_app(
        app,
        flags,
        lambda req: EvaluationContext(
            user_id=req.headers.get("X-User-Id"),
            attributes={"plan": req.headers.get("X-User-Plan", "free")},
        ),
    )

    @app.get("/")
    def page() -> str:
        # One snapshot of the client-side flags for this request's user: value, variation,
        # reason and ruleset version per flag; no exposure is counted for them.
        payload = flags.all_flags(client_side_only=True, details=True)
        return PAGE.format(payload=embed_json(payload))

    @app.get("/api/flags")
    def api_flags() -> Any:
        """The same payload as JSON, for single-page apps that fetch it."""
        return flags.all_flags(client_side_only=True, details=True)

    app.extensions["phaseflag"] = flags
    return app


if __name__ == "__main__":
    create_app().run(port=5000)
