"""The ``phaseflag`` command: every command, its exit codes and its ``--json`` output.

Most tests call ``main(argv)`` in-process (fast, unit); the ``serve`` round trip starts the
real command in a subprocess and is marked ``e2e``. Exit codes: 0 ok, 1 a file failed
validation, 2 bad arguments or unreadable input (one line on stderr, no traceback).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import boolean_flag, rule, ruleset, to_bytes, wait_for

from phaseflag import __version__
from phaseflag._cli import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "bootstrap_samples" / "ruleset.json"
SHORTHAND = ROOT / "bootstrap_samples" / "shorthand.json"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit status, stdout, stderr)."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(err: str) -> None:
    """A usage error is exactly one ``error: ...`` line, never a traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A valid ruleset, one with an isolated flag, a schema failure and non-JSON bytes."""
    good = tmp_path / "good.json"
    good.write_bytes(
        to_bytes(
            ruleset(
                boolean_flag("beta", False, rules=[rule("plan", "in", ["pro"], "on", id="pro")]),
                version=7,
            )
        )
    )
    isolated = tmp_path / "isolated.json"
    isolated.write_bytes(
        to_bytes(
            ruleset(
                boolean_flag("ok"),
                boolean_flag("broken", rules=[rule("plan", "no_such_op", ["x"], "on")]),
            )
        )
    )
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"schema_version": 1, "version": 1, "flags": [{"key": 3}]}))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    return {"good": good, "isolated": isolated, "schema": schema, "garbage": garbage}


class TestTopLevel:
    def test_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        """``--version`` prints the package version and exits 0."""
        with pytest.raises(SystemExit) as exit_info:
            main(["--version"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.strip() == f"phaseflag {__version__}"

    def test_no_command_prints_help_and_exits_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        status, out, _ = run(capsys)
        assert status == 2
        assert "validate" in out and "eval" in out and "serve" in out

    def test_unknown_command(self, capsys: pytest.CaptureFixture[str]) -> None:
        status, _, err = run(capsys, "frobnicate")
        assert status == 2
        one_line_error(err)
        assert "see --help" in err

    def test_help_exits_0(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exit_info:
            main(["--help"])
        assert exit_info.value.code == 0
        assert "PhaseFlag SDK command-line tools" in capsys.readouterr().out

    @pytest.mark.e2e
    def test_python_dash_m(self) -> None:
        """``python -m phaseflag`` is the same command (exit status passed through)."""
        done = subprocess.run(
            [sys.executable, "-m", "phaseflag", "validate", str(SAMPLE)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert done.returncode == 0, done.stderr
        assert "ok (8 flags" in done.stdout

    @pytest.mark.e2e
    def test_a_reader_that_goes_away_is_not_an_error(self) -> None:
        """``phaseflag eval ... --explain | head -1``: when the pipe's reader has gone, the
        command stops quietly (status 141, as for SIGPIPE), with no traceback or error."""
        read, write = os.pipe()
        os.close(read)  # the reader is gone before anything is written
        done = subprocess.run(
            [sys.executable, "-m", "phaseflag", "eval", "new-checkout-flow", "-f",
             str(SAMPLE), "--user", "u1", "--explain"],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=60, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        os.close(write)
        assert done.returncode == 141
        assert done.stderr == ""


class TestValidate:
    def test_samples_ok(self, capsys: pytest.CaptureFixture[str]) -> None:
        status, out, err = run(capsys, "validate", str(SAMPLE), str(SHORTHAND))
        assert status == 0, err
        assert f"{SAMPLE}: ok (8 flags, 1 segment, version 42)" in out
        assert f"{SHORTHAND}: ok (5 flags, 0 segments, shorthand)" in out

    def test_isolated_flag_exits_1_naming_the_flag(
        self, capsys: pytest.CaptureFixture[str], files: dict[str, Path]
    ) -> None:
        status, out, _ = run(capsys, "validate", str(files["isolated"]))
        assert status == 1
        assert "1 flag(s) isolated as INVALID_FLAG" in out
        assert "flags[1].rules[0].conditions[0]: unknown operator 'no_such_op'" in out

    def test_schema_error_exits_1_with_its_path(
        self, capsys: pytest.CaptureFixture[str], files: dict[str, Path]
    ) -> None:
        status, out, _ = run(capsys, "validate", str(files["schema"]))
        assert status == 1
        assert f"{files['schema']}: invalid" in out
        assert "flags[0]" in out

    def test_not_json_exits_1(
        self, capsys: pytest.CaptureFixture[str], files: dict[str, Path]
    ) -> None:
        status, out, _ = run(capsys, "validate", str(files["garbage"]))
        assert status == 1
        assert "invalid" in out

    def test_every_file_is_reported(
        self, capsys: pytest.CaptureFixture[str], files: dict[str, Path]
    ) -> None:
        """One bad file does not stop the others being checked; the status is the worst."""
        status, out, _ = run(capsys, "validate", str(files["schema"]), str(files["good"]))
        assert status == 1
        assert f"{files['good']}: ok (1 flag, 0 segments, version 7)" in out

    def test_missing_file_exits_2(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        status, _, err = run(capsys, "validate", str(tmp_path / "nope.json"))
        assert status == 2
        one_line_error(err)
        assert "cannot read" in err

    def test_no_files_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        status, _, err = run(capsys, "validate")
        assert status == 2
        one_line_error(err)


class TestEval:
    def test_text_output(self, capsys: pytest.CaptureFixture[str]) -> None:
        status, out, _ = run(
            capsys, "eval", "new-checkout-flow", "-f", str(SAMPLE), "--user", "user-123",
            "--attr", "plan=pro",
        )  # fmt: skip
        assert status == 0
        assert "value:     true" in out
        assert "reason:    targeting_match" in out
        assert "rule:      paid-plans" in out
        assert "trace:" not in out

    def test_json_output(self, capsys: pytest.CaptureFixture[str]) -> None:
        status, out, _ = run(
            capsys, "eval", "new-checkout-flow", "--file", str(SAMPLE), "--user", "user-123",
            "--attr", "plan=pro", "--json",
        )  # fmt: skip
        assert status == 0
        assert json.loads(out) == {
            "flag_key": "new-checkout-flow",
            "value": True,
            "reason": "targeting_match",
            "variation_key": "enabled",
            "rule_id": "paid-plans",
        }

    def test_json_explain_has_the_trace(self, capsys: pytest.CaptureFixture[str]) -> None:
        status, out, _ = run(
            capsys, "eval", "new-checkout-flow", "-f", str(SAMPLE), "--user", "user-123",
            "--attr", "plan=pro", "--explain", "--json",
        )  # fmt: skip
        assert status == 0
        data = json.loads(out)
        steps = [step["step"] for step in data["trace"]]
        assert steps[0] == "prerequisite" and "targets" in steps
        assert data["trace"][-1]["matched"] is True
        assert data["trace"][-1]["id"] == "paid-plans"

    def test_text_explain_numbers_the_steps(self, capsys: pytest.CaptureFixture[str]) -> None:
        status, out, _ = run(
            capsys, "eval", "new-checkout-flow", "-f", str(SAMPLE), "--user", "user-123",
            "--attr", "plan=pro", "--explain",
        )  # fmt: skip
        assert status == 0
        assert "trace:\n  1. prerequisite 'checkout-v2-backend'" in out
        assert "rule 0 (paid-plans): all conditions hold" in out

    def test_attr_values_are_typed(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        """``--attr n=30`` is a number (matches ``gt``); ``--attr n='"30"'`` stays a string."""
        path = tmp_path / "gt.json"
        path.write_bytes(
            to_bytes(ruleset(boolean_flag("f", False, rules=[rule("n", "gt", [10], "on")])))
        )
        status, out, _ = run(capsys, "eval", "f", "-f", str(path), "--attr", "n=30", "--json")
        assert status == 0 and json.loads(out)["value"] is True
        status, out, _ = run(capsys, "eval", "f", "-f", str(path), "--attr", 'n="30"', "--json")
        assert status == 0 and json.loads(out)["value"] is True  # numeric strings are parsed
        status, out, _ = run(capsys, "eval", "f", "-f", str(path), "--attr", "n=abc", "--json")
        assert status == 0 and json.loads(out)["value"] is False

    def test_session_only_context(self, capsys: pytest.CaptureFixture[str]) -> None:
        status, out, _ = run(
            capsys, "eval", "ui-theme", "-f", str(SAMPLE), "--session", "sess-abc", "--json"
        )
        assert status == 0
        assert isinstance(json.loads(out)["value"], str)

    def test_unknown_flag_reports_the_error_code(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown flag is a result (FLAG_NOT_FOUND), not a usage error: exit 0."""
        status, out, _ = run(capsys, "eval", "no-such-flag", "-f", str(SAMPLE), "--json")
        assert status == 0
        data = json.loads(out)
        assert data["reason"] == "error"
        assert data["error_code"] == "FLAG_NOT_FOUND"
        status, out, _ = run(capsys, "eval", "no-such-flag", "-f", str(SAMPLE))
        assert status == 0
        assert "error:     FLAG_NOT_FOUND" in out

    def test_isolated_flag_is_invalid_flag(
        self, capsys: pytest.CaptureFixture[str], files: dict[str, Path]
    ) -> None:
        status, out, _ = run(capsys, "eval", "broken", "-f", str(files["isolated"]), "--json")
        assert status == 0
        assert json.loads(out)["error_code"] == "INVALID_FLAG"

    def test_shorthand_file(self, capsys: pytest.CaptureFixture[str]) -> None:
        status, out, _ = run(capsys, "eval", "ui-theme", "-f", str(SHORTHAND), "--json")
        assert status == 0
        assert json.loads(out)["value"] == "dark"

    @pytest.mark.parametrize(
        "argv",
        [
            ["eval", "f"],  # --file is required
            ["eval", "f", "-f", "{missing}"],
            ["eval", "f", "-f", "{garbage}"],
            ["eval", "f", "-f", "{schema}"],
            ["eval", "f", "-f", "{good}", "--attr", "novalue"],
            ["eval", "f", "-f", "{good}", "--attr", "=x"],
        ],
        ids=["no-file", "missing", "not-json", "schema", "attr-no-equals", "attr-no-key"],
    )
    def test_bad_input_exits_2_with_one_line(
        self,
        capsys: pytest.CaptureFixture[str],
        files: dict[str, Path],
        tmp_path: Path,
        argv: list[str],
    ) -> None:
        names: dict[str, Any] = {k: str(v) for k, v in files.items()}
        names["missing"] = str(tmp_path / "missing.json")
        status, out, err = run(capsys, *(a.format(**names) for a in argv))
        assert status == 2
        assert out == ""
        one_line_error(err)


class TestServeArguments:
    """``serve`` refuses bad input before it binds anything."""

    def test_missing_file(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        status, _, err = run(capsys, "serve", str(tmp_path / "nope.json"), "--api-key", "k" * 16)
        assert status == 2
        one_line_error(err)
        assert "nope.json" in err

    def test_invalid_ruleset(
        self, capsys: pytest.CaptureFixture[str], files: dict[str, Path]
    ) -> None:
        status, _, err = run(capsys, "serve", str(files["schema"]), "--api-key", "k" * 16)
        assert status == 2
        one_line_error(err)

    def test_bad_port(self, capsys: pytest.CaptureFixture[str]) -> None:
        status, _, err = run(capsys, "serve", str(SAMPLE), "--port", "70000", "--api-key", "k" * 16)
        assert status == 2
        one_line_error(err)
        assert "--port" in err

    def test_port_not_a_number(self, capsys: pytest.CaptureFixture[str]) -> None:
        status, _, err = run(capsys, "serve", str(SAMPLE), "--port", "http")
        assert status == 2
        one_line_error(err)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.e2e
def test_serve_answers_the_sdk_protocol(tmp_path: Path) -> None:
    """``phaseflag serve FILE`` serves the ruleset with an ETag, 304s and the key check."""
    port = _free_port()
    key = "sdk-cli-test-0123456789"
    process = subprocess.Popen(
        [sys.executable, "-m", "phaseflag", "serve", str(SAMPLE), "--port", str(port),
         "--api-key", key],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api/v1/sdk/ruleset"
    auth = {"Authorization": f"Bearer {key}"}

    def answered() -> requests.Response | None:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            return requests.get(url, headers=auth, timeout=5)
        except requests.ConnectionError:
            return None

    try:
        first = wait_for(answered, timeout=30)
        assert first.status_code == 200
        assert first.json()["version"] == 42
        etag = first.headers["ETag"]
        again = requests.get(url, headers={**auth, "If-None-Match": etag}, timeout=5)
        assert again.status_code == 304
        assert requests.get(url, timeout=5).status_code == 401
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stderr:
            process.stderr.close()
