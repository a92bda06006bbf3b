"""Peer comparison: scenarios S1-S4 in phaseflag and in the SDKs users would pick instead.

Run: ``pip install -r benchmarks/requirements-peers.txt`` then
``python benchmarks/compare_peers.py [--rounds N] [--json PATH]``. Every SDK evaluates
equivalent flags locally, offline (no network: any URL points at a closed loopback
port), for the same pre-built contexts. Rounds are interleaved; the table shows the
median ns per evaluation and each peer's ratio to phaseflag, and is printed as
markdown for the README. Answers are checked before and during timing (rollouts by
their ~50% split, since each SDK hashes differently). A peer that cannot be installed
or run is reported as skipped with the reason. Then the load row (bench_load.py's
``load_row()``: 10,000 flags loaded by each SDK in a fresh process, ``--load-rounds``
rounds, 0 to leave it out), in the same run so its ratios compare like the reads'.
Exit status 1 when a target is missed.
"""

from __future__ import annotations

import base64
import gc
import importlib.metadata
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_evaluation as scen
from _common import machine_info, main_of, target

from phaseflag import EvaluationContext, PhaseFlagClient

SCENARIOS = ("S1", "S2", "S3", "S4", "S2c")  # S2c: S2 with the context built per call
TARGET_RATIO = 5.0
#: phaseflag ÷ dict+if at most this on S1-S3, below 1 on S4 (issue 15).
BASELINE_RATIO = 2.0
SAMPLE_SECONDS = 0.02  # time one sample for about this long
MAX_BATCH = 2000
MIN_BATCH = 100
S2_PLANS = ["pro", "enterprise"]
S4_PLANS = ["pro", "enterprise", "team"]
S4_MINIMUMS = [f"{9 - i}.0.0" for i in range(9)] + ["1.0.0"]  # rule i: app_version >= this
SPLIT_TOLERANCE = 0.025  # a 50% rollout must serve 47.5%-52.5% of 10,000 users
LOAD_FLAGS = 10_000  # issue 15: 10,000 realistic flags ready to serve

Batch = Callable[[Sequence[Any]], list[Any]]


@dataclass
class Sdk:
    """One SDK under test: how to build its contexts and run a batch of evaluations."""

    name: str
    native: Callable[[dict[str, Any]], Any]  # plain context dict -> the SDK's context
    batches: dict[str, Batch]  # scenario -> evaluate every context, return the values
    note: str = ""
    close: Callable[[], None] = lambda: None
    contexts: list[Any] = field(default_factory=list)
    plain: list[dict[str, Any]] = field(default_factory=list)  # S2c builds from these

    def __post_init__(self) -> None:
        # S2c: each SDK's own context built from the plain dict, then its S2 read.
        if "S2c" not in self.batches:
            s2, native = self.batches["S2"], self.native
            self.batches["S2c"] = lambda ps: s2([native(p) for p in ps])


class Skip(Exception):
    """A peer cannot be installed or run here; the message says why."""


# -- the plain contexts every SDK converts ------------------------------------------------


def plain_contexts() -> list[dict[str, Any]]:
    """bench_evaluation's 10,000 users, then probes that reach every S2/S4 branch."""
    _, plain = scen.make_contexts()
    probes = []
    for n, (plan, age, version) in enumerate(
        (plan, age, version)
        for plan in ("pro", "enterprise", "team", "free")
        for age in (5, 31)
        for version in ("0.9.0", "1.0.0", "1.2.3", "4.0.0", "9.0.0", "10.1.0")
    ):
        probes.append(
            {
                "user_id": f"probe-{n}",
                "plan": plan,
                "account_age": age,
                "app_version": version,
                "country": "US",
                "beta": False,
            }
        )
    return plain + probes


def expected(plain: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The right answers, from bench_evaluation's hand-written dict+if baseline.

    S3 is phaseflag's exact bucketing; peers hash differently and are checked by split.
    S4's 50% rollout (rule 9) is unreachable: rule 8 already serves everyone >= 1.0.0.
    """
    return {
        "S1": [scen.base_s1(p) for p in plain],
        "S2": [scen.base_s2(p) for p in plain],
        "S3": [scen.base_s3(p) for p in plain],
        "S4": [scen.base_s4(p) for p in plain],
        "S2c": [scen.base_s2(p) for p in plain],
    }


def closed_port() -> int:
    """A loopback port nothing listens on, so a peer that tries the network fails fast."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _getter_batches(get_bool: Callable[..., Any], get_str: Callable[..., Any]) -> dict[str, Batch]:
    """S1-S3 through a ``(key, default, context)`` boolean getter, S4 through a string one."""
    return {
        "S1": lambda cs: [get_bool("s1", False, c) for c in cs],
        "S2": lambda cs: [get_bool("s2", False, c) for c in cs],
        "S3": lambda cs: [get_bool("s3", False, c) for c in cs],
        "S4": lambda cs: [get_str("s4", "x", c) for c in cs],
    }


# -- phaseflag and the dict+if baseline ---------------------------------------------------


def make_phaseflag() -> Sdk:
    client = PhaseFlagClient(base_url="", api_key="", bootstrap=scen.build_ruleset())
    get_bool, get_str = client.get_boolean_value, client.get_string_value

    def native(p: dict[str, Any]) -> EvaluationContext:
        return EvaluationContext.from_dict(p)  # the converter for a flat dict like p

    return Sdk(
        "phaseflag",
        native,
        _getter_batches(get_bool, get_str),
        note=f"phaseflag-sdk {_version('phaseflag-sdk')}",
        close=client.stop,
    )


def make_baseline() -> Sdk:
    return Sdk(
        "dict+if",
        dict,
        {
            "S1": lambda cs: [scen.base_s1(c) for c in cs],
            "S2": lambda cs: [scen.base_s2(c) for c in cs],
            "S3": lambda cs: [scen.base_s3(c) for c in cs],
            "S4": lambda cs: [scen.base_s4(c) for c in cs],
        },
        note="hand-written dict lookups and ifs (bench_evaluation.py)",
    )


# -- Unleash ------------------------------------------------------------------------------


def make_unleash(port: int) -> Sdk:
    try:
        from UnleashClient import UnleashClient
        from UnleashClient.cache import BaseCache
        from UnleashClient.constants import FEATURES_URL
    except ImportError as exc:
        raise Skip(f"not installed ({exc})") from None

    class _MemoryCache(BaseCache):  # bootstrap from a dict, no cache files
        def __init__(self, features: dict[str, Any]) -> None:
            self._data: dict[str, Any] = {FEATURES_URL: json.dumps(features)}
            self.bootstrapped = True

        def set(self, key: str, value: Any) -> None:
            self._data[key] = value

        def mset(self, data: dict[str, Any]) -> None:
            self._data.update(data)

        def get(self, key: str, default: Any = None) -> Any:
            return self._data.get(key, default)

        def exists(self, key: str) -> bool:
            return key in self._data

        def destroy(self) -> None:
            self._data.clear()

    def rollout(percent: int, group: str, constraints: list[Any]) -> dict[str, Any]:
        params = {"rollout": str(percent), "stickiness": "userId", "groupId": group}
        return {"name": "flexibleRollout", "parameters": params, "constraints": constraints}

    def s4_rule(minimum: str) -> list[dict[str, Any]]:
        return [
            {"contextName": "plan", "operator": "IN", "values": S4_PLANS},
            {"contextName": "account_age", "operator": "NUM_GT", "value": "10"},
            # Unleash has no SEMVER_GTE: "not below" is the same test.
            {
                "contextName": "app_version",
                "operator": "SEMVER_LT",
                "value": minimum,
                "inverted": True,
            },
        ]

    s4 = [rollout(100, "s4", s4_rule(m)) for m in S4_MINIMUMS[:9]]
    s4.append(rollout(50, "s4", s4_rule(S4_MINIMUMS[9])))
    paid = [{"contextName": "plan", "operator": "IN", "values": S2_PLANS}]
    features = {
        "version": 2,
        "features": [
            {"name": "s1", "enabled": True, "strategies": [{"name": "default"}]},
            {
                "name": "s2",
                "enabled": True,
                "strategies": [{"name": "default", "constraints": paid}],
            },
            {"name": "s3", "enabled": True, "strategies": [rollout(50, "s3", [])]},
            {"name": "s4", "enabled": True, "strategies": s4},
        ],
    }
    client = UnleashClient(
        url=f"http://127.0.0.1:{port}/api",
        app_name="phaseflag-bench",
        refresh_interval=3600,
        disable_metrics=True,
        disable_registration=True,
        cache=_MemoryCache(features),
    )
    client.initialize_client(fetch_toggles=False)  # offline: serve the bootstrap only
    enabled = client.is_enabled

    def native(p: dict[str, Any]) -> dict[str, Any]:
        props = {k: str(v) for k, v in p.items() if k != "user_id"}
        return {"userId": p["user_id"], "properties": props}

    return Sdk(
        "unleash",
        native,
        {
            "S1": lambda cs: [enabled("s1", c) for c in cs],
            "S2": lambda cs: [enabled("s2", c) for c in cs],
            "S3": lambda cs: [enabled("s3", c) for c in cs],
            "S4": lambda cs: ["on" if enabled("s4", c) else "off" for c in cs],
        },
        note=f"UnleashClient {_version('UnleashClient')} (Rust engine yggdrasil "
        f"{_version('yggdrasil-engine')}); is_enabled, S4 as enabled -> 'on'",
        close=client.destroy,
    )


# -- LaunchDarkly -------------------------------------------------------------------------


def make_launchdarkly(port: int) -> Sdk:
    try:
        import ldclient
        from ldclient import Context
        from ldclient.config import Config
        from ldclient.integrations.test_data import FlagBuilder, TestData
    except ImportError as exc:
        raise Skip(f"not installed ({exc})") from None

    class _Flag(FlagBuilder):
        """A full flag model for TestData, whose builder has no rollouts or gt/semver."""

        def __init__(self, model: dict[str, Any]) -> None:
            super().__init__(model["key"])
            self._model = model

        def _build(self, version: int) -> dict[str, Any]:
            return {**json.loads(json.dumps(self._model)), "version": version}

        def _copy(self) -> _Flag:
            return _Flag(self._model)

    def clause(attr: str, op: str, values: list[Any], negate: bool = False) -> dict[str, Any]:
        return {"attribute": attr, "op": op, "values": values, "negate": negate}

    def flag(key: str, variations: list[Any], rules: list[Any], fallthrough: Any) -> Any:
        return _Flag(
            {
                "key": key,
                "on": True,
                "variations": variations,
                "offVariation": 1,
                "fallthrough": fallthrough,
                "targets": [],
                "contextTargets": [],
                "prerequisites": [],
                "rules": rules,
                "salt": key,
                "trackEvents": False,
                "trackEventsFallthrough": False,
            }
        )

    halves = [{"variation": 0, "weight": 50_000}, {"variation": 1, "weight": 50_000}]
    split = {"rollout": {"variations": halves}}

    def s4_rule(i: int, minimum: str) -> dict[str, Any]:
        clauses = [
            clause("plan", "in", S4_PLANS),
            clause("account_age", "greaterThan", [10]),
            clause("app_version", "semVerLessThan", [minimum], negate=True),  # >= minimum
        ]
        serve = split if i == 9 else {"variation": 0}
        return {"id": f"r{i}", "clauses": clauses, **serve}

    data = TestData.data_source()
    data.update(flag("s1", [True, False], [], {"variation": 0}))
    paid_rule = {"id": "paid", "clauses": [clause("plan", "in", S2_PLANS)], "variation": 0}
    data.update(flag("s2", [True, False], [paid_rule], {"variation": 1}))
    data.update(flag("s3", [True, False], [], split))
    s4_rules = [s4_rule(i, m) for i, m in enumerate(S4_MINIMUMS)]
    data.update(flag("s4", ["on", "off"], s4_rules, {"variation": 1}))
    nowhere = f"http://127.0.0.1:{port}"
    config = Config(
        "sdk-key-bench",
        update_processor_class=data,
        send_events=False,
        diagnostic_opt_out=True,
        base_uri=nowhere,
        events_uri=nowhere,
        stream_uri=nowhere,
    )
    client = ldclient.LDClient(config=config)
    if not client.is_initialized():
        raise Skip("LDClient did not initialise from TestData")
    variation = client.variation

    def native(p: dict[str, Any]) -> Any:
        builder = Context.builder(p["user_id"])
        for k, v in p.items():
            if k != "user_id":
                builder.set(k, v)
        return builder.build()

    return Sdk(
        "launchdarkly",
        native,
        {
            "S1": lambda cs: [variation("s1", c, False) for c in cs],
            "S2": lambda cs: [variation("s2", c, False) for c in cs],
            "S3": lambda cs: [variation("s3", c, False) for c in cs],
            "S4": lambda cs: [variation("s4", c, "x") for c in cs],
        },
        note=f"launchdarkly-server-sdk {_version('launchdarkly-server-sdk')}; TestData "
        "data source with full flag models, events off",
        close=client.close,
    )


# -- GrowthBook ---------------------------------------------------------------------------


def make_growthbook() -> Sdk:
    try:
        from growthbook import GrowthBook
    except ImportError as exc:
        raise Skip(f"not installed ({exc})") from None

    def s4_rule(i: int, minimum: str) -> dict[str, Any]:
        condition = {
            "plan": {"$in": S4_PLANS},
            "account_age": {"$gt": 10},
            "app_version": {"$vgte": minimum},
        }
        rule: dict[str, Any] = {"condition": condition, "force": "on"}
        if i == 9:
            rule.update(coverage=0.5, hashAttribute="user_id", seed="s4", hashVersion=2)
        return rule

    features = {
        "s1": {"defaultValue": True},
        "s2": {
            "defaultValue": False,
            "rules": [{"condition": {"plan": {"$in": S2_PLANS}}, "force": True}],
        },
        "s3": {
            "defaultValue": False,
            "rules": [
                {"force": True, "coverage": 0.5, "hashAttribute": "user_id", "seed": "s3"}
                | {"hashVersion": 2}
            ],
        },
        "s4": {
            "defaultValue": "off",
            "rules": [s4_rule(i, m) for i, m in enumerate(S4_MINIMUMS)],
        },
    }
    gb = GrowthBook(features=features)  # no api_host/client_key: local evaluation only
    set_attributes, is_on, value = gb.set_attributes, gb.is_on, gb.get_feature_value

    def on(key: str, cs: Sequence[dict[str, Any]]) -> list[bool]:
        out = []
        for c in cs:
            set_attributes(c)
            out.append(is_on(key))
        return out

    def s4(cs: Sequence[dict[str, Any]]) -> list[Any]:
        out = []
        for c in cs:
            set_attributes(c)
            out.append(value("s4", "x"))
        return out

    def native(p: dict[str, Any]) -> dict[str, Any]:
        return p  # its attributes are a flat dict like p (hashAttribute "user_id")

    return Sdk(
        "growthbook",
        native,
        {
            "S1": lambda cs: on("s1", cs),
            "S2": lambda cs: on("s2", cs),
            "S3": lambda cs: on("s3", cs),
            "S4": s4,
        },
        note=f"growthbook {_version('growthbook')}; one shared instance, "
        "set_attributes() per user (its fastest pattern; not thread-safe)",
        close=gb.destroy,
    )


# -- OpenFeature flagd, in-process ----------------------------------------------------------


def make_flagd(port: int, workdir: str) -> Sdk:
    try:
        from openfeature import api
        from openfeature.contrib.provider.flagd import FlagdProvider
        from openfeature.contrib.provider.flagd.config import ResolverType
        from openfeature.evaluation_context import EvaluationContext as OFContext
    except ImportError as exc:
        raise Skip(f"not installed ({exc})") from None

    def s4_test(minimum: str) -> dict[str, Any]:
        return {
            "and": [
                {"in": [{"var": "plan"}, S4_PLANS]},
                {">": [{"var": "account_age"}, 10]},
                {"sem_ver": [{"var": "app_version"}, ">=", minimum]},
            ]
        }

    half = {"fractional": [["on", 50], ["off", 50]]}
    s4_if: list[Any] = []
    for minimum in S4_MINIMUMS[:9]:
        s4_if += [s4_test(minimum), "on"]
    s4_if += [s4_test(S4_MINIMUMS[9]), half, "off"]
    boolean = {"on": True, "off": False}
    flags = {
        "flags": {
            "s1": {"state": "ENABLED", "variants": boolean, "defaultVariant": "on"},
            "s2": {
                "state": "ENABLED",
                "variants": boolean,
                "defaultVariant": "off",
                "targeting": {"if": [{"in": [{"var": "plan"}, S2_PLANS]}, "on", "off"]},
            },
            "s3": {
                "state": "ENABLED",
                "variants": boolean,
                "defaultVariant": "off",
                "targeting": half,
            },
            "s4": {
                "state": "ENABLED",
                "variants": {"on": "on", "off": "off"},
                "defaultVariant": "off",
                "targeting": {"if": s4_if},
            },
        }
    }
    path = Path(workdir, "flagd.json")
    path.write_text(json.dumps(flags), "utf-8")
    provider = FlagdProvider(
        resolver_type=ResolverType.IN_PROCESS,
        offline_flag_source_path=str(path),
        host="127.0.0.1",
        port=port,
    )
    api.set_provider(provider)
    client = api.get_client()
    get_bool, get_str = client.get_boolean_value, client.get_string_value

    def native(p: dict[str, Any]) -> Any:
        return OFContext(p["user_id"], {k: v for k, v in p.items() if k != "user_id"})

    return Sdk(
        "flagd",
        native,
        _getter_batches(get_bool, get_str),
        note=f"openfeature-provider-flagd {_version('openfeature-provider-flagd')}, "
        "in-process resolver on an offline flag file, through the OpenFeature client",
        close=api.shutdown,
    )


# -- Flipt client-side engine -------------------------------------------------------------


def make_flipt(port: int) -> Sdk:
    # Its Rust engine aborts the whole process when the start-up fetch fails while
    # RUST_BACKTRACE=1 (capturing the error's backtrace crashes); don't capture one.
    os.environ["RUST_LIB_BACKTRACE"] = "0"
    try:
        from flipt_client import FliptClient
        from flipt_client.models import ClientOptions, ErrorStrategy
    except ImportError as exc:
        raise Skip(f"not installed ({exc})") from None

    def segment(key: str, constraints: list[tuple[str, str, str, str]]) -> dict[str, Any]:
        return {
            "segment_key": key,
            "match_type": "ALL_SEGMENT_MATCH_TYPE",
            "constraints": [
                {"type": f"{kind}_CONSTRAINT_COMPARISON_TYPE", "property": prop}
                | {"operator": op, "value": value}
                for kind, prop, op, value in constraints
            ],
        }

    def boolean(key: str, enabled: bool, rollouts: list[Any]) -> None:
        flags[key] = {"key": key, "enabled": enabled, "type": "BOOLEAN_FLAG_TYPE"}
        rules[key], flag_rollouts[key] = [], rollouts

    flags: dict[str, Any] = {}
    rules: dict[str, Any] = {}
    flag_rollouts: dict[str, Any] = {}
    distributions: dict[str, Any] = {}
    boolean("s1", True, [])
    paid = segment("paid", [("STRING", "plan", "isoneof", json.dumps(S2_PLANS))])
    when_paid = {
        "value": True,
        "segment_operator": "OR_SEGMENT_OPERATOR",
        "segments": {"paid": paid},
    }
    boolean(
        "s2", False, [{"rollout_type": "SEGMENT_ROLLOUT_TYPE", "rank": 1, "segment": when_paid}]
    )
    half = {"percentage": 50.0, "value": True}
    boolean("s3", False, [{"rollout_type": "THRESHOLD_ROLLOUT_TYPE", "rank": 1, "threshold": half}])
    flags["s4"] = {
        "key": "s4",
        "enabled": True,
        "type": "VARIANT_FLAG_TYPE",
        "default_variant": {"id": "off", "key": "off"},
    }
    rules["s4"], flag_rollouts["s4"] = [], []
    for i, minimum in enumerate(S4_MINIMUMS):
        rule_id = f"s4-{i + 1}"
        # Flipt has no semver operator: the context carries app_major (>= N.0.0 <=> major >= N).
        group = segment(
            f"r{i}",
            [
                ("STRING", "plan", "isoneof", json.dumps(S4_PLANS)),
                ("NUMBER", "account_age", "gt", "10"),
                ("NUMBER", "app_major", "gte", minimum.split(".")[0]),
            ],
        )
        rules["s4"].append(
            {
                "id": rule_id,
                "flag_key": "s4",
                "rank": i + 1,
                "segment_operator": "OR_SEGMENT_OPERATOR",
                "segments": {f"r{i}": group},
            }
        )
        shares = [("on", 50.0), ("off", 50.0)] if i == 9 else [("on", 100.0)]
        distributions[rule_id] = [
            {"rule_id": rule_id, "rollout": share, "variant_key": variant}
            for variant, share in shares
        ]
    namespace = {
        "key": "default",
        "flags": flags,
        "eval_rules": rules,
        "eval_rollouts": flag_rollouts,
        "eval_distributions": distributions,
    }
    snapshot = base64.b64encode(json.dumps({"version": 1, "namespace": namespace}).encode())
    client = FliptClient(
        ClientOptions(
            url=f"http://127.0.0.1:{port}",
            update_interval=3600,
            request_timeout=1,
            error_strategy=ErrorStrategy.FALLBACK,
            snapshot=snapshot.decode(),
        )
    )
    boolean_eval, variant_eval = client.evaluate_boolean, client.evaluate_variant

    def native(p: dict[str, Any]) -> tuple[str, dict[str, str]]:
        attrs = {k: str(v) for k, v in p.items() if k != "user_id"}
        attrs["app_major"] = str(p["app_version"]).split(".")[0]
        return p["user_id"], attrs

    def on(key: str, cs: Sequence[tuple[str, dict[str, str]]]) -> list[bool]:
        return [boolean_eval(key, entity, ctx).enabled for entity, ctx in cs]

    return Sdk(
        "flipt",
        native,
        {
            "S1": lambda cs: on("s1", cs),
            "S2": lambda cs: on("s2", cs),
            "S3": lambda cs: on("s3", cs),
            "S4": lambda cs: [variant_eval("s4", e, c).variant_key for e, c in cs],
        },
        note=f"flipt-client {_version('flipt-client')}; seeded from a snapshot, "
        "fallback error strategy (no server); S4 compares a pre-split app_major",
        close=client.close,
    )


# -- checking and timing ------------------------------------------------------------------


def check(sdk: Sdk, want: dict[str, list[Any]], n_users: int) -> None:
    """Raise AssertionError unless ``sdk`` answers every scenario right for every context."""
    for name in SCENARIOS:
        got = sdk.batches[name](sdk.plain if name == "S2c" else sdk.contexts)
        if name == "S3" and sdk.name not in ("phaseflag", "dict+if"):
            share = sum(1 for v in got[:n_users] if v is True) / n_users
            if any(v not in (True, False) for v in got) or abs(share - 0.5) > SPLIT_TOLERANCE:
                raise AssertionError(f"S3 serves true to {share:.1%} of users, not ~50%")
            want[f"S3:{sdk.name}"] = got  # its own buckets, checked again while timing
            continue
        bad = [i for i, (g, w) in enumerate(zip(got, want[name], strict=True)) if g != w]
        if bad:
            i = bad[0]
            raise AssertionError(
                f"{name}: {len(bad)} wrong answers, e.g. {got[i]!r} instead of "
                f"{want[name][i]!r} for context #{i}"
            )


def batch_size(sdk: Sdk, name: str, indices: Sequence[int]) -> int:
    """How many evaluations make one sample of about SAMPLE_SECONDS for this SDK."""
    source = sdk.plain if name == "S2c" else sdk.contexts
    sample = [source[i] for i in indices[:MIN_BATCH]]
    start = time.perf_counter()
    sdk.batches[name](sample)
    per_eval = (time.perf_counter() - start) / len(sample)
    return max(MIN_BATCH, min(MAX_BATCH, int(SAMPLE_SECONDS / per_eval)))


def measure(
    sdks: list[Sdk], want: dict[str, list[Any]], indices: dict[str, list[int]], rounds: int
) -> dict[str, dict[str, float]]:
    """Median ns per evaluation of each SDK and scenario, over interleaved rounds.

    Each sample's answers are compared with the checked ones, so a sample that hit an
    error path (a default value) fails the run instead of looking fast.
    """
    sizes = {(s.name, n): batch_size(s, n, indices[n]) for s in sdks for n in SCENARIOS}
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in sizes}
    for r in range(rounds):
        gc.collect()
        gc.disable()
        try:
            for name in SCENARIOS:
                order = sdks[r % len(sdks) :] + sdks[: r % len(sdks)]  # rotate who goes first
                for sdk in order:
                    idx = indices[name][: sizes[sdk.name, name]]
                    source = sdk.plain if name == "S2c" else sdk.contexts
                    contexts = [source[i] for i in idx]
                    start = time.perf_counter_ns()
                    got = sdk.batches[name](contexts)
                    elapsed = time.perf_counter_ns() - start
                    reference = want.get(f"{name}:{sdk.name}", want[name])
                    if got != [reference[i] for i in idx]:
                        raise AssertionError(f"{sdk.name} {name}: answers changed while timing")
                    samples[sdk.name, name].append(elapsed / len(idx))
        finally:
            gc.enable()
    medians: dict[str, dict[str, float]] = {s.name: {} for s in sdks}
    for (sdk_name, name), values in samples.items():
        medians[sdk_name][name] = statistics.median(values)
    return medians


def build_peers(workdir: str) -> tuple[list[Sdk], dict[str, dict[str, str]]]:
    port = closed_port()
    makers: dict[str, Callable[[], Sdk]] = {
        "unleash": lambda: make_unleash(port),
        "launchdarkly": lambda: make_launchdarkly(port),
        "growthbook": make_growthbook,
        "flagd": lambda: make_flagd(port, workdir),
        "flipt": lambda: make_flipt(port),
    }
    peers, status = [], {}
    for name, make in makers.items():
        start = time.perf_counter()
        try:
            sdk = make()
        except Skip as exc:
            status[name] = {"status": "skipped", "reason": str(exc)}
            continue
        except Exception as exc:  # a peer that cannot run here is skipped, not a failure
            status[name] = {"status": "skipped", "reason": f"{type(exc).__name__}: {exc}"}
            continue
        status[name] = {"status": "ok", "note": sdk.note}
        status[name]["setup_seconds"] = f"{time.perf_counter() - start:.2f}"
        peers.append(sdk)
    return peers, status


def run(rounds: int, load_rounds: int) -> dict[str, Any]:
    plain = plain_contexts()
    n_users = scen.N_CONTEXTS
    want = expected(plain)
    paid = [i for i in range(n_users) if plain[i]["plan"] == "pro"]
    indices = {"S1": list(range(n_users)), "S2": list(range(n_users))}
    indices |= {"S3": list(range(n_users)), "S4": paid, "S2c": list(range(n_users))}
    with tempfile.TemporaryDirectory() as workdir:
        peers, status = build_peers(workdir)
        own = [make_phaseflag(), make_baseline()]
        for sdk in own + peers:
            sdk.contexts = [sdk.native(p) for p in plain]
            sdk.plain = plain
        for sdk in own:
            check(sdk, want, n_users)  # phaseflag wrong is a hard failure
        checked = []
        for sdk in peers:
            try:
                check(sdk, want, n_users)
            except Exception as exc:
                status[sdk.name] = {"status": "skipped", "reason": f"wrong answers: {exc}"}
                continue
            checked.append(sdk)
        try:
            medians = measure(own + checked, want, indices, rounds)
        finally:
            for sdk in own + peers:
                try:
                    sdk.close()
                except Exception as exc:
                    print(f"warning: closing {sdk.name} failed: {exc}", file=sys.stderr)
    results: dict[str, Any] = {}
    for name in SCENARIOS:
        ours = medians["phaseflag"][name]
        peer_ns = {s.name: medians[s.name][name] for s in checked}
        best = min(peer_ns, key=peer_ns.__getitem__) if peer_ns else None
        best_ratio = peer_ns[best] / ours if best else None
        base = medians["dict+if"][name]
        results[name] = {
            "phaseflag_ns": round(ours, 1),
            "baseline_ns": round(base, 1),
            "ratio_to_baseline": round(ours / base, 2),
            "peers_ns": {k: round(v, 1) for k, v in peer_ns.items()},
            "ratios": {k: round(v / ours, 2) for k, v in peer_ns.items()},
            "best_peer": best,
            "best_peer_ratio": None if best_ratio is None else round(best_ratio, 2),
            "met": best_ratio is not None and best_ratio >= TARGET_RATIO,
        }
    targets = [
        target(
            f"peers {name}: fastest peer / phaseflag",
            row["best_peer_ratio"],
            f"x ({row['best_peer']})",
            f">= {TARGET_RATIO:g}",
            row["met"],
        )
        for name, row in results.items()
    ]
    for name, row in results.items():
        if name == "S2c":
            continue
        wanted, met = (
            ("< 1", row["ratio_to_baseline"] < 1)
            if name == "S4"
            else (f"<= {BASELINE_RATIO:g}", row["ratio_to_baseline"] <= BASELINE_RATIO)
        )
        targets.append(
            target(f"peers {name}: phaseflag / dict+if", row["ratio_to_baseline"], "x", wanted, met)
        )
    load: dict[str, Any] = {}
    if load_rounds > 0:
        from bench_load import load_row, load_targets

        load = load_row(LOAD_FLAGS, load_rounds)
        targets += load_targets(load, LOAD_FLAGS)
    return {
        **machine_info(),
        "rounds": rounds,
        "peers": status,
        "results": results,
        "load": load,
        "targets": targets,
    }


def _ns(value: float) -> str:
    return f"{value:,.0f} ns" if value < 10_000 else f"{value / 1000:,.1f} µs"


def markdown(report: dict[str, Any]) -> str:
    """The README table: median per evaluation, and each peer's ratio to phaseflag; then
    the load rows (time to the first correct read and RSS added, 10,000 flags)."""
    peers = [k for k, v in report["peers"].items() if v["status"] == "ok"]
    head = ["scenario", "phaseflag", "dict+if", "phaseflag ÷ dict+if", *peers]
    head.append("fastest peer ÷ phaseflag")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in report["results"].items():
        cells = [name, _ns(row["phaseflag_ns"]), _ns(row["baseline_ns"])]
        cells.append(f"{row['ratio_to_baseline']:.2f}x")
        cells += [f"{_ns(row['peers_ns'][p])} ({row['ratios'][p]:.1f}x)" for p in peers]
        best = row["best_peer_ratio"]
        cells.append(f"{best:.1f}x ({row['best_peer']})" if best else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    load = report.get("load") or {}
    ours = load.get("phaseflag", {})
    if "median_s" in ours:
        for label, key, unit in (
            ("load 10k flags", "median_s", "{:,.0f} ms"),
            ("RSS added, 10k flags", "added_rss_mb", "{:,.1f} MB"),
        ):
            scale = 1000.0 if key == "median_s" else 1.0
            mine = ours[key]
            ratios = {p: load[p][key] / mine for p in peers if "median_s" in load.get(p, {})}
            cells = [label, unit.format(mine * scale), "—", "—"]
            cells += [
                f"{unit.format(load[p][key] * scale)} ({ratios[p]:.1f}x)" if p in ratios else "n/a"
                for p in peers
            ]
            best = min(ratios, key=ratios.__getitem__) if ratios else None
            cells.append(f"{ratios[best]:.2f}x ({best})" if best else "n/a")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def show(report: dict[str, Any]) -> None:
    print(markdown(report))
    print()
    for name, info in report["peers"].items():
        detail = info.get("note") if info["status"] == "ok" else info["reason"]
        print(f"{name:<13}{info['status']:<9}{detail}")
    for name, row in (report.get("load") or {}).items():
        if "skipped" in row:
            print(f"load: {name} skipped: {row['skipped']}")
    print(f"\nmedian ns per evaluation over {report['rounds']} interleaved rounds; target: every")
    print(f"scenario's fastest peer >= {TARGET_RATIO:g}x slower than phaseflag")


def main() -> int:
    options = {"--rounds": 15, "--load-rounds": (3, "rounds of the load row; 0 leaves it out")}
    return main_of(__doc__, "results_peers.json", run, show, options=options)


if __name__ == "__main__":
    sys.exit(main())
