"""Process lifecycle: a forked child restarts the client's threads; interpreter exit flushes events.

These run against the real loopback API from conftest (no mocks): the child of ``os.fork``
and the ``atexit`` subprocess talk to it over 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    LoopbackAPI,
    boolean_flag,
    phaseflag_thread_names,
    ruleset,
    string_flag,
    wait_for,
)

from phaseflag import EvaluationEvent, PhaseFlagClient

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Forking a process that runs the SDK's threads is what these tests are about (3.12+
    # warns about it in general; the at-fork hooks are what make it safe here).
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

KEY = "sdk-test-fork-0123456789abcdef"
REPO = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT = 10.0


def in_child(body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Fork; run ``body`` in the child and return the dict it reports through a pipe.

    The child never returns into pytest: it reports (or reports its exception) and calls
    ``os._exit``. The parent reads the report and reaps the child.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_fd)
            try:
                report = body()
            except BaseException as exc:
                report = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(write_fd, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    return {"pid": pid, "read_fd": read_fd}


def collect(child: dict[str, Any]) -> dict[str, Any]:
    """Read the child's report and wait for it to exit; fail on a crash or a hang."""
    chunks = []
    with os.fdopen(child["read_fd"], "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)
    _, status = os.waitpid(child["pid"], 0)
    assert os.waitstatus_to_exitcode(status) == 0
    report: dict[str, Any] = json.loads(b"".join(chunks))
    assert "error" not in report, report["error"]
    return report


def child_wait(predicate: Callable[[], bool], timeout: float = CHILD_TIMEOUT) -> bool:
    """wait_for for the child process, which must not raise into pytest."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        threading.Event().wait(0.01)
    return True


@pytest.fixture
def client(loopback_api: LoopbackAPI, make_client: Any) -> PhaseFlagClient:
    """A started, ready client polling the loopback API every 50 ms (events flushed hourly)."""
    loopback_api.publish(ruleset(string_flag("color", "v1"), version=1))
    client: PhaseFlagClient = make_client(
        base_url=loopback_api.base_url,
        api_key=KEY,
        polling_interval=0.05,
        event_flush_interval=3600,
    )
    client.start()
    assert client.wait_until_ready(5.0)
    return client


def test_forked_child_restarts_threads_and_sees_later_changes(
    loopback_api: LoopbackAPI, client: PhaseFlagClient
) -> None:
    """A forked child gets its own sync and events threads and sees a change made after the fork."""

    def body() -> dict[str, Any]:
        # The request watchdog lives only while a request is in flight: not counted here.
        threads_at_fork = [n for n in phaseflag_thread_names() if n != "phaseflag-watchdog"]
        changed = child_wait(lambda: client.get_string_value("color", "") == "v2")
        report = {
            "threads_at_fork": threads_at_fork,
            "changed": changed,
            "version": client.status().ruleset_version,
            "state": client.status().state,
        }
        client.stop()
        report["threads_after_stop"] = phaseflag_thread_names()
        return report

    child = in_child(body)
    loopback_api.publish(ruleset(string_flag("color", "v2"), version=2))
    report = collect(child)
    assert report["threads_at_fork"] == ["phaseflag-events", "phaseflag-sync"]
    assert report["changed"] is True
    assert (report["version"], report["state"]) == (2, "running")
    assert report["threads_after_stop"] == []
    wait_for(lambda: client.get_string_value("color", "") == "v2")  # the parent too


def test_child_does_not_resend_the_parents_events(
    loopback_api: LoopbackAPI, client: PhaseFlagClient
) -> None:
    """Events queued before the fork are sent once (by the parent); the child sends its own."""
    client.track_event(EvaluationEvent(flag_key="parent-event"))

    def body() -> dict[str, Any]:
        client.track_event(EvaluationEvent(flag_key="child-event"))
        delivered = client.flush_events()
        client.stop()
        return {"delivered": delivered}

    report = collect(in_child(body))
    assert report["delivered"] is True
    client.stop()
    keys = sorted(e["flag_key"] for e in loopback_api.events() if e["kind"] == "custom")
    assert keys == ["child-event", "parent-event"]


def test_stopped_client_stays_stopped_in_child(
    loopback_api: LoopbackAPI, client: PhaseFlagClient
) -> None:
    """A client stopped before the fork starts no thread in the child."""
    client.stop()

    def body() -> dict[str, Any]:
        return {"threads": phaseflag_thread_names(), "state": client.status().state}

    report = collect(in_child(body))
    assert report == {"threads": [], "state": "stopped"}


ATEXIT_SCRIPT = """
import sys
from phaseflag import PhaseFlagClient
from phaseflag.types import EvaluationEvent

def main() -> None:
    # The client is not kept anywhere: only its threads hold it, and exit must still flush.
    client = PhaseFlagClient(
        base_url=sys.argv[1], api_key="sdk-test-atexit-0123456789",
        polling_interval=3600, event_flush_interval=3600,
    )
    client.start()
    assert client.wait_until_ready(5.0), "not ready"
    for n in range(3):
        client.track_event(EvaluationEvent(flag_key=f"exit-{n}", user_id="u1"))
    client.get_boolean_value("tracked", False)

main()
print("exiting without stop()")
"""


def test_interpreter_exit_flushes_queued_events(loopback_api: LoopbackAPI, tmp_path: Path) -> None:
    """A process that exits without stop() still delivers its queued events (atexit)."""
    loopback_api.publish(ruleset(boolean_flag("tracked", track_events=True)))
    script = tmp_path / "exit_without_stop.py"
    script.write_text(ATEXIT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(script), loopback_api.base_url],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - started < 15  # daemon threads never hold the interpreter
    assert "exiting without stop()" in out.stdout
    events = loopback_api.events()
    custom = [e["flag_key"] for e in events if e["kind"] == "custom"]
    assert custom == ["exit-0", "exit-1", "exit-2"]
    summaries = [c for e in events if e["kind"] == "summary" for c in e["counters"]]
    assert summaries == [{"flag_key": "tracked", "variation_key": "on", "count": 1}]
