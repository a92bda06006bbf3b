"""Celery itself, prefork pool: tasks read flags and track events in the worker's forked
children, and every event reaches the API, also when each child exits after one task
(``max_tasks_per_child=1``: billiard ends it with ``os._exit``, skipping ``atexit``).

A real ``celery worker`` process, the real redis-server as broker and result backend, the
real loopback API; the worker is killed if it outlives the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import celery  # the dev extra installs it: a missing Celery fails, never skips
import pytest
from conftest import LoopbackAPI, boolean_flag, ruleset, wait_for
from redis_support import RedisServer, redis_server  # noqa: F401 - a fixture

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="prefork needs os.fork"),
]

REPO = Path(__file__).resolve().parents[1]
KEY = "sdk-test-celery-0123456789abcdef"
TASKS = 6

TASKS_MODULE = """
import os

from celery import Celery

from phaseflag import EvaluationEvent, PhaseFlagClient

app = Celery("pf_tasks", broker=os.environ["PF_BROKER"], backend=os.environ["PF_BROKER"])
app.conf.update(
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

# As an application does: one client per process, made and started at import (in the
# worker's main process, before the pool forks its children).
client = PhaseFlagClient(
    os.environ["PF_BASE_URL"], "{key}", polling_interval=3600, event_flush_interval=3600
)
client.start()
assert client.wait_until_ready(10)


@app.task(name="pf_tasks.read_and_track")
def read_and_track(n):
    value = client.get_boolean_value("tracked", False)
    client.track_event(EvaluationEvent(flag_key=f"task-{{n}}", user_id="u"))
    return {{"value": value, "pid": os.getpid()}}
"""


@pytest.fixture
def worker(
    redis_server: RedisServer,  # noqa: F811 - the fixture imported above
    loopback_api: LoopbackAPI,
    tmp_path: Path,
) -> Iterator[str]:
    """A ``celery worker`` (prefork, 2 children, each replaced after one task) on the tasks
    module above; yields the broker URL. Warm shutdown at the end, killed if it hangs."""
    (tmp_path / "pf_tasks.py").write_text(TASKS_MODULE.format(key=KEY))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path)]),
        "PF_BROKER": redis_server.url,
        "PF_BASE_URL": loopback_api.base_url,
    }
    command = [sys.executable, "-m", "celery", "-A", "pf_tasks", "worker", "--pool=prefork"]
    command += ["--concurrency=2", "--max-tasks-per-child=1", "--loglevel=WARNING"]
    command += ["--without-heartbeat", "--without-gossip", "--without-mingle"]
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield redis_server.url
    finally:
        process.send_signal(signal.SIGTERM)  # warm shutdown
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            pytest.fail(f"the celery worker did not shut down:\n{log.read_text()[-3000:]}")


def test_prefork_children_read_flags_and_deliver_their_events(
    loopback_api: LoopbackAPI, worker: str
) -> None:
    """Six tasks, each in its own prefork child (max_tasks_per_child=1): every task reads the
    flag served by the API, and every event it tracked arrives although each child ends
    with os._exit right after its task."""
    loopback_api.publish(ruleset(boolean_flag("tracked", track_events=True), version=3))
    app = celery.Celery("pf_producer", broker=worker, backend=worker)
    app.conf.update(broker_connection_retry_on_startup=True)
    try:
        began = time.monotonic()
        pending = [app.send_task("pf_tasks.read_and_track", args=[n]) for n in range(TASKS)]
        results = [result.get(timeout=60) for result in pending]
        took = time.monotonic() - began
    finally:
        app.close()
    assert [r["value"] for r in results] == [True] * TASKS
    assert len({r["pid"] for r in results}) == TASKS  # one child per task: each one exited
    expected = sorted(f"task-{n}" for n in range(TASKS))

    def delivered() -> list[str]:
        return sorted(e["flag_key"] for e in loopback_api.events() if e["kind"] == "custom")

    wait_for(lambda: delivered() == expected, timeout=30)
    assert took < 60
