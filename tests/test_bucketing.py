"""Bucketing: the published vectors, the formula recomputed with mmh3, Unleash compatibility."""

from __future__ import annotations

import importlib.util
import json
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import mmh3
import pytest
from conftest import CONFORMANCE, require_conformance

from phaseflag._bucketing import BUCKETS, bucket, choose
from phaseflag._compile import compile_ruleset
from phaseflag._evaluation import evaluate
from phaseflag.types import EvaluationContext, Reason

VECTORS_DIR = Path(__file__).resolve().parent / "vectors"


@cache
def _vectors() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((VECTORS_DIR / "bucketing.json").read_text("utf-8"))
    return document


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_bucketing", VECTORS_DIR / "generate_bucketing.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _formula(salt: str, key: str) -> tuple[int, int]:
    """(h, bucket) recomputed here from DESIGN.md §4, independently of phaseflag."""
    h = mmh3.hash(f"{salt}:{key}".encode(), seed=0, signed=False)
    return h, (h % 100) * 1000 + (h // 100) % 1000


def _rollout_ruleset(salt: str, variations: list[dict[str, Any]]) -> Any:
    names = [v["variation"] for v in variations]
    flag = {
        "key": "rollout",
        "type": "string",
        "variations": [{"key": name, "value": name} for name in dict.fromkeys(names)]
        + [{"key": "off", "value": "off"}],
        "off_variation": "off",
        "default": {"rollout": {"seed": salt, "variations": variations}},
    }
    return compile_ruleset({"schema_version": 1, "flags": [flag]})


class TestPublishedVectors:
    """tests/vectors/bucketing.json holds the cross-SDK contract."""

    def test_file_is_large_and_varied(self) -> None:
        """The vectors cover >= 1,000 triples with non-ASCII, empty and long keys."""
        vectors = _vectors()["vectors"]
        keys = {v["key"] for v in vectors}
        assert len(vectors) >= 1000
        assert "" in keys
        assert any(len(k) >= 1000 for k in keys)
        assert any(any(ord(c) > 0xFFFF for c in k) for k in keys)  # emoji, astral planes
        assert any("\u4e00" <= c <= "\u9fff" for k in keys for c in k)  # CJK
        assert any(c in k for k in keys for c in "éëøï")  # accents
        assert len(_vectors()["rollouts"]) >= 200

    def test_file_matches_generator(self) -> None:
        """The committed file is exactly what generate_bucketing.py produces."""
        generator = _generator()
        text = (VECTORS_DIR / "bucketing.json").read_text("utf-8")
        assert text == generator.render(generator.build())

    def test_every_triple_matches_phaseflag(self) -> None:
        """phaseflag._bucketing.bucket reproduces every published (salt, key, bucket)."""
        wrong = [v for v in _vectors()["vectors"] if bucket(v["salt"], v["key"]) != v["bucket"]]
        assert wrong == []

    def test_every_triple_matches_the_formula(self) -> None:
        """Recomputing h and bucket with mmh3 here agrees with every published triple."""
        for v in _vectors()["vectors"]:
            assert _formula(v["salt"], v["key"]) == (v["hash"], v["bucket"]), v

    def test_whole_percent_is_unleash_normalisation(self) -> None:
        """bucket // 1000 is Unleash's murmur3(f"{group}:{id}") % 100 for every vector."""
        for v in _vectors()["vectors"]:
            h = mmh3.hash(f"{v['salt']}:{v['key']}", 0, signed=False)
            assert v["bucket"] // 1000 == h % 100
            assert (v["bucket"] % 1000) == (h // 100) % 1000

    def test_whole_percent_rollouts_select_the_same_users_as_unleash(self) -> None:
        """For an integer p, bucket < p*1000 exactly when Unleash's (h % 100) + 1 <= p."""
        for v in _vectors()["vectors"]:
            unleash_value = v["hash"] % 100 + 1  # Unleash normalizedValue: 1..100
            for percent in (0, 1, 10, 33, 50, 99, 100):
                assert (v["bucket"] < percent * 1000) == (unleash_value <= percent)

    def test_every_rollout_case_through_the_evaluator(self) -> None:
        """Each published rollout case serves its variation when evaluated as a flag."""
        cache: dict[tuple[str, str], Any] = {}
        for case in _vectors()["rollouts"]:
            spec = (case["salt"], json.dumps(case["variations"]))
            ruleset = cache.get(spec)
            if ruleset is None:
                ruleset = cache[spec] = _rollout_ruleset(case["salt"], case["variations"])
            result = evaluate(ruleset, "rollout", EvaluationContext(user_id=case["key"]))
            assert result.variation_key == case["served"], case
            assert result.reason == Reason.PERCENTAGE_ROLLOUT

    def test_rollout_cases_match_choose(self) -> None:
        """choose() picks the published slot from cumulative thresholds in thousandths."""
        for case in _vectors()["rollouts"]:
            thresholds, total = [], 0
            for slot in case["variations"]:
                total += round(slot["weight"] * 1000)
                thresholds.append(total)
            index = choose(tuple(thresholds), case["bucket"])
            assert case["variations"][index]["variation"] == case["served"]

    def test_threshold_edges_are_covered(self) -> None:
        """The rollout cases include buckets right at the 1% and 50% boundaries and the ends."""
        buckets = {case["bucket"] for case in _vectors()["rollouts"] if case["salt"] == "edge"}
        assert {0, 999, 1000, 49_999, 50_000, 99_999} <= buckets


class TestBucketFunction:
    """Properties of bucket() beyond the vectors."""

    def test_range_and_stability(self) -> None:
        """Buckets are ints in [0, 100000) and the same on every call."""
        for i in range(2000):
            b = bucket("salt", f"user-{i}")
            assert 0 <= b < BUCKETS
            assert bucket("salt", f"user-{i}") == b

    def test_salt_changes_buckets(self) -> None:
        """Different salts give (mostly) different buckets for the same keys."""
        same = sum(bucket("a", f"user-{i}") == bucket("b", f"user-{i}") for i in range(1000))
        assert same < 5

    def test_lone_surrogate_does_not_raise(self) -> None:
        """A str that is not valid UTF-8 (a lone surrogate) still gets a bucket."""
        b = bucket("salt", "bad\ud800key")
        assert 0 <= b < BUCKETS
        h = mmh3.hash(b"salt:bad\xed\xa0\x80key", 0, signed=False)
        assert b == (h % 100) * 1000 + (h // 100) % 1000

    @pytest.mark.parametrize(
        ("value", "text"),
        [
            (True, "true"),
            (False, "false"),
            (42, "42"),
            (-7, "-7"),
            (1.5, "1.5"),
            (datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc), "2024-05-01T12:00:00+00:00"),
        ],
    )
    def test_non_string_bucketing_values(self, value: object, text: str) -> None:
        """A non-string bucket_by attribute is bucketed by its documented text form."""
        ruleset = compile_ruleset(
            {
                "schema_version": 1,
                "flags": [
                    {
                        "key": "f",
                        "type": "number",
                        "variations": [{"key": f"v{i}", "value": i} for i in range(100)]
                        + [{"key": "off", "value": -1}],
                        "off_variation": "off",
                        "default": {
                            "rollout": {
                                "bucket_by": "attr",
                                "variations": [
                                    {"variation": f"v{i}", "weight": 1} for i in range(100)
                                ],
                            }
                        },
                    }
                ],
            }
        )
        result = evaluate(ruleset, "f", EvaluationContext(attributes={"attr": value}))
        assert result.value == bucket("f", text) // 1000

    def test_huge_int_bucketing_value_serves_the_off_variation(self) -> None:
        """An int too long to write in decimal counts as no bucketing key (never raises)."""
        ruleset = _rollout_ruleset("s", [{"variation": "a", "weight": 100}])
        flag = dict(ruleset.source["flags"][0])
        flag["default"] = {
            "rollout": {"bucket_by": "n", "variations": [{"variation": "a", "weight": 100}]}
        }
        ruleset = compile_ruleset({"schema_version": 1, "flags": [flag]})
        result = evaluate(ruleset, "rollout", EvaluationContext(attributes={"n": 10**5000}))
        assert (result.variation_key, result.reason) == ("off", Reason.DEFAULT)


def _murmur_vectors() -> dict[str, Any]:
    path = CONFORMANCE / "murmur3-vectors" / "murmur3_x86_32_vectors.json"
    require_conformance(path, "external murmur3 vectors")
    document: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return document


class TestExternalMurmur3Vectors:
    """mmh3 (the hash under phaseflag's bucketing) agrees with published MurmurHash3 vectors."""

    def test_mmh3_matches_every_vector(self) -> None:
        """Every external (input, seed) -> u32 vector hashes the same with mmh3."""
        vectors = _murmur_vectors()["vectors"]
        assert len(vectors) >= 30
        for v in vectors:
            data = bytes.fromhex(v["input_hex"])
            assert mmh3.hash(data, v["seed"], signed=False) == v["expected_u32"], v

    def test_smhasher_verification_value(self) -> None:
        """The smhasher VerificationTest value over 256 seeded hashes matches."""
        check = _murmur_vectors()["smhasher_verification"]
        buffer = b"".join(
            mmh3.hash(bytes(range(i)), 256 - i, signed=False).to_bytes(4, "little")
            for i in range(256)
        )
        assert mmh3.hash(buffer, 0, signed=False) == check["expected_u32"]


def _unleash_cases() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Single-strategy rollout features of the Unleash client specification, with their tests."""
    folder = CONFORMANCE / "unleash-client-specification" / "specifications"
    if not folder.is_dir():
        return []
    cases = []
    for name in (
        "03-gradual-rollout-user-id-strategy.json",
        "04-gradual-rollout-session-id-strategy.json",
        "10-flexible-rollout-strategy.json",
        "12-custom-stickiness.json",
    ):
        spec = json.loads((folder / name).read_text("utf-8"))
        features = {f["name"]: f for f in spec["state"]["features"]}
        for test in spec["tests"]:
            feature = features[test["toggleName"]]
            params = feature["strategies"][0].get("parameters", {})
            random = params.get("stickiness") == "default" and not (
                {"userId", "sessionId"} & set(test["context"])
            )  # Unleash buckets such a context at random; phaseflag never does
            if len(feature["strategies"]) == 1 and feature.get("enabled", True) and not random:
                cases.append((f"{name[:2]}:{test['description']}", feature, test))
    return cases


_STICKINESS = {
    "gradualRolloutUserId": "userId",
    "gradualRolloutSessionId": "sessionId",
}


def _unleash_flag(feature: dict[str, Any]) -> tuple[dict[str, Any], str]:
    strategy = feature["strategies"][0]
    params = strategy["parameters"]
    percent = float(params.get("percentage", params.get("rollout")))
    stickiness = _STICKINESS.get(strategy["name"], params.get("stickiness", "default"))
    bucket_by = {"default": "user_id", "userId": "user_id", "sessionId": "session_id"}.get(
        stickiness, stickiness
    )
    flag = {
        "key": feature["name"],
        "type": "boolean",
        "variations": [{"key": "on", "value": True}, {"key": "off", "value": False}],
        "off_variation": "off",
        "default": {
            "rollout": {
                "bucket_by": bucket_by,
                "seed": params["groupId"],
                "variations": [
                    {"variation": "on", "weight": percent},
                    {"variation": "off", "weight": 100 - percent},
                ],
            }
        },
    }
    return flag, stickiness


@pytest.mark.parametrize(
    ("feature", "test"),
    [pytest.param(f, t, id=name) for name, f, t in _unleash_cases()]
    or [pytest.param(None, None, id="absent")],
)
def test_unleash_rollout_specification(
    feature: dict[str, Any] | None, test: dict[str, Any] | None
) -> None:
    """A user keeps their Unleash rollout decision when the flag moves to phaseflag."""
    if feature is None or test is None:
        require_conformance(
            CONFORMANCE / "unleash-client-specification", "Unleash client specification"
        )
    flag, stickiness = _unleash_flag(feature)
    ctx = test["context"]
    has_user, has_session = "userId" in ctx, "sessionId" in ctx
    context = EvaluationContext(
        user_id=ctx.get("userId"),
        session_id=ctx.get("sessionId"),
        attributes=ctx.get("properties", {}),
    )
    result = evaluate(compile_ruleset({"schema_version": 1, "flags": [flag]}), flag["key"], context)
    if stickiness == "userId" and has_session and not has_user:
        # Documented difference: phaseflag's bucket_by user_id falls back to session_id,
        # where Unleash's strict userId stickiness disables the flag.
        assert result.reason == Reason.PERCENTAGE_ROLLOUT
        _, b = _formula(flag["default"]["rollout"]["seed"], ctx["sessionId"])
        percent = flag["default"]["rollout"]["variations"][0]["weight"]
        assert result.value == (b < percent * 1000)
        return
    assert result.value is test["expectedResult"]
