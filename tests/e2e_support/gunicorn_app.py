"""A WSGI app for ``tests/test_prefork.py``: one PhaseFlagClient, created and started at import.

Run under ``gunicorn --preload`` the client starts in the master and reaches each worker
through fork. ``E2E_BASE_URL``, ``E2E_API_KEY`` and ``E2E_REPORT_DIR`` configure it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from phaseflag import PhaseFlagClient

client = PhaseFlagClient(
    base_url=os.environ["E2E_BASE_URL"],
    api_key=os.environ["E2E_API_KEY"],
    polling_interval=0.1,
    send_events=False,
)
client.start()
if not client.wait_until_ready(5):
    raise RuntimeError(f"phaseflag client not ready: {client.status().last_error}")


def snapshot() -> dict[str, Any]:
    """This process's pid and the ``color`` flag value (and ruleset version) it serves."""
    return {
        "pid": os.getpid(),
        "value": client.get_string_value("color", "missing"),
        "version": client.status().ruleset_version,
    }


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer every request with ``snapshot()`` as JSON."""
    body = json.dumps(snapshot()).encode("utf-8")
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def report(directory: str) -> None:
    """In a worker: write ``snapshot()`` to ``<directory>/worker-<pid>.json`` now and on each
    change the client applies (so the test sees every worker without routing requests)."""
    path = os.path.join(directory, f"worker-{os.getpid()}.json")

    def write(*_: object) -> None:
        temp = path + ".tmp"
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(snapshot(), handle)
        os.replace(temp, path)

    client.on("change", write)
    write()
