"""Gunicorn hooks for ``tests/test_prefork.py``: report the bound port and each worker's flags."""

from __future__ import annotations

import json
import os
from typing import Any


def when_ready(server: Any) -> None:
    """Write the port gunicorn bound (``--bind 127.0.0.1:0``) to ``$E2E_REPORT_DIR/master.json``."""
    directory = os.environ["E2E_REPORT_DIR"]
    port = server.LISTENERS[0].sock.getsockname()[1]
    temp = os.path.join(directory, "master.json.tmp")
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump({"pid": os.getpid(), "port": port}, handle)
    os.replace(temp, os.path.join(directory, "master.json"))


def post_worker_init(worker: Any) -> None:
    """Have the (preloaded, forked) app report this worker's flag value now and on changes."""
    import gunicorn_app

    gunicorn_app.report(os.environ["E2E_REPORT_DIR"])
