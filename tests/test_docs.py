"""Every ```python snippet in README.md and docs/*.md runs, in order, as written.

The snippets of one page share a namespace (a page reads like one session). The API URL and
key the README uses are served by a real ``PhaseFlagServer`` on loopback holding the sample
ruleset, and the illustrative paths are pointed at the sample files and a temporary
directory; nothing else in a snippet is changed. A page that needs more than that declares
the markers of its test in an HTML comment, e.g. ``<!-- snippet-markers: e2e redis -->``,
and pages that start a server are ``e2e``. A snippet made of ``# app.py`` and
``# test_app.py`` parts is written out as those files and run with pytest, as a user would.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "bootstrap_samples" / "ruleset.json"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: What the README's examples connect to; the test serves exactly this URL's role locally.
DOC_URL = "https://api.phaseflag.com/api/v1"
DOC_KEY = "sdk-dev-xxxxxxxxxxxx"
#: The Redis the fleet pages use; a page naming it is served by a real redis-server.
DOC_REDIS = "redis://redis.internal:6379/0"

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_MARKERS = re.compile(r"<!--\s*snippet-markers:\s*([\w\s]+?)\s*-->")


def snippets(page: Path) -> list[str]:
    """The page's ```python blocks, in order."""
    return _BLOCK.findall(page.read_text(encoding="utf-8"))


def _needs_server(page: Path) -> bool:
    return DOC_URL in page.read_text(encoding="utf-8") or "PhaseFlagServer" in page.read_text(
        encoding="utf-8"
    )


def _params() -> Iterator[Any]:
    for page in PAGES:
        if not snippets(page):
            continue
        text = page.read_text(encoding="utf-8")
        marks = [getattr(pytest.mark, name) for m in _MARKERS.findall(text) for name in m.split()]
        if _needs_server(page) and pytest.mark.e2e not in marks:
            marks.append(pytest.mark.e2e)
        yield pytest.param(page, marks=marks, id=str(page.relative_to(ROOT)))


def test_every_page_with_snippets_is_collected() -> None:
    """The README has snippets, and every docs page is in mkdocs.yml's nav."""
    assert len(snippets(ROOT / "README.md")) >= 5
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in (ROOT / "docs").glob("*.md"):
        assert page.name in nav, f"docs/{page.name} is not in mkdocs.yml's nav"


def test_docs_never_link_outside_the_repository() -> None:
    """No page links to ../shared or another path outside the repository."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert "../shared" not in text, page
        assert "DESIGN.md" not in text, page
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if "://" in target:
                continue
            resolved = (page.parent / target).resolve()
            assert resolved.is_relative_to(ROOT), f"{page.name} links outside the repo: {target}"
            assert resolved.exists(), f"{page.name} links to a missing file: {target}"


def _run_pytest_example(code: str, tmp_path: Path) -> None:
    """Write ``# app.py`` / ``# test_app.py`` parts to files and run pytest on them."""
    parts = re.split(r"^# (\w+\.py)\n", code, flags=re.M)
    files = dict(zip(parts[1::2], parts[2::2], strict=True))
    assert files, "expected '# name.py' parts"
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    plugins = {ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    if "phaseflag.pytest_plugin" not in plugins:
        args += ["-p", "phaseflag.pytest_plugin"]  # not installed: load the plugin by name
    done = subprocess.run(
        [*args, str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])},
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("page", list(_params()))
def test_snippets_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each snippet of the page runs without error, after the ones before it."""
    from phaseflag import PhaseFlagClient

    monkeypatch.chdir(ROOT)
    started: list[PhaseFlagClient] = []
    real_start = PhaseFlagClient.start

    def start(self: PhaseFlagClient) -> None:
        started.append(self)
        real_start(self)

    monkeypatch.setattr(PhaseFlagClient, "start", start)
    replacements = {
        "/etc/phaseflag/bootstrap.json": str(SAMPLE),
        "/var/cache/myapp/phaseflag": str(tmp_path / "cache"),
    }
    server = None
    if DOC_URL in page.read_text(encoding="utf-8"):
        from phaseflag.server import PhaseFlagServer

        server = PhaseFlagServer(SAMPLE, api_keys=[DOC_KEY])
        server.start()
        replacements[DOC_URL] = server.url
    redis = contextlib.ExitStack()
    if DOC_REDIS in page.read_text(encoding="utf-8"):  # pages marked redis: a real server
        from redis_support import redis_servers

        (redis_server,) = redis.enter_context(redis_servers(1))
        replacements[DOC_REDIS] = redis_server.url
    namespace: dict[str, Any] = {"__name__": f"snippets_{page.stem}"}
    try:
        for number, code in enumerate(snippets(page), 1):
            for old, new in replacements.items():
                code = code.replace(old, new)
            if code.startswith("# app.py"):
                _run_pytest_example(code, tmp_path / f"example{number}")
                continue
            where = f"{page.relative_to(ROOT)} snippet {number}"
            exec(compile(code, where, "exec"), namespace)
    finally:
        for value in list(namespace.values()):
            if isinstance(value, PhaseFlagClient):
                started.append(value)
        if "openfeature" in sys.modules:
            from openfeature import api

            api.shutdown()
        for client in started:
            client.stop()
        if server is not None:
            server.stop()
        redis.close()


def _option_table() -> dict[str, tuple[str, str]]:
    """docs/configuration.md's option table: option -> (env variable cell, default cell)."""
    rows: dict[str, tuple[str, str]] = {}
    for line in (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        for option in re.findall(r"`(\w+)`", cells[0]):
            rows[option] = (cells[1], cells[2])
    return rows


def _literal(cell: str) -> Any:
    """A documented default as a value: a backticked literal, or None for "—"/"off"."""
    if cell in ("—", "off"):
        return None
    match = re.fullmatch(r"`(.+)`", cell)
    assert match, f"unreadable default {cell!r}"
    return ast.literal_eval(match.group(1))


def test_configuration_table_matches_the_code() -> None:
    """Every option of the table is a constructor argument; its env variable and default
    are the ones _config resolves, and every env-configurable option is in the table."""
    from phaseflag import AsyncPhaseFlagClient, PhaseFlagClient
    from phaseflag._config import _DEFAULTS, _PARSERS, ENV_PREFIX

    table = _option_table()
    parameters = set(inspect.signature(PhaseFlagClient).parameters)
    assert set(table) == parameters, "options missing from the table or from the client"
    assert set(inspect.signature(AsyncPhaseFlagClient).parameters) >= parameters
    for option in _PARSERS:
        documented = "cache" if option == "cache_dir" else option
        env_cell, default_cell = table[documented]
        assert f"`{ENV_PREFIX}{option.upper()}`" in env_cell, (option, env_cell)
        if option in _DEFAULTS and option != "cache_dir":
            assert _literal(default_cell) == _DEFAULTS[option], (option, default_cell)
    for option in ("headers", "default_context"):  # the JSON-valued variables
        assert f"`{ENV_PREFIX}{option.upper()}`" in table[option][0]


def _docstring_defaults() -> dict[str, Any]:
    """The ``(default)`` each option's description in the client docstring states."""
    from phaseflag import PhaseFlagClient

    doc = inspect.getdoc(PhaseFlagClient) or ""
    args = doc.split("Args:", 1)[1]
    found: dict[str, Any] = {}
    for name, text in re.findall(r"^    (\w+): (.*?)(?=^    \w+: |\Z)", args, re.S | re.M):
        for word in re.findall(r"\((\w+)(?:;[^()]*)?\)", text):
            if word == "off":
                found[name] = None
            elif word.isdigit() or word in ("True", "False"):
                found[name] = ast.literal_eval(word)

    return found


def test_client_docstring_defaults_match_the_code() -> None:
    """The defaults PhaseFlagClient's docstring states are the ones _config applies."""
    from phaseflag._config import _DEFAULTS

    stated = _docstring_defaults()
    assert {"polling_interval", "event_batch_size", "max_event_queue_size"} <= set(stated)
    for option, value in stated.items():
        assert value == _DEFAULTS[option], (option, value)


def test_event_pipeline_defaults_match_the_options() -> None:
    """The event pipeline's own keyword defaults equal the client's documented ones."""
    from phaseflag._config import _DEFAULTS
    from phaseflag._events import EventProcessor

    parameters = inspect.signature(EventProcessor).parameters
    for own, option in (
        ("flush_interval", "event_flush_interval"),
        ("batch_size", "event_batch_size"),
        ("max_queue_size", "max_event_queue_size"),
    ):
        assert parameters[own].default == _DEFAULTS[option], own


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub and MkDocs both make it (plain ASCII headings)."""
    text = re.sub(r"[`*_\[\]()]|<[^>]+>", "", heading).strip().lower()
    return re.sub(r"\s+", "-", re.sub(r"[^\w\s-]", "", text))


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_every_link_anchor_names_a_heading() -> None:
    """Each ``(page#anchor)`` and ``(#anchor)`` link in README and docs lands on a heading,
    and every web link is one of the illustrative hosts (no guessed project URLs)."""
    for page in PAGES:
        text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", text):
            if "://" in target:
                continue
            linked = (page.parent / target).resolve() if target else page
            assert anchor in _anchors(linked), f"{page.name}: no heading for {target}#{anchor}"
        for url in re.findall(r"\]\((\w+://[^)\s]+)\)", text):
            raise AssertionError(f"{page.name} links to the web: {url}")


#: Every phaseflag API docs/migration.md maps a peer SDK's feature to, as "module:attribute".
MIGRATION_APIS = [
    *(
        f"phaseflag:PhaseFlagClient.{name}"
        for name in (
            "start",
            "wait_until_ready",
            "stop",
            "get_boolean_value",
            "get_string_value",
            "get_integer_value",
            "get_float_value",
            "get_json_value",
            "get_variation",
            "all_flags",
            "on",
            "on_flags_changed",
            "on_flag_value_change",
            "track_event",
            "polling_interval",
        )
    ),
    "phaseflag:AsyncPhaseFlagClient.wait_until_ready",
    "phaseflag:AsyncPhaseFlagClient.aclose",
    "phaseflag:AsyncPhaseFlagClient.__aenter__",
    "phaseflag:ChangeEvent.keys",
    "phaseflag:FileCache",
    "phaseflag:Cache",
    "phaseflag.testing:create_mock_client",
    "phaseflag.redis:RedisCache",
]

#: Constructor options the migration tables name.
MIGRATION_OPTIONS = [
    "base_url",
    "api_key",
    "polling_interval",
    "default_context",
    "bootstrap",
    "bootstrap_file",
    "bootstrap_url",
    "cache",
    "headers",
    "fallback",
    "fetch_mode",
    "debug",
]


@pytest.mark.parametrize("api", MIGRATION_APIS)
def test_migration_page_apis_exist(api: str) -> None:
    """Each API the migration page maps a peer's feature to exists where it says."""
    module_name, _, path = api.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in path.split("."):
        target = getattr(target, part)
    assert target is not None


def test_migration_page_options_fields_and_events_exist() -> None:
    """The options, result and change fields, and event names the page uses are real."""
    import dataclasses

    from phaseflag import (
        AsyncPhaseFlagClient,
        ChangeEvent,
        EvaluationResult,
        FlagChange,
        PhaseFlagClient,
    )

    text = (ROOT / "docs" / "migration.md").read_text(encoding="utf-8")
    for option in MIGRATION_OPTIONS:
        assert f"{option}=" in text, option  # the list follows the page
        assert option in inspect.signature(PhaseFlagClient).parameters, option
        assert option in inspect.signature(AsyncPhaseFlagClient).parameters, option
    assert "details" in inspect.signature(PhaseFlagClient.all_flags).parameters
    fields = {f.name for f in dataclasses.fields(FlagChange)}
    assert {"key", "previous", "current", "previous_version", "current_version"} <= fields
    assert "flags" in {f.name for f in dataclasses.fields(ChangeEvent)}
    result = EvaluationResult("f", True, "default", "on")
    for name in ("variation_key", "value", "rule_id", "reason"):
        getattr(result, name)
    client = PhaseFlagClient(base_url="", api_key="")
    try:
        for event in ("ready", "change", "error", "stale"):
            client.on(event, lambda *args: None)()
    finally:
        client.stop()


def test_documented_retry_bounds_are_the_codes() -> None:
    """The retry and stream numbers the pages state are the constants the sync code uses."""
    from phaseflag import _backoff, _stream
    from phaseflag._transport import Transport

    assert (_backoff.AUTH_BACKOFF_BASE, _backoff.AUTH_BACKOFF_CAP) == (60.0, 3600.0)
    assert (_backoff.RETRY_BASE, _backoff.RETRY_CAP, _backoff.MAX_RETRY_AFTER) == (1, 300, 600)
    assert _stream.IDLE_LIMIT == 300.0
    assert inspect.signature(Transport).parameters["stream_read_timeout"].default == 60.0
    config = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    server = (ROOT / "docs" / "server.md").read_text(encoding="utf-8")
    for text in (config, server):
        assert "30\u201360 s" in text and ("1 h" in text or "an hour" in text)
        assert "5 min" in text or "5 minutes" in text
        assert "10 min" in text
    assert "60 s\nof silence" in server and "1 s doubling to\n5 min" in server


def test_readme_first_commands_name_real_things() -> None:
    """The README's first block: the quick start it runs exists, the extra it installs has
    pytest and pytest-xdist (for ``-n auto``), and it names the system tools the suite needs."""
    first = re.search(r"^```bash\n(.*?)^```", (ROOT / "README.md").read_text("utf-8"), re.S | re.M)
    assert first is not None
    block = first.group(1)
    for script in re.findall(r"python (\S+\.py)", block):
        assert (ROOT / script).is_file(), script
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")  # no tomllib on Python 3.10
    dev = pyproject.split("\ndev = [", 1)[1].split("]", 1)[0]
    assert "pip install -e '.[dev]'" in block and "pytest-xdist" in dev and "pytest>" in dev
    assert "-n auto" in block and "-m unit" in block
    assert "redis-server" in block and "chromium" in block  # tests fail, never skip, without


def _ruleset_page_table(heading: str) -> list[list[str]]:
    """The rows (cells) of the first table under ``## heading`` in docs/ruleset.md."""
    text = (ROOT / "docs" / "ruleset.md").read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|").split("|") for line in section.splitlines()]
    return [[c.strip() for c in row] for row in rows if len(row) >= 3][2:]  # past head, rule


def test_ruleset_page_operators_are_the_compilers() -> None:
    """docs/ruleset.md's operator table names exactly the operators the compiler knows."""
    from phaseflag._operators import OPERATORS

    documented = {
        name for row in _ruleset_page_table("Operators") for name in re.findall(r"`(\w+)`", row[0])
    }
    assert documented - {"in_segment"} == set(OPERATORS)  # in_segment: the segment compiler's
    from phaseflag import compile_ruleset

    def flag(operator: str) -> dict[str, Any]:
        condition = {"attribute": "plan", "operator": operator, "values": ["s"]}
        return {
            "key": operator,
            "type": "boolean",
            "variations": [{"key": "on", "value": True}],
            "rules": [{"conditions": [condition], "serve": {"variation": "on"}}],
        }

    segments = [{"key": "s", "included": ["u"]}]
    loaded = compile_ruleset(
        {
            "schema_version": 1,
            "flags": [flag("in_segment"), flag("no_such_op")],
            "segments": segments,
        }
    )
    problems = [message for _, message in loaded.problems]
    assert problems == ["unknown operator 'no_such_op'"]  # in_segment is known


def test_ruleset_page_limits_are_the_codes() -> None:
    """Each limit docs/ruleset.md states is the constant or schema bound that enforces it."""
    import json

    from phaseflag import _compile, _compile_segments, _operators, _parse, _readcost

    schema = json.loads((ROOT / "phaseflag" / "schema" / "ruleset.schema.json").read_text())
    defs = schema["$defs"]
    flag = defs["flag"]["properties"]
    code = {
        "document size": f"{_parse.MAX_DOCUMENT_BYTES // 2**20} MiB",
        "JSON nesting": f"{_parse.MAX_JSON_DEPTH} levels",
        "key length": f"{defs['key']['maxLength']} characters",
        "variations per flag": str(flag["variations"]["maxItems"]),
        "rollout variations": str(defs["rollout"]["properties"]["variations"]["maxItems"]),
        "rules per flag": str(flag["rules"]["maxItems"]),
        "or segment": str(defs["segment"]["properties"]["rules"]["maxItems"]),
        "conditions per rule": str(defs["rule"]["properties"]["conditions"]["maxItems"]),
        "prerequisites per flag": str(flag["prerequisites"]["maxItems"]),
        "prerequisite chain": f"{_compile.MAX_PREREQUISITE_DEPTH} deep",
        "segment chain": f"{_compile_segments.MAX_SEGMENT_DEPTH} deep",
        "conditions one read": f"{_readcost.MAX_READ_CONDITIONS:,}",
        "regex pattern": f"{_operators.MAX_REGEX_LENGTH} characters",
        "tested by `matches`": f"{_operators.MAX_REGEX_INPUT} characters",
    }
    rows = _ruleset_page_table("Limits")
    for limit, stated in code.items():
        (row,) = [row for row in rows if limit in row[0]]
        assert row[1].startswith(stated), (limit, row[1], stated)


def test_fleet_page_options_are_redis_caches() -> None:
    """docs/fleet.md's RedisCache table lists exactly its parameters, with their defaults."""
    pytest.importorskip("redis")
    from phaseflag.redis import RedisCache

    text = (ROOT / "docs" / "fleet.md").read_text(encoding="utf-8")
    section = text.split("\n## Options\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, re.M)
    parameters = inspect.signature(RedisCache).parameters
    assert [name for name, _ in rows] == list(parameters)
    for name, stated in rows:
        default = parameters[name].default
        stated = stated.strip().strip("`").removesuffix(" s")
        assert stated == str(default) or float(stated) == default, (name, stated, default)


_FRAMEWORK_EXAMPLES = """
import os, sys
from phaseflag.server import PhaseFlagServer

with PhaseFlagServer(sys.argv[1], api_keys=["sdk-dev-123456789"]) as server:
    os.environ.update(PHASEFLAG_BASE_URL=server.url, PHASEFLAG_API_KEY="sdk-dev-123456789")
    import django
    from django.conf import settings

    settings.configure(INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"])
    django.setup()
    from django.contrib.auth.models import AnonymousUser
    from django.test import RequestFactory

    import examples.django_views as views

    views.FlagsConfig("flags", views).ready()
    assert views.client.wait_until_ready(10)
    request = RequestFactory().get("/checkout")
    request.user = AnonymousUser()
    request.session = type("Session", (), {"session_key": "sess-abc"})()
    print("django", views.checkout(request).content.decode())
    views.client.stop()
    try:
        import examples.celery_worker as worker
    except ImportError:  # celery is not a dev dependency
        sys.exit(0)
    worker.start_flags()
    print("celery", worker.send_receipt("user-123", "pro"), "/", worker.send_receipt("u", "free"))
    worker.stop_flags()
"""


@pytest.mark.e2e
def test_django_and_celery_examples_run() -> None:
    """examples/django_views.py and examples/celery_worker.py (when celery is installed)
    read flags configured from PHASEFLAG_* variables, against a loopback server."""
    pytest.importorskip("django")
    done = subprocess.run(
        [sys.executable, "-c", _FRAMEWORK_EXAMPLES, str(SAMPLE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert 'django {"flow": "legacy"}' in done.stdout  # an anonymous session: the default
    if "celery" in done.stdout:
        assert "celery new receipt template / legacy receipt template" in done.stdout


def test_docs_index_lists_every_page() -> None:
    """docs/index.md, the site's home, links every other page of docs/."""
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "index.md":
            assert f"]({page.name})" in index, f"docs/index.md does not link {page.name}"


def test_server_page_limits_are_the_defaults() -> None:
    """docs/server.md's limits table states the defaults of ``Limits``."""
    pytest.importorskip("uvicorn")
    from phaseflag.server._limits import Limits

    limits = Limits()
    text = (ROOT / "docs" / "server.md").read_text(encoding="utf-8")
    expected = {
        "request head (line and headers)": f"{limits.max_header_bytes // 1024} KiB, "
        f"{limits.max_headers} headers, {limits.max_request_line // 1024} KiB request line",
        "time to send the request head": f"{limits.header_timeout:g} s",
        "connections per client address": f"{limits.max_connections_per_client:,}",
        "connections in total": f"{limits.max_connections:,}",
        "request body": f"{limits.max_body_bytes // 2**20} MiB",
        "idle keep-alive connection": f"{limits.idle_timeout:g} s",
    }
    for what, stated in expected.items():
        (row,) = re.findall(rf"^\| [^|]*{re.escape(what)} \| ([^|]+) \|", text, re.M)
        assert row.strip().startswith(stated), (what, row, stated)


def test_every_dotted_phaseflag_name_in_the_docs_exists() -> None:
    """Each `phaseflag.x.y` the README and docs name is a module or attribute (or one of
    the OpenTelemetry metric names phaseflag.otel registers)."""
    metrics = (ROOT / "phaseflag" / "otel.py").read_text(encoding="utf-8")
    checked = 0
    for page in PAGES:
        for name in set(re.findall(r"`(phaseflag(?:\.\w+)+)", page.read_text(encoding="utf-8"))):
            if f'"{name}"' in metrics:
                continue
            parts = name.split(".")
            for split in range(len(parts), 0, -1):
                try:
                    target: Any = importlib.import_module(".".join(parts[:split]))
                except ModuleNotFoundError as exc:
                    if not (exc.name or "").startswith("phaseflag"):
                        pytest.skip(f"{name} needs {exc.name}, not installed")
                    continue
                break
            for attribute in parts[split:]:
                assert hasattr(target, attribute), f"{page.name}: {name} does not exist"
                target = getattr(target, attribute)
            checked += 1
    assert checked >= 10


def test_every_client_method_the_docs_name_exists() -> None:
    """Each ``client.name`` in backticks in the README and docs is a method or property of
    the sync or async client (the peers' names, first cells of migration.md's tables, aside)."""
    from phaseflag import AsyncPhaseFlagClient, PhaseFlagClient

    checked = set()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        if page.name == "migration.md":
            text = re.sub(r"^\|[^|]*\|", "|", text, flags=re.M)  # the other SDK's column
        for name in set(re.findall(r"`[^`\n]*?\bclient\.(\w+)", text)):
            assert hasattr(PhaseFlagClient, name) or hasattr(AsyncPhaseFlagClient, name), (
                f"{page.name}: client.{name} does not exist"
            )
            checked.add(name)
    assert len(checked) >= 15
