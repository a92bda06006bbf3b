"""The ``phaseflag`` command: validate rulesets, evaluate flags, serve a local API, relay.

Exit codes: 0 success, 1 a file failed validation, 2 bad arguments or unreadable
input (one clear line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
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
        help="an attribute; numbers and true/false are typed, quote as '\"30\"' for a string; "
        'a JSON array of those is a list attribute: --attr \'roles=["admin","dev"]\'',
    )
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.add_argument("--explain", action="store_true", help="print the decision trace")

    serve = commands.add_parser(
        "serve",
        help="run a local PhaseFlag-compatible API server (needs phaseflag-sdk[server])",
        description="Serve a ruleset file (or relay an upstream API) to SDKs, OFREP "
        "clients and a dashboard. Keys: PHASEFLAG_SERVER_API_KEY, --api-key-file, or "
        "--api-key (visible to every user in the process list).",
    )
    serve.add_argument("ruleset_file", metavar="RULESET_FILE", nargs="?")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--api-key",
        action="append",
        default=[],
        dest="api_keys",
        help="accepted SDK key (repeatable); visible in process lists: prefer "
        "PHASEFLAG_SERVER_API_KEY or --api-key-file",
    )
    serve.add_argument("--api-key-file", help="file with accepted SDK keys, one per line")
    serve.add_argument("--no-auth", action="store_true", help="serve without any key (open)")
    serve.add_argument("--events-out", help="append received events to this JSON-lines file")
    serve.add_argument(
        "--events-max-bytes",
        type=int,
        default=100 * 1024 * 1024,
        help="rotate the events file at this size (default 100 MiB; 0 never rotates)",
    )
    serve.add_argument(
        "--events-keep", type=int, default=5, help="rotated events files kept (default 5)"
    )
    serve.add_argument(
        "--max-body-bytes", type=int, default=1024 * 1024, help="request body cap (1 MiB)"
    )
    serve.add_argument("--workers", type=int, default=1, help="processes serving one socket")
    serve.add_argument("--ui", action="store_true", help="serve the flag dashboard at /ui")
    serve.add_argument(
        "--upstream",
        metavar="URL",
        help="relay mode: serve the ruleset of this PhaseFlag API (its base_url) instead of a "
        "file; its key comes from PHASEFLAG_API_KEY or --upstream-key-file",
    )
    serve.add_argument("--upstream-key-file", help="file holding the upstream SDK key")
    serve.add_argument(
        "--upstream-mode",
        choices=("streaming", "polling"),
        default="streaming",
        help="how the relay follows the upstream (default streaming)",
    )
    serve.add_argument(
        "--redis", metavar="URL", help="relay mode: also publish the ruleset into Redis"
    )

    relay = commands.add_parser(
        "relay", help="fetch rulesets for a fleet and keep its Redis up to date (headless)"
    )
    relay.add_argument("--upstream", required=True, metavar="URL", help="the API root (/api/v1)")
    relay.add_argument(
        "--redis",
        metavar="URL",
        help="Redis URL (default: PHASEFLAG_REDIS_URL, else redis://localhost:6379/0)",
    )
    relay.add_argument(
        "--api-key-file", metavar="FILE", help="file holding the SDK key (else PHASEFLAG_API_KEY)"
    )
    relay.add_argument("--prefix", default="phaseflag", help="Redis key prefix (hash tag)")
    relay.add_argument("--fetch-mode", choices=("polling", "streaming"), default="polling")
    relay.add_argument("--polling-interval", type=float, metavar="SECONDS")
    relay.add_argument("--lease-time", type=float, default=10.0, metavar="SECONDS")
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
    if isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value):
        return key, value  # a list attribute
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
            flags = _many(len(ruleset.flags), "flag")
            print(f"{path}: ok ({flags}, {_many(len(ruleset.segments), 'segment')}, {kind})")
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


def _read_keys(path: str, what: str) -> list[str]:
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise _UsageError(f"{what} {path}: cannot read: {reason}") from None
    keys = [line.strip() for line in text.splitlines() if line.strip()]
    if not keys:
        raise _UsageError(f"{what} {path}: holds no key")
    return keys


def _server_keys(args: argparse.Namespace) -> list[str]:
    keys = list(args.api_keys)
    env = os.environ.get("PHASEFLAG_SERVER_API_KEY", "")
    keys += [key.strip() for key in env.split(",") if key.strip()]
    if args.api_key_file:
        keys += _read_keys(args.api_key_file, "--api-key-file")
    if keys and args.no_auth:
        raise _UsageError("--no-auth with API keys: choose one")
    if not keys and not args.no_auth:
        hint = (
            " (PHASEFLAG_API_KEY is the SDK's key, not the server's)"
            if os.environ.get("PHASEFLAG_API_KEY")
            else ""
        )
        raise _UsageError(
            "no API key: set PHASEFLAG_SERVER_API_KEY, give --api-key-file, or serve open "
            f"with --no-auth{hint}"
        )
    return keys


def _check_ruleset_file(path: str) -> None:
    target = Path(path)
    if target.is_dir():
        raise _UsageError(f"{path}: is a directory; give the ruleset's JSON file")
    if not target.exists():
        raise _UsageError(f"{path}: no such file")
    try:
        _load(path)
    except RulesetError as exc:
        raise _UsageError(f"{path}: {exc}") from None


def _serve(args: argparse.Namespace) -> int:
    try:
        from .server import Limits, run
    except ImportError as exc:
        raise _UsageError(
            f"phaseflag serve needs the server extra: pip install 'phaseflag-sdk[server]' ({exc})"
        ) from None
    if not 0 <= args.port <= 65535:
        raise _UsageError(f"--port {args.port}: must be 0-65535")
    if args.workers < 1:
        raise _UsageError(f"--workers {args.workers}: must be 1 or more")
    if args.max_body_bytes < 1024:
        raise _UsageError("--max-body-bytes: must be at least 1024")
    keys = _server_keys(args)
    options: dict[str, Any] = {
        "api_keys": keys,
        "events_out": args.events_out,
        "events_max_bytes": args.events_max_bytes or None,
        "events_keep": args.events_keep,
        "limits": Limits(max_body_bytes=args.max_body_bytes),
        "ui": args.ui,
    }
    if args.events_out and Path(args.events_out).is_dir():
        raise _UsageError(f"--events-out {args.events_out}: is a directory; give a file path")
    if args.upstream:
        if args.ruleset_file:
            raise _UsageError("give a RULESET_FILE or --upstream, not both")
        from .server import relay_source

        upstream_key = os.environ.get("PHASEFLAG_API_KEY", "")
        if args.upstream_key_file:
            upstream_key = _read_keys(args.upstream_key_file, "--upstream-key-file")[0]
        if not upstream_key:
            raise _UsageError(
                "--upstream needs the upstream SDK key: set PHASEFLAG_API_KEY or give "
                "--upstream-key-file"
            )
        options["source_factory"] = relay_source(
            args.upstream, upstream_key, fetch_mode=args.upstream_mode, redis_url=args.redis
        )
        run(None, host=args.host, port=args.port, workers=args.workers, **options)
        return 0
    if args.redis:
        raise _UsageError("--redis is for relay mode (--upstream)")
    if not args.ruleset_file:
        raise _UsageError("give a RULESET_FILE (or --upstream URL)")
    _check_ruleset_file(args.ruleset_file)
    run(args.ruleset_file, host=args.host, port=args.port, workers=args.workers, **options)
    return 0


def _api_key(args: argparse.Namespace) -> str:
    """The SDK key from ``--api-key-file`` or PHASEFLAG_API_KEY: never from the command line."""
    if args.api_key_file:
        try:
            key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise _UsageError(f"--api-key-file: cannot read: {exc.strerror or exc}") from None
        if not key:
            raise _UsageError("--api-key-file: the file is empty")
        return key
    key = os.environ.get("PHASEFLAG_API_KEY", "").strip()
    if not key:
        raise _UsageError("no SDK key: set PHASEFLAG_API_KEY or pass --api-key-file FILE")
    return key


def _relay(args: argparse.Namespace) -> int:
    """Lead (or stand by to lead) the fleet's Redis until SIGTERM/SIGINT."""
    from ._client import PhaseFlagClient

    try:
        from .redis import RedisCache
    except ImportError as exc:
        raise _UsageError(str(exc)) from None
    key = _api_key(args)
    url = args.redis or os.environ.get("PHASEFLAG_REDIS_URL") or "redis://localhost:6379/0"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s phaseflag relay: %(message)s"))
    logger = logging.getLogger("phaseflag")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    stopping = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stopping.set())
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    cache = RedisCache(url, args.prefix, lease_time=args.lease_time)
    client = PhaseFlagClient(
        base_url=args.upstream,
        api_key=key,
        cache=cache,
        fetch_mode=args.fetch_mode,
        polling_interval=args.polling_interval,
        send_events=False,
    )
    client.on(
        "change",
        lambda event: logger.info(
            "applied ruleset v%s (from %s, %d flags changed)",
            event.current_version,
            event.source,
            len(event.flags),
        ),
    )
    logger.info("relaying %s into %r", args.upstream, cache)
    try:
        client.start()
        while not stopping.wait(0.5):
            pass
        logger.info("stopping")
    finally:
        client.stop()
        for sig, old in previous.items():
            signal.signal(sig, old)
        logger.removeHandler(handler)
    return 0


def _many(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


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
        if args.command == "relay":
            return _relay(args)
        parser.print_help()
        return 2
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as cat does
        with contextlib.suppress(OSError):  # else Python reports stdout's failed flush at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell shows for a program killed by it
    except (PhaseFlagError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
