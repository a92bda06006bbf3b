"""Before a fork, gc.freeze() keeps the held ruleset out of the children's collections."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import pytest
from conftest import boolean_flag, ruleset

import phaseflag._process as process
from phaseflag import PhaseFlagClient

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_freezes_the_collector(tmp_path: Path) -> None:
    """The child starts with the parent's objects frozen; it compiles what it reads."""
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(ruleset(*(boolean_flag(f"f{i}") for i in range(50)))))
    client = PhaseFlagClient(base_url="", api_key="", bootstrap_file=path, offline_mode=True)
    client.start()
    frozen_before = gc.get_freeze_count()
    try:
        assert client.ruleset.flags.pending() == 50
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            report = {
                "pending": client.ruleset.flags.pending(),
                "frozen": gc.get_freeze_count(),
                "value": client.get_boolean_value("f3", False),
            }
            os.write(write, json.dumps(report).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            report = json.loads(pipe.read())
        _, status = os.waitpid(pid, 0)
        assert status == 0
        assert report == {"pending": 50, "frozen": report["frozen"], "value": True}
        assert report["frozen"] > 0
        assert client.ruleset.flags.pending() == 50  # the parent compiled nothing
    finally:
        client.stop()
        gc.unfreeze()  # the parent stays frozen by design; give the test process back
        assert gc.get_freeze_count() == 0 or frozen_before


def test_sharing_can_be_turned_off() -> None:
    """The hook does nothing when ``share_with_children`` is False (benchmark control)."""
    process.share_with_children = False
    try:
        before = gc.get_freeze_count()
        process._share_before_fork()
        assert gc.get_freeze_count() == before
    finally:
        process.share_with_children = True
