"""OpenFeature spec Gherkin scenarios (evaluation_v2, metadata) run against PhaseFlagProvider.

The upstream features and test-flags.json are read from ``shared/conformance`` (never
copied here); test-flags.json becomes a phaseflag ruleset, its CEL targeting translated
by hand below. Result: 84 of 87 scenarios pass; 3 are strict xfails: "CACHED reason" x2
(phaseflag evaluates locally and never serves cached results) and "Evaluation context
immutability" (the Python SDK's FlagEvaluationDetails is a mutable dataclass).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openfeature")

import responses
from conftest import CONFORMANCE, require_conformance, wait_for
from openfeature import api
from openfeature.evaluation_context import EvaluationContext as OpenFeatureContext
from openfeature.exception import OpenFeatureError
from openfeature.flag_evaluation import FlagEvaluationDetails, FlagEvaluationOptions
from openfeature.hook import Hook, HookContext, HookHints
from openfeature.provider import ProviderStatus

from phaseflag import PhaseFlagClient
from phaseflag.openfeature import PhaseFlagProvider
from phaseflag.testing import condition, flag, rule, ruleset

GHERKIN = CONFORMANCE / "openfeature-spec-gherkin"
FEATURES = ("evaluation_v2.feature", "metadata.feature")

require_conformance(GHERKIN / "test-flags.json", "OpenFeature conformance data")

UNREACHABLE = "http://127.0.0.1:1/api/v1"
API = "https://api.test/api/v1"

# Hand translation of the CEL ``contextEvaluator`` expressions in test-flags.json.
# ``cond ? 'variant' : ''`` becomes a rule serving the variant; '' falls to the default.
CEL_RULES: dict[str, list[dict[str, Any]]] = {
    "email == 'ballmer@macrosoft.com' ? 'zero' : ''": [
        rule(condition("email", "equals", "ballmer@macrosoft.com"), serve="zero"),
    ],
    "!customer && email == 'ballmer@macrosoft.com' && age > 10 ? 'internal' : ''": [
        rule(
            condition("customer", "equals", False),
            condition("email", "equals", "ballmer@macrosoft.com"),
            condition("age", "gt", 10),
            serve="internal",
        ),
    ],
}

# Scenarios phaseflag cannot meet by design (strict: they fail today).
XFAIL = {
    "CACHED reason": "phaseflag evaluates locally on every call; it never serves cached results",
    "Evaluation context immutability": (
        "the Python SDK's FlagEvaluationDetails is a mutable dataclass (the context part passes)"
    ),
}


# -- a tiny Gherkin reader: Feature, Background, Scenario (Outline), Examples, tables ------


@dataclass
class Step:
    text: str
    table: list[list[str]] = field(default_factory=list)


@dataclass
class Scenario:
    feature: str
    name: str
    steps: list[Step]
    example: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        values = ",".join(self.example.values())
        return f"{self.feature}:{self.name}" + (f"[{values}]" if values else "")


def _cells(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [_unescape(c.strip()) for c in cells]


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), text)


def parse_feature(path: Path) -> list[Scenario]:
    """Scenarios of one feature file, outlines expanded once per Examples row."""
    background: list[Step] = []
    out: list[Scenario] = []
    steps: list[Step] | None = None
    name = ""
    outline = False
    header: list[str] | None = None
    in_examples = False

    def finish() -> None:
        if steps is not None and not outline:
            out.append(Scenario(path.name, name, list(steps)))

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "@")):
            continue
        keyword, _, rest = line.partition(":")
        if keyword == "Background":
            steps, name, outline = background, "", True  # collected, never emitted alone
            continue
        if keyword in ("Scenario", "Scenario Outline"):
            finish()
            steps, name, outline = [], rest.strip(), keyword == "Scenario Outline"
            header, in_examples = None, False
            continue
        if keyword == "Examples":
            in_examples, header = True, None
            continue
        if line.startswith("|"):
            cells = _cells(line)
            if in_examples:
                if header is None:
                    header = cells
                else:
                    example = dict(zip(header, cells, strict=True))
                    expanded = [_substitute(s, example) for s in steps or []]
                    out.append(Scenario(path.name, name, expanded, example))
            elif steps:
                steps[-1].table.append(cells)
            continue
        if keyword.startswith("Feature"):
            continue
        step = re.sub(r"^(Given|When|Then|And|But)\s+", "", line)
        assert steps is not None, f"step outside a scenario: {line!r}"
        steps.append(Step(step))
    finish()
    return [
        Scenario(s.feature, s.name, [*background, *s.steps], s.example)
        for s in out
        if s.name  # the Background itself
    ]


def _substitute(step: Step, example: dict[str, str]) -> Step:
    def fill(text: str) -> str:
        return re.sub(r"<([^>]+)>", lambda m: example.get(m.group(1), m.group(0)), text)

    return Step(fill(step.text), [[fill(c) for c in row] for row in step.table])


# -- test-flags.json as a phaseflag ruleset ---------------------------------------------


def translate(flags: dict[str, Any]) -> dict[str, Any]:
    """The test-flags.json flags as one phaseflag ruleset document."""
    out = []
    for key, spec in flags.items():
        extra: dict[str, Any] = {}
        if spec.get("flagMetadata"):
            extra["metadata"] = spec["flagMetadata"]
        expression = spec.get("contextEvaluator")
        if expression is not None and expression not in CEL_RULES:
            raise AssertionError(f"untranslated contextEvaluator for {key!r}: {expression}")
        out.append(
            flag(
                key,
                variations=spec["variants"],
                default=spec.get("defaultVariant"),
                enabled=not spec.get("disabled", False),
                rules=CEL_RULES.get(expression or "", []),
                **extra,
            )
        )
    return ruleset(*out)


RULESET = translate(json.loads((GHERKIN / "test-flags.json").read_text(encoding="utf-8")))


# -- steps --------------------------------------------------------------------------------


class RecordingHook(Hook):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    def before(self, hook_context: HookContext, hints: HookHints) -> None:
        self.calls.append(f"before:{self.name}")

    def after(
        self, hook_context: HookContext, details: FlagEvaluationDetails[Any], hints: HookHints
    ) -> None:
        self.calls.append(f"after:{self.name}")


@dataclass
class World:
    stack: Any
    provider: PhaseFlagProvider | None = None
    flag_type: str = "Boolean"
    key: str = ""
    default: Any = None
    attributes: dict[str, Any] = field(default_factory=dict)
    details: FlagEvaluationDetails[Any] | None = None
    options: FlagEvaluationOptions | None = None
    calls: list[str] = field(default_factory=list)
    context: OpenFeatureContext | None = None
    context_copy: OpenFeatureContext | None = None
    elapsed: float = 0.0


def _value(flag_type: str, text: str) -> Any:
    if flag_type == "Boolean":
        return {"true": True, "false": False}[text]
    if flag_type == "Integer":
        return int(text)
    if flag_type == "Float":
        return float(text)
    if flag_type == "Object":
        return json.loads(text)
    return text


def _install(world: World, client: PhaseFlagClient, *, wait: bool = True, **kw: Any) -> None:
    world.provider = PhaseFlagProvider(client, **kw)
    if not wait:
        api.set_provider(world.provider)
        return
    with contextlib.suppress(OpenFeatureError):  # the status step checks the outcome
        api.set_provider_and_wait(world.provider)


def given_provider(world: World, kind: str) -> None:
    if kind == "stable":
        client = PhaseFlagClient(base_url="", api_key="", bootstrap=RULESET)
        _install(world, client)
    elif kind == "not ready":  # initialize is still waiting for an API that never answers
        client = PhaseFlagClient(base_url=UNREACHABLE, api_key="sdk-test-key-0000")
        _install(world, client, wait=False, init_timeout=30.0)
    elif kind == "error":  # no data within the init timeout
        client = PhaseFlagClient(base_url=UNREACHABLE, api_key="sdk-test-key-0000")
        _install(world, client, init_timeout=0.05)
    elif kind == "fatal":  # the API rejects the SDK key and no data is held
        world.stack.add(responses.GET, f"{API}/sdk/ruleset", status=401)
        client = PhaseFlagClient(base_url=API, api_key="sdk-bad-key-000000")
        _install(world, client, init_timeout=5.0)
    elif kind == "stale":  # bootstrap data, API down, max_staleness exceeded
        client = PhaseFlagClient(
            base_url=UNREACHABLE, api_key="sdk-test-key-0000", bootstrap=RULESET,
            offline_mode=True, polling_interval=0.05, max_staleness=0.3,
        )  # fmt: skip
        _install(world, client)

        def stale() -> bool:
            client.status()  # checks the data's age, emitting "stale" once it is too old
            return api.get_client().get_provider_status() is ProviderStatus.STALE

        wait_for(stale)
    else:
        raise AssertionError(f"unknown provider kind {kind!r}")


def _evaluate(world: World, options: FlagEvaluationOptions | None = None) -> None:
    client = api.get_client()
    method = getattr(client, f"get_{world.flag_type.lower()}_details")
    world.context = OpenFeatureContext(attributes=dict(world.attributes))
    world.details = method(world.key, world.default, world.context, options)


def _evaluate_async(world: World) -> None:
    client = api.get_client()
    method = getattr(client, f"get_{world.flag_type.lower()}_details_async")
    context = OpenFeatureContext(attributes=dict(world.attributes))
    start = time.perf_counter()
    world.details = asyncio.run(method(world.key, world.default, context))
    world.elapsed = time.perf_counter() - start


def _metadata_expected(table: list[list[str]]) -> dict[str, Any]:
    header, *rows = table
    out = {}
    for row in rows:
        item = dict(zip(header, row, strict=True))
        out[item["key"]] = _value(item["metadata_type"], item["value"])
    return out


def run_step(world: World, step: Step) -> None:
    text = step.text
    details = world.details
    if m := re.fullmatch(r"an? (stable|not ready|error|fatal|stale) provider", text):
        given_provider(world, m.group(1))
    elif m := re.fullmatch(r'an? (\w+)-flag with key "(.*)" and a fallback value "(.*)"', text):
        world.flag_type, world.key = m.group(1), m.group(2)
        world.default = _value(world.flag_type, m.group(3))
    elif m := re.fullmatch(
        r'a context containing a key "(.*)", with type "(\w+)" and with value "(.*)"', text
    ):
        world.attributes[m.group(1)] = _value(m.group(2), m.group(3))
    elif m := re.fullmatch(r'a context containing a key "(.*)" with null value', text):
        world.attributes[m.group(1)] = None
    elif text == "the flag was evaluated with details":
        _evaluate(world)
    elif text == "the flag was evaluated with details asynchronously":
        _evaluate_async(world)
    elif text == "the evaluation should complete without blocking":
        assert details is not None and world.elapsed < 1.0
    elif m := re.fullmatch(r'the resolved details value should be "(.*)"', text):
        assert details is not None
        expected = _value(world.flag_type, _unescape(m.group(1)))
        assert details.value == expected and type(details.value) is type(expected)
    elif m := re.fullmatch(r'the reason should be "(.*)"', text):
        assert details is not None and details.reason == m.group(1), details
    elif m := re.fullmatch(r'the error-code should be "(.*)"', text):
        assert details is not None and details.error_code == m.group(1), details
    elif m := re.fullmatch(r'the flag key should be "(.*)"', text):
        assert details is not None and details.flag_key == m.group(1)
    elif m := re.fullmatch(r'the variant should be "(.*)"', text):
        assert details is not None and details.variant == m.group(1), details
    elif text == "the resolved metadata should contain":
        assert details is not None
        expected = _metadata_expected(step.table)
        assert {k: details.flag_metadata.get(k) for k in expected} == expected
    elif text == "the resolved metadata is empty":
        assert details is not None and dict(details.flag_metadata) == {}
    elif m := re.fullmatch(r'the provider status should be "(.*)"', text):
        assert api.get_client().get_provider_status() == ProviderStatus(m.group(1))
    elif text == "evaluation options containing specific hooks":
        hooks: list[Hook] = [
            RecordingHook("first", world.calls),
            RecordingHook("second", world.calls),
        ]
        world.options = FlagEvaluationOptions(hooks=hooks)
    elif text == "the flag was evaluated with details using the evaluation options":
        _evaluate(world, world.options)
    elif text == "the specified hooks should execute during evaluation":
        assert set(world.calls) == {"before:first", "before:second", "after:first", "after:second"}
    elif text == "the hook order should be maintained":
        # Spec 4.4.2: before hooks in order, after hooks in reverse order.
        assert world.calls == ["before:first", "before:second", "after:second", "after:first"]
    elif text == "an evaluation context with modifiable data":
        world.attributes = {"email": "ballmer@macrosoft.com", "age": 65}
        world.context_copy = OpenFeatureContext(attributes=copy.deepcopy(world.attributes))
    elif text == "the original evaluation context should remain unmodified":
        assert world.context == world.context_copy
    elif text == "the evaluation details should be immutable":
        assert details is not None
        with pytest.raises((AttributeError, TypeError)):
            details.value = "tampered"
    else:
        raise NotImplementedError(f"no step matches {text!r}")


# -- the test ------------------------------------------------------------------------------

SCENARIOS = [s for name in FEATURES for s in parse_feature(GHERKIN / name)]


def _param(scenario: Scenario) -> Any:
    marks = []
    if scenario.name in XFAIL:
        marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[scenario.name]))
    return pytest.param(scenario, id=scenario.id, marks=marks)


@pytest.fixture
def world() -> Iterator[World]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as stack:
        stack.add_passthru("http://127.0.0.1")
        w = World(stack)
        try:
            yield w
        finally:
            api.shutdown()


@pytest.mark.parametrize("scenario", [_param(s) for s in SCENARIOS])
def test_scenario(world: World, scenario: Scenario) -> None:
    """Each OpenFeature Gherkin scenario holds for PhaseFlagProvider."""
    for step in scenario.steps:
        run_step(world, step)


def test_every_scenario_was_collected() -> None:
    """The reader found every scenario and example row of both feature files."""
    assert len(SCENARIOS) == 87
    assert len({s.id for s in SCENARIOS}) == len(SCENARIOS)
