"""The ``phaseflag`` command: validate rulesets, evaluate flags, serve a local API.

Exit codes: 0 success, 1 a file failed validation, 2 bad arguments or unreadable
input (one clear line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ._compile import load_ruleset
from ._errors import PhaseFlagError, RulesetError
from ._evaluation import explain
from ._model import Ruleset
from ._version import __version__
from .types import EvaluationContext

__all__ = ["main"]


class _UsageError(Exception):
    """Bad arguments or input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message} (see --help)")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="phaseflag", description="PhaseFlag SDK command-line tools.")
    parser.add_argument("--version", action="version", version=f"phaseflag {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    validate = commands.add_parser("validate", help="check ruleset files against the schema")
    validate.add_argument("files", nargs="+", metavar="FILE")

    evaluate = commands.add_parser("eval", help="evaluate one flag for one context")
    evaluate.add_argument("flag", metavar="FLAG")
    evaluate.add_argument("--file", "-f", required=True, help="ruleset or shorthand JSON file")
    evaluate.add_argument("--user", help="user_id of the context")
    evaluate.add_argument("--session", help="session_id of the context")
    evaluate.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an attribute; numbers and true/false are typed, quote as '\"30\"' for a string",
    )
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.add_argument("--explain", action="store_true", help="print the decision trace")

    serve = commands.add_parser("serve", help="run a local PhaseFlag-compatible API server")
    serve.add_argument("ruleset_file", metavar="RULESET_FILE")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--api-key",
        action="append",
        default=[],
        dest="api_keys",
        help="accepted SDK key (repeatable); none = open server",
    )
    serve.add_argument("--events-out", help="append received events to this JSON-lines file")
    return parser


def _load(path: str) -> Ruleset:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise _UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return load_ruleset(raw)


def _parse_attr(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise _UsageError(f"--attr {text!r}: expected KEY=VALUE, e.g. --attr plan=pro")
    try:
        value = json.loads(raw)
    except ValueError:
        return key, raw
    if isinstance(value, (str, int, float, bool)):
        return key, value
    return key, raw


def _validate(files: Sequence[str]) -> int:
    status = 0
    for path in files:
        try:
            ruleset = _load(path)
        except RulesetError as exc:
            status = 1
            print(f"{path}: invalid: {str(exc).split(':')[0]}")
            for where, message in exc.errors or (("(document)", str(exc)),):
                print(f"  {where}: {message}")
            continue
        if ruleset.problems:
            status = 1
            print(f"{path}: {len(ruleset.problems)} flag(s) isolated as INVALID_FLAG")
            for where, message in ruleset.problems:
                print(f"  {where}: {message}")
        else:
            kind = "shorthand" if ruleset.shorthand else f"version {ruleset.version}"
            print(
                f"{path}: ok ({len(ruleset.flags)} flags, {len(ruleset.segments)} segments, {kind})"
            )
    return status


def _eval(args: argparse.Namespace) -> int:
    try:
        ruleset = _load(args.file)
    except RulesetError as exc:
        raise _UsageError(f"{args.file}: {exc}") from None
    attributes = dict(_parse_attr(item) for item in args.attr)
    try:
        context = EvaluationContext(
            user_id=args.user, session_id=args.session, attributes=attributes
        )
    except PhaseFlagError as exc:
        raise _UsageError(str(exc)) from None
    explanation = explain(ruleset, args.flag, context)
    result = explanation.result
    if args.json:
        out = result.to_dict()
        if args.explain:
            out["trace"] = list(explanation.steps)
        print(json.dumps(out, indent=2, default=str))
    else:
        print(f"flag:      {result.flag_key}")
        print(f"value:     {json.dumps(result.value)}")
        print(f"variation: {result.variation_key}")
        print(f"reason:    {result.reason}")
        print(f"rule:      {result.rule_id}")
        if result.error_code:
            print(f"error:     {result.error_code}: {result.error_message}")
        if args.explain:
            print("trace:")
            for number, line in enumerate(explanation.lines(), 1):
                print(f"  {number}. {line}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .server import run

    if not Path(args.ruleset_file).is_file():
        raise _UsageError(f"{args.ruleset_file}: no such file")
    if not 0 <= args.port <= 65535:
        raise _UsageError(f"--port {args.port}: must be 0-65535")
    try:
        _load(args.ruleset_file)
    except RulesetError as exc:
        raise _UsageError(f"{args.ruleset_file}: {exc}") from None
    run(
        args.ruleset_file,
        host=args.host,
        port=args.port,
        api_keys=args.api_keys,
        events_out=args.events_out,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (also used by ``python -m phaseflag``)."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "validate":
            return _validate(args.files)
        if args.command == "eval":
            return _eval(args)
        if args.command == "serve":
            return _serve(args)
        parser.print_help()
        return 2
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (PhaseFlagError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
