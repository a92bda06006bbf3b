"""Prefork servers: a client started at import in ``gunicorn --preload`` keeps every worker fresh.

The app (``tests/e2e_support/gunicorn_app.py``) starts its PhaseFlagClient in the gunicorn
master; the workers inherit it through fork. A PhaseFlagServer in this process serves the
ruleset file, and each worker writes its pid and flag value to a report file on every change.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ruleset, string_flag, wait_for

from phaseflag.server import PhaseFlagServer

pytestmark = pytest.mark.e2e

KEY = "prefork-key-2b7e91d04f"
SUPPORT = Path(__file__).resolve().parent / "e2e_support"
ROOT = Path(__file__).resolve().parent.parent

#: Seconds gunicorn gets to boot its master and both workers.
BOOT_TIMEOUT = 8.0


def write_atomic(path: Path, version: int, color: str) -> None:
    """Replace the ruleset file with one serving ``color`` at ``version`` (temp + os.replace)."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(ruleset(string_flag("color", color), version=version)), "utf-8")
    os.replace(temp, path)


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it does not exist yet."""
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None


@pytest.fixture
def ruleset_path(tmp_path: Path) -> Path:
    """The watched ruleset file, serving ``color = "blue"`` at version 1."""
    path = tmp_path / "ruleset.json"
    write_atomic(path, 1, "blue")
    return path


@pytest.fixture
def server(ruleset_path: Path) -> Iterator[PhaseFlagServer]:
    """A PhaseFlagServer in this process, polling the file every 50 ms."""
    with PhaseFlagServer(ruleset_path, api_keys=[KEY], poll_interval=0.05) as srv:
        yield srv


class Gunicorn:
    """A ``gunicorn --preload --workers 2`` subprocess serving the e2e app on a free port."""

    def __init__(self, base_url: str, directory: Path) -> None:
        self.reports = directory / "reports"
        self.reports.mkdir()
        self.log = directory / "gunicorn.log"
        env = dict(os.environ)
        env.update(
            E2E_BASE_URL=base_url,
            E2E_API_KEY=KEY,
            E2E_REPORT_DIR=str(self.reports),
            PYTHONPATH=os.pathsep.join([str(ROOT), str(SUPPORT), env.get("PYTHONPATH", "")]),
        )
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--preload",
            "--workers=2",
            "--bind=127.0.0.1:0",
            f"--config={SUPPORT / 'gunicorn_conf.py'}",
            "--graceful-timeout=3",
            "--log-level=warning",
            "gunicorn_app:app",
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def alive(self) -> bool:
        """True while gunicorn runs; fails the test with its log when it has exited."""
        if self.proc.poll() is not None:
            pytest.fail(f"gunicorn exited ({self.proc.returncode}):\n{self.log.read_text()}")
        return True

    def master(self) -> dict[str, Any] | None:
        """``{"pid", "port"}`` once gunicorn is ready."""
        self.alive()
        result: dict[str, Any] | None = read_json(self.reports / "master.json")
        return result

    def workers(self) -> dict[int, dict[str, Any]]:
        """Each worker's last report ``{"pid", "value", "version"}`` by pid."""
        self.alive()
        reports = (read_json(path) for path in self.reports.glob("worker-*.json"))
        return {report["pid"]: report for report in reports if report is not None}

    def stop(self) -> None:
        """SIGTERM (graceful stop), then kill if it takes over 10 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def test_preloaded_client_keeps_both_gunicorn_workers_fresh(
    server: PhaseFlagServer, ruleset_path: Path, tmp_path: Path
) -> None:
    """After a ruleset edit, both forked gunicorn workers serve the new value over HTTP."""
    pytest.importorskip("gunicorn")
    app = Gunicorn(server.url, tmp_path)
    try:
        master = wait_for(app.master, timeout=BOOT_TIMEOUT)
        workers = wait_for(lambda: len(w := app.workers()) == 2 and w, timeout=BOOT_TIMEOUT)
        assert master["pid"] not in workers
        assert {(w["value"], w["version"]) for w in workers.values()} == {("blue", 1)}

        write_atomic(ruleset_path, 2, "green")

        def both_green() -> dict[int, dict[str, Any]] | None:
            reports = app.workers()
            done = len(reports) == 2 and all(r["value"] == "green" for r in reports.values())
            return reports if done else None

        updated = wait_for(both_green, timeout=5)
        assert set(updated) == set(workers)  # the same two workers, each updated by itself
        assert {w["version"] for w in updated.values()} == {2}
        url = f"http://127.0.0.1:{master['port']}/"
        for _ in range(6):  # whichever worker answers serves the new value
            with requests.get(url, headers={"Connection": "close"}, timeout=5) as resp:
                answer = resp.json()
            assert answer["pid"] in workers
            assert (answer["value"], answer["version"]) == ("green", 2)
    finally:
        app.stop()
    assert app.proc.returncode == 0, app.log.read_text()
