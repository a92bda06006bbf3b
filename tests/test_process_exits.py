"""Events tracked in worker processes are delivered when the worker exits normally, including
the exit paths that skip ``atexit``: multiprocessing's fork workers and billiard's (Celery
prefork) end with ``os._exit``. Real processes against the real loopback API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import LoopbackAPI, boolean_flag, ruleset

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
]

REPO = Path(__file__).resolve().parents[1]
KEY = "sdk-test-exits-0123456789abcdef"

SCRIPT = """
import sys
from phaseflag import EvaluationEvent, PhaseFlagClient

BASE_URL, KIND, WORKERS, PER_WORKER = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])


def make_client():
    return PhaseFlagClient(BASE_URL, "{key}", polling_interval=3600, event_flush_interval=3600)


def track(worker, client):
    for n in range(PER_WORKER):
        client.track_event(EvaluationEvent(flag_key=f"w{{worker}}-{{n}}", user_id="u"))
    client.get_boolean_value("tracked", False)


CLIENT = None


def forked_worker(worker):  # inherits the parent's started client through fork
    track(worker, CLIENT)


def spawned_worker(worker):  # a fresh interpreter: its own client, never stopped by hand
    client = make_client()
    client.start()
    assert client.wait_until_ready(5)
    track(worker, client)


def pool_task(worker):
    track(worker, CLIENT)
    return worker


def main():
    global CLIENT
    if KIND == "spawn":
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=spawned_worker, args=(w,)) for w in range(WORKERS)]
    else:
        CLIENT = make_client()
        CLIENT.start()
        assert CLIENT.wait_until_ready(5)
        if KIND == "fork":
            import multiprocessing

            ctx = multiprocessing.get_context("fork")
            procs = [ctx.Process(target=forked_worker, args=(w,)) for w in range(WORKERS)]
        elif KIND == "pool":
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
                assert sorted(pool.map(pool_task, range(WORKERS), chunksize=1)) == list(
                    range(WORKERS)
                )
                pool.close()
                pool.join()
            procs = []
        elif KIND == "billiard":
            import billiard

            procs = [billiard.Process(target=forked_worker, args=(w,)) for w in range(WORKERS)]
        else:
            raise SystemExit(f"unknown kind {{KIND}}")
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0, p.exitcode
    print("workers done", flush=True)
    if CLIENT is not None:
        CLIENT.stop()


if __name__ == "__main__":
    main()
"""


def run_workers(api: LoopbackAPI, tmp_path: Path, kind: str, workers: int, per: int) -> None:
    script = tmp_path / "workers.py"
    script.write_text(SCRIPT.format(key=KEY))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(script), api.base_url, kind, str(workers), str(per)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "workers done" in out.stdout
    assert time.monotonic() - started < 60


def worker_events(api: LoopbackAPI) -> list[str]:
    return sorted(e["flag_key"] for e in api.events() if e["kind"] == "custom")


def expected(workers: int, per: int) -> list[str]:
    return sorted(f"w{w}-{n}" for w in range(workers) for n in range(per))


@pytest.mark.parametrize("kind", ["fork", "spawn", "pool"])
def test_multiprocessing_workers_deliver_their_events(
    loopback_api: LoopbackAPI, tmp_path: Path, kind: str
) -> None:
    """Every event tracked in multiprocessing workers (fork, spawn, a fork Pool closed and
    joined) reaches the API when the workers exit normally, although fork workers end
    with os._exit (which skips atexit); each worker's evaluation summary arrives too."""
    loopback_api.publish(ruleset(boolean_flag("tracked", track_events=True)))
    workers, per = 3, 20
    run_workers(loopback_api, tmp_path, kind, workers, per)
    assert worker_events(loopback_api) == expected(workers, per)
    summaries = [
        c["count"]
        for e in loopback_api.events()
        if e["kind"] == "summary"
        for c in e["counters"]
        if c["flag_key"] == "tracked"
    ]
    assert sum(summaries) == workers


def test_celery_prefork_style_billiard_workers_deliver_their_events(
    loopback_api: LoopbackAPI, tmp_path: Path
) -> None:
    """billiard (the multiprocessing fork Celery's prefork pool runs on) ends its workers with
    os._exit too: their events are delivered."""
    pytest.importorskip("billiard")
    loopback_api.publish(ruleset(boolean_flag("tracked", track_events=True)))
    run_workers(loopback_api, tmp_path, "billiard", 2, 20)
    assert worker_events(loopback_api) == expected(2, 20)
