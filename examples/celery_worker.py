"""Celery: one client per worker process, started when the process starts.

Prefork workers are forked from the main process. phaseflag restarts a started
client's threads in each child by itself, but creating the client in
``worker_process_init`` (as Unleash recommends) also works and keeps the main
process free of SDK threads. Run: celery -A examples.celery_worker worker
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from phaseflag import EvaluationContext, PhaseFlagClient

app = Celery("tasks", broker="redis://localhost:6379/0")
client: PhaseFlagClient | None = None


@worker_process_init.connect
def start_flags(**_: Any) -> None:
    global client
    client = PhaseFlagClient()  # settings from PHASEFLAG_* variables
    client.start()
    client.wait_until_ready(timeout=5.0)


@worker_process_shutdown.connect
def stop_flags(**_: Any) -> None:
    if client is not None:
        client.stop()  # flushes queued events before the process exits


@app.task
def send_receipt(user_id: str, plan: str) -> str:
    assert client is not None
    context = EvaluationContext(user_id=user_id, attributes={"plan": plan})
    if client.get_boolean_value("new-checkout-flow", False, context):
        return "new receipt template"
    return "legacy receipt template"
