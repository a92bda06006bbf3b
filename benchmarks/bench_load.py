"""Load 10,000 realistic flags: phaseflag against the peers, each in a fresh process.

Run: ``python benchmarks/bench_load.py [--flags 10000] [--rounds 3] [--json PATH]``
(peers from ``pip install -r benchmarks/requirements-peers.txt``; a missing one is
skipped with the reason). Every SDK gets the same 10,000 flags in its own format,
cycling the four shapes of the peer benchmark (S1 on for everyone, S2 an ``in`` rule
on plan, S3 a 50% rollout, S4 ten rules of three conditions with a semver test), each
flag with its own key and values. Each measurement runs in a new interpreter with the
SDK imported and its document's bytes already read: the time is from those bytes to
the first correct evaluation (ready to serve), and the memory is VmRSS added after
``gc.collect()``. Rounds interleave the SDKs; the median is reported. Exit status 1
when phaseflag loads slower than the fastest peer or adds more memory than GrowthBook.
``load_row()`` is the function compare_peers.py can call for its load row.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import machine_info, main_of, target

HERE = Path(__file__).resolve().parent
SHAPES = ("S1", "S2", "S3", "S4")
MINIMUMS = [f"{9 - i}.0.0" for i in range(9)] + ["1.0.0"]
PEERS = ("phaseflag", "growthbook", "flipt", "unleash", "launchdarkly", "flagd")
#: Minutes per load here: measured in the first round only.
SLOW = frozenset({"launchdarkly"})


def _shape(i: int) -> str:
    return SHAPES[i % 4]


def _plans(i: int) -> list[str]:
    return ["pro", "enterprise", f"team-{i}"]


# -- the same flags in each SDK's format ---------------------------------------------------


def phaseflag_doc(n: int) -> dict[str, Any]:
    bool_vars = [{"key": "on", "value": True}, {"key": "off", "value": False}]
    half = {"rollout": {"variations": [{"variation": "on", "weight": 50},
                                       {"variation": "off", "weight": 50}]}}  # fmt: skip
    flags = []
    for i in range(n):
        key, shape = f"f{i:05d}", _shape(i)
        flag: dict[str, Any] = {"key": key, "type": "boolean", "variations": bool_vars}
        if shape == "S1":
            flag["default"] = {"variation": "on"}
        elif shape == "S2":
            cond = {"attribute": "plan", "operator": "in", "values": _plans(i)}
            flag["rules"] = [{"id": "paid", "conditions": [cond], "serve": {"variation": "on"}}]
            flag["default"] = {"variation": "off"}
        elif shape == "S3":
            flag["default"] = half
        else:
            flag["type"] = "string"
            flag["variations"] = [{"key": "on", "value": "on"}, {"key": "off", "value": "off"}]
            flag["rules"] = [
                {
                    "id": f"r{r}",
                    "conditions": [
                        {"attribute": "plan", "operator": "in", "values": _plans(i)},
                        {"attribute": "account_age", "operator": "gt", "values": [10]},
                        {"attribute": "app_version", "operator": "semver_gte", "values": [m]},
                    ],
                    "serve": half if r == 9 else {"variation": "on"},
                }
                for r, m in enumerate(MINIMUMS)
            ]
            flag["default"] = {"variation": "off"}
        flags.append(flag)
    return {"schema_version": 1, "version": 1, "flags": flags}


def growthbook_doc(n: int) -> dict[str, Any]:
    features: dict[str, Any] = {}
    for i in range(n):
        key, shape = f"f{i:05d}", _shape(i)
        if shape == "S1":
            features[key] = {"defaultValue": True}
        elif shape == "S2":
            rule = {"condition": {"plan": {"$in": _plans(i)}}, "force": True}
            features[key] = {"defaultValue": False, "rules": [rule]}
        elif shape == "S3":
            rule = {"force": True, "coverage": 0.5, "hashAttribute": "id", "seed": key}
            features[key] = {"defaultValue": False, "rules": [rule | {"hashVersion": 2}]}
        else:
            rules = []
            for r, m in enumerate(MINIMUMS):
                cond = {"plan": {"$in": _plans(i)}, "account_age": {"$gt": 10},
                        "app_version": {"$vgte": m}}  # fmt: skip
                rule: dict[str, Any] = {"condition": cond, "force": "on"}
                if r == 9:
                    rule.update(coverage=0.5, hashAttribute="id", seed=key, hashVersion=2)
                rules.append(rule)
            features[key] = {"defaultValue": "off", "rules": rules}
    return {"features": features}


def unleash_doc(n: int) -> dict[str, Any]:
    def rollout(percent: int, group: str, constraints: list[Any]) -> dict[str, Any]:
        params = {"rollout": str(percent), "stickiness": "userId", "groupId": group}
        return {"name": "flexibleRollout", "parameters": params, "constraints": constraints}

    features = []
    for i in range(n):
        key, shape = f"f{i:05d}", _shape(i)
        plans = {"contextName": "plan", "operator": "IN", "values": _plans(i)}
        if shape == "S1":
            strategies: list[Any] = [{"name": "default"}]
        elif shape == "S2":
            strategies = [{"name": "default", "constraints": [plans]}]
        elif shape == "S3":
            strategies = [rollout(50, key, [])]
        else:
            strategies = [
                rollout(
                    50 if r == 9 else 100,
                    key,
                    [
                        plans,
                        {"contextName": "account_age", "operator": "NUM_GT", "value": "10"},
                        {
                            "contextName": "app_version",
                            "operator": "SEMVER_LT",
                            "value": m,
                            "inverted": True,
                        },
                    ],
                )
                for r, m in enumerate(MINIMUMS)
            ]
        features.append({"name": key, "enabled": True, "strategies": strategies})
    return {"version": 2, "features": features}


def launchdarkly_doc(n: int) -> dict[str, Any]:
    def clause(attr: str, op: str, values: list[Any], negate: bool = False) -> dict[str, Any]:
        return {"attribute": attr, "op": op, "values": values, "negate": negate}

    halves = [{"variation": 0, "weight": 50_000}, {"variation": 1, "weight": 50_000}]
    flags: dict[str, Any] = {}
    for i in range(n):
        key, shape = f"f{i:05d}", _shape(i)
        variations: list[Any] = [True, False]
        rules: list[Any] = []
        fallthrough: dict[str, Any] = {"variation": 0}
        if shape == "S2":
            rules = [{"id": "paid", "clauses": [clause("plan", "in", _plans(i))], "variation": 0}]
            fallthrough = {"variation": 1}
        elif shape == "S3":
            fallthrough = {"rollout": {"variations": halves}}
        elif shape == "S4":
            variations = ["on", "off"]
            fallthrough = {"variation": 1}
            for r, m in enumerate(MINIMUMS):
                clauses = [
                    clause("plan", "in", _plans(i)),
                    clause("account_age", "greaterThan", [10]),
                    clause("app_version", "semVerLessThan", [m], negate=True),
                ]
                serve = {"rollout": {"variations": halves}} if r == 9 else {"variation": 0}
                rules.append({"id": f"r{r}", "clauses": clauses, **serve})
        flags[key] = {
            "key": key, "version": 1, "on": True, "variations": variations,
            "offVariation": 1, "fallthrough": fallthrough, "targets": [], "rules": rules,
            "prerequisites": [], "salt": key, "trackEvents": False,
        }  # fmt: skip
    return {"flags": flags, "segments": {}}


def flagd_doc(n: int) -> dict[str, Any]:
    half = {"fractional": [["on", 50], ["off", 50]]}
    boolean = {"on": True, "off": False}
    flags: dict[str, Any] = {}
    for i in range(n):
        key, shape = f"f{i:05d}", _shape(i)
        if shape == "S1":
            flags[key] = {"state": "ENABLED", "variants": boolean, "defaultVariant": "on"}
        elif shape == "S2":
            test = {"if": [{"in": [{"var": "plan"}, _plans(i)]}, "on", "off"]}
            flags[key] = {"state": "ENABLED", "variants": boolean, "defaultVariant": "off",
                          "targeting": test}  # fmt: skip
        elif shape == "S3":
            flags[key] = {"state": "ENABLED", "variants": boolean, "defaultVariant": "off",
                          "targeting": half}  # fmt: skip
        else:
            chain: list[Any] = []
            for r, m in enumerate(MINIMUMS):
                test = {"and": [{"in": [{"var": "plan"}, _plans(i)]},
                                {">": [{"var": "account_age"}, 10]},
                                {"sem_ver": [{"var": "app_version"}, ">=", m]}]}  # fmt: skip
                chain += [test, half if r == 9 else "on"]
            flags[key] = {"state": "ENABLED", "variants": {"on": "on", "off": "off"},
                          "defaultVariant": "off",
                          "targeting": {"if": [*chain, "off"]}}  # fmt: skip
    return {"flags": flags}


def flipt_doc(n: int) -> dict[str, Any]:
    def segment(key: str, constraints: list[tuple[str, str, str, str]]) -> dict[str, Any]:
        return {
            "segment_key": key,
            "match_type": "ALL_SEGMENT_MATCH_TYPE",
            "constraints": [
                {"type": f"{kind}_CONSTRAINT_COMPARISON_TYPE", "property": prop,
                 "operator": op, "value": value}
                for kind, prop, op, value in constraints
            ],
        }  # fmt: skip

    flags: dict[str, Any] = {}
    rules: dict[str, Any] = {}
    rollouts: dict[str, Any] = {}
    distributions: dict[str, Any] = {}
    for i in range(n):
        key, shape = f"f{i:05d}", _shape(i)
        plans = ("STRING", "plan", "isoneof", json.dumps(_plans(i)))
        if shape != "S4":
            flags[key] = {"key": key, "enabled": shape == "S1" or True,
                          "type": "BOOLEAN_FLAG_TYPE"}  # fmt: skip
            rules[key] = []
            if shape == "S1":
                rollouts[key] = []
            elif shape == "S2":
                seg = {"value": True, "segment_operator": "OR_SEGMENT_OPERATOR",
                       "segments": {f"paid-{i}": segment(f"paid-{i}", [plans])}}  # fmt: skip
                rollouts[key] = [{"rollout_type": "SEGMENT_ROLLOUT_TYPE", "rank": 1,
                                  "segment": seg}]  # fmt: skip
            else:
                rollouts[key] = [{"rollout_type": "THRESHOLD_ROLLOUT_TYPE", "rank": 1,
                                  "threshold": {"percentage": 50.0, "value": True}}]  # fmt: skip
            continue
        flags[key] = {"key": key, "enabled": True, "type": "VARIANT_FLAG_TYPE",
                      "default_variant": {"id": "off", "key": "off"}}  # fmt: skip
        rules[key], rollouts[key] = [], []
        for r, m in enumerate(MINIMUMS):
            rule_id = f"{key}-{r + 1}"
            major = ("NUMBER", "app_major", "gte", m.split(".")[0])
            group = segment(f"{key}-r{r}", [plans, ("NUMBER", "account_age", "gt", "10"), major])
            rules[key].append({"id": rule_id, "flag_key": key, "rank": r + 1,
                               "segment_operator": "OR_SEGMENT_OPERATOR",
                               "segments": {f"{key}-r{r}": group}})  # fmt: skip
            shares = [("on", 50.0), ("off", 50.0)] if r == 9 else [("on", 100.0)]
            distributions[rule_id] = [
                {"rule_id": rule_id, "rollout": share, "variant_key": variant}
                for variant, share in shares
            ]
    namespace = {"key": "default", "flags": flags, "eval_rules": rules,
                 "eval_rollouts": rollouts, "eval_distributions": distributions}  # fmt: skip
    return {"version": 1, "namespace": namespace}


DOCUMENTS = {
    "phaseflag": phaseflag_doc,
    "growthbook": growthbook_doc,
    "unleash": unleash_doc,
    "launchdarkly": launchdarkly_doc,
    "flagd": flagd_doc,
    "flipt": flipt_doc,
}

# -- the child: bytes -> ready to serve -----------------------------------------------------

_CHILD = r"""
import gc, json, os, sys, time
sys.path.insert(0, sys.argv[3])
from _common import rss_bytes
sdk, path, last = sys.argv[1], sys.argv[2], sys.argv[4]
PRO = {"user_id": "u-1", "plan": "pro", "account_age": 31, "app_version": "9.1.0", "country": "US"}
if sdk == "phaseflag":
    from phaseflag import EvaluationContext, PhaseFlagClient
    attrs = {k: v for k, v in PRO.items() if k != "user_id"}
    ctx = EvaluationContext(user_id="u-1", attributes=attrs)
    def load(raw, file):
        client = PhaseFlagClient(base_url="", api_key="", bootstrap_file=path, offline_mode=True)
        return client, lambda key: client.get_boolean_value(key, False, ctx)
elif sdk == "growthbook":
    from growthbook import GrowthBook
    def load(raw, file):
        gb = GrowthBook(features=json.loads(raw)["features"], attributes={"id": "u-1", **PRO})
        return gb, gb.is_on
elif sdk == "unleash":
    from UnleashClient import UnleashClient
    from UnleashClient.cache import BaseCache
    from UnleashClient.constants import FEATURES_URL
    class Cache(BaseCache):
        def __init__(self, text): self._data = {FEATURES_URL: text}; self.bootstrapped = True
        def set(self, k, v): self._data[k] = v
        def mset(self, d): self._data.update(d)
        def get(self, k, default=None): return self._data.get(k, default)
        def exists(self, k): return k in self._data
        def destroy(self): self._data.clear()
    props = {k: str(v) for k, v in PRO.items() if k != "user_id"}
    def load(raw, file):
        c = UnleashClient(url="http://127.0.0.1:9/api", app_name="bench", refresh_interval=3600,
                          disable_metrics=True, disable_registration=True,
                          cache=Cache(raw.decode()))
        c.initialize_client(fetch_toggles=False)
        return c, lambda key: c.is_enabled(key, {"userId": "u-1", "properties": props})
elif sdk == "launchdarkly":
    import ldclient
    from ldclient import Context
    from ldclient.config import Config
    from ldclient.integrations import Files
    b = Context.builder("u-1")
    for k, v in PRO.items():
        if k != "user_id": b.set(k, v)
    lctx = b.build()
    def load(raw, file):
        nowhere = "http://127.0.0.1:9"
        cfg = Config("sdk-key", update_processor_class=Files.new_data_source(paths=[file]),
                     send_events=False, diagnostic_opt_out=True, base_uri=nowhere,
                     events_uri=nowhere, stream_uri=nowhere)
        c = ldclient.LDClient(config=cfg)
        return c, lambda key: c.variation(key, lctx, False)
elif sdk == "flagd":
    from openfeature import api
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType
    from openfeature.evaluation_context import EvaluationContext as OF
    octx = OF("u-1", {k: v for k, v in PRO.items() if k != "user_id"})
    def load(raw, file):
        p = FlagdProvider(resolver_type=ResolverType.IN_PROCESS, offline_flag_source_path=file,
                          host="127.0.0.1", port=9)
        api.set_provider(p)
        c = api.get_client()
        return p, lambda key: c.get_boolean_value(key, False, octx)
elif sdk == "flipt":
    os.environ["RUST_LIB_BACKTRACE"] = "0"
    import base64
    from flipt_client import FliptClient
    from flipt_client.models import ClientOptions, ErrorStrategy
    attrs = {k: str(v) for k, v in PRO.items() if k != "user_id"} | {"app_major": "9"}
    def load(raw, file):
        c = FliptClient(ClientOptions(url="http://127.0.0.1:9", update_interval=3600,
                                      request_timeout=1, error_strategy=ErrorStrategy.FALLBACK,
                                      snapshot=base64.b64encode(raw).decode()))
        return c, lambda key: c.evaluate_boolean(key, "u-1", attrs).enabled
raw = open(path, "rb").read()
warm = open(sys.argv[5], "rb").read()
# Imports and one-off set-up are not the load's cost.
_warm_object, _warm_read = load(warm, sys.argv[5])
_warm_read("f00001")
gc.collect()
before = rss_bytes()
start = time.perf_counter()
sdk_object, read = load(raw, path)
ok = read("f00001") is True and read(last) in (True, False)
seconds = time.perf_counter() - start
gc.collect()
after = rss_bytes()
print(json.dumps({"seconds": seconds, "ok": ok, "rss_added": after - before}))
sys.stdout.flush()
os._exit(0)  # peers' background threads must not hold the process up
"""


def measure_one(sdk: str, path: str, n: int, warm: str) -> dict[str, Any]:
    """One fresh-process load of ``sdk`` from the file at ``path`` (``warm``: a 4-flag
    document loaded first, so imports and one-off set-up are not counted)."""
    last = f"f{(n - 1) - ((n - 1) % 4) + 1:05d}" if n > 4 else "f00001"  # an S2 flag
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, sdk, path, str(HERE), last, warm],
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), *sys.path])},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(err[:300])
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _installed(sdk: str) -> str | None:
    modules = {
        "phaseflag": "phaseflag",
        "growthbook": "growthbook",
        "unleash": "UnleashClient",
        "launchdarkly": "ldclient",
        "flagd": "openfeature.contrib.provider.flagd",
        "flipt": "flipt_client",
    }
    import importlib.util

    try:
        found = importlib.util.find_spec(modules[sdk])
    except ModuleNotFoundError:
        found = None
    return None if found is not None else f"{modules[sdk]} not installed"


def run(n: int, rounds: int, sdks: tuple[str, ...] = PEERS) -> dict[str, Any]:
    """Interleaved rounds over ``sdks``; per SDK the median seconds and RSS added."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as workdir:
        paths = {}
        for sdk in sdks:
            why = _installed(sdk)
            if why is not None:
                results[sdk] = {"skipped": why}
                continue
            document = DOCUMENTS[sdk](n)
            paths[sdk] = str(Path(workdir, f"{sdk}.json"))
            Path(paths[sdk]).write_text(json.dumps(document), "utf-8")
            Path(workdir, f"{sdk}-warm.json").write_text(json.dumps(DOCUMENTS[sdk](4)), "utf-8")
            results[sdk] = {"runs": [], "rss": [], "bytes": Path(paths[sdk]).stat().st_size}
        for round_number in range(rounds):
            for sdk, path in paths.items():
                if "skipped" in results[sdk] or (round_number and sdk in SLOW):
                    continue
                try:
                    one = measure_one(sdk, path, n, str(Path(workdir, f"{sdk}-warm.json")))
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    results[sdk] = {"skipped": f"failed: {exc}"}
                    continue
                if not one["ok"]:
                    results[sdk] = {"skipped": "answered wrongly after loading"}
                    continue
                results[sdk]["runs"].append(one["seconds"])
                results[sdk]["rss"].append(one["rss_added"] / 2**20)
    for row in results.values():
        if row.get("runs"):
            row["median_s"] = statistics.median(row["runs"])
            row["added_rss_mb"] = statistics.median(row["rss"])
    return results


def load_row(n: int = 10_000, rounds: int = 3) -> dict[str, Any]:
    """The load comparison as one row: each SDK's median load seconds and RSS added."""
    results = run(n, rounds)
    return {sdk: {k: v for k, v in row.items() if k != "rss"} for sdk, row in results.items()}


def load_targets(results: dict[str, Any], flags: int) -> list[dict[str, Any]]:
    """The load targets of ``run()``'s (or ``load_row()``'s) results: phaseflag's load time
    over the fastest peer's, and its RSS added over GrowthBook's (issue 15: both <= 1)."""
    ours = results.get("phaseflag", {})
    peers = {k: v for k, v in results.items() if k != "phaseflag" and "median_s" in v}
    targets = []
    if "median_s" in ours and peers:
        fastest = min(peers, key=lambda k: peers[k]["median_s"])
        ratio = ours["median_s"] / peers[fastest]["median_s"]
        targets.append(
            target(
                f"load {flags // 1000}k flags / fastest peer ({fastest})",
                round(ratio, 3),
                "x",
                "<= 1",
                ratio <= 1.0,
            )
        )
        if "median_s" in results.get("growthbook", {}):
            gb = results["growthbook"]["added_rss_mb"]
            mine = ours["added_rss_mb"]
            targets.append(
                target(
                    f"RSS added for {flags // 1000}k flags / GrowthBook's",
                    round(mine / gb, 3),
                    "x",
                    "<= 1",
                    mine <= gb,
                )
            )
    return targets


def report(flags: int, rounds: int) -> dict[str, Any]:
    results = run(flags, rounds)
    targets = load_targets(results, flags)
    return {**machine_info(), "flags": flags, "results": results, "targets": targets}


def show(report: dict[str, Any]) -> None:
    print(f"{report['flags']:,} flags (S1-S4 shapes), bytes -> first correct read, fresh process")
    print(f"{'sdk':<14}{'load ms':>10}{'RSS MB':>9}  note")
    for sdk, row in report["results"].items():
        if "median_s" in row:
            print(f"{sdk:<14}{row['median_s'] * 1000:>10.0f}{row['added_rss_mb']:>9.1f}")
        else:
            print(f"{sdk:<14}{'-':>10}{'-':>9}  skipped: {row.get('skipped', 'no runs')}")


def main() -> int:
    options = {"--flags": 10_000, "--rounds": 3}
    return main_of(__doc__, "results_load.json", report, show, options=options)


if __name__ == "__main__":
    sys.exit(main())
