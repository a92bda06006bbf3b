"""``phaseflag serve --workers N``: forked processes on one socket, each watching the file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import boolean_flag, ruleset, wait_for

pytestmark = pytest.mark.e2e

KEY = "workers-key-8a9b0c1d"
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def health(port: int) -> dict[str, Any]:
    # A new connection each time, so the kernel hands it to any worker.
    with requests.get(
        f"http://127.0.0.1:{port}/healthz", headers={"Connection": "close"}, timeout=5
    ) as resp:
        result: dict[str, Any] = resp.json()
        return result


def test_workers_share_the_port_and_each_follows_the_file(tmp_path: Path):
    """Two workers answer; an edit reaches both; a killed worker is replaced; SIGTERM ends all."""
    path = tmp_path / "r.json"
    path.write_text(json.dumps(ruleset(boolean_flag("a", True), version=1)), "utf-8")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PHASEFLAG_SERVER_API_KEY": KEY}
    argv = [sys.executable, "-m", "phaseflag", "serve", str(path), "--port", str(port)]
    proc = subprocess.Popen(
        [*argv, "--workers", "2"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _answers(port), timeout=20)
        pids: set[int] = set()

        def both_seen() -> bool:
            pids.add(health(port)["pid"])
            return len(pids) == 2

        wait_for(both_seen, timeout=20)
        assert proc.pid not in pids  # the parent only supervises
        path.write_text(json.dumps(ruleset(boolean_flag("a", False), version=2)), "utf-8")
        seen_v2: set[int] = set()

        def both_updated() -> bool:
            answer = health(port)
            if answer["ruleset_version"] == 2:
                seen_v2.add(answer["pid"])
            return seen_v2 == pids

        wait_for(both_updated, timeout=20)
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        fresh: set[int] = set()

        def replaced() -> bool:
            fresh.add(health(port)["pid"])
            return len(fresh - pids) >= 1

        wait_for(replaced, timeout=20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        for pid in pids | fresh:
            wait_for(lambda pid=pid: not _alive(pid), timeout=10)
    finally:
        proc.kill()
        proc.wait()


def _answers(port: int) -> bool:
    try:
        return health(port)["status"] == "ok"
    except (requests.RequestException, ValueError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
