"""OFREP endpoints of ``phaseflag serve``: the real OpenFeature OFREP provider as a client,
and every response shape validated against the OFREP OpenAPI schema."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import (
    CONFORMANCE,
    boolean_flag,
    flag,
    json_flag,
    number_flag,
    require_conformance,
    rule,
    ruleset,
    string_flag,
)

from phaseflag.server import PhaseFlagServer

pytestmark = pytest.mark.e2e

KEY = "ofrep-key-51c0"
AUTH = {"Authorization": f"Bearer {KEY}"}
#: The shared conformance files sit beside the repository (``../shared``), never inside it.
SPEC = CONFORMANCE / "ofrep-protocol" / "openapi.yaml"


def document() -> dict[str, Any]:
    """Flags covering every OFREP value type and reason."""
    split = {
        "rollout": {
            "variations": [{"variation": "on", "weight": 100}, {"variation": "off", "weight": 0}]
        }
    }
    return ruleset(
        boolean_flag("targeted", False, rules=[rule("plan", "in", ["pro"], "on", id="paid")]),
        boolean_flag("static-bool", True),
        boolean_flag("rollout", False, rules=[{"conditions": [], "serve": split}]),
        boolean_flag("killed", True, enabled=False),
        flag("no-off", "boolean", {"on": True}, serve="on", enabled=False, off_variation=None),
        string_flag("color", "blue"),
        number_flag("limit", 10),
        number_flag("ratio", 0.25),
        json_flag("layout", {"columns": 3}),
        flag(
            "broken",
            "string",
            {"a": "x"},
            serve="a",
            rules=[rule("email", "matches", ["(unclosed"], "a")],
        ),
        version=9,
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PhaseFlagServer]:
    """A started server on the OFREP document."""
    path = tmp_path / "ruleset.json"
    doc = document()
    for item in doc["flags"]:  # off_variation=None means "no off variation" in the builder
        if item.get("off_variation", "") is None:
            del item["off_variation"]
    path.write_text(json.dumps(doc), "utf-8")
    with PhaseFlagServer(str(path), api_keys=[KEY]) as srv:
        yield srv


def base(server: PhaseFlagServer) -> str:
    """The OFREP base URL (the server root)."""
    return server.url.removesuffix("/api/v1")


def post(server: PhaseFlagServer, path: str, body: Any, **headers: str) -> requests.Response:
    """POST JSON (or raw bytes) to an OFREP path with the API key."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(
        base(server) + path,
        data=data,
        timeout=5,
        headers={**AUTH, "Content-Type": "application/json", **headers},
    )


# -- the real OpenFeature provider --------------------------------------------------------------


@pytest.fixture
def of_client(server: PhaseFlagServer) -> Iterator[Any]:
    """An OpenFeature client backed by the OFREP provider pointed at the server."""
    pytest.importorskip("openfeature.contrib.provider.ofrep")
    from openfeature import api
    from openfeature.contrib.provider.ofrep import OFREPProvider

    provider = OFREPProvider(base(server), headers_factory=lambda: dict(AUTH))
    api.set_provider(provider, domain="phaseflag-ofrep-test")
    try:
        yield api.get_client("phaseflag-ofrep-test")
    finally:
        api.clear_providers()


class TestOpenFeatureProvider:
    """openfeature-provider-ofrep against the server: values, variants, reasons, errors."""

    def test_values_variants_and_reasons(self, of_client: Any):
        """Every type resolves with the phaseflag value, variant and mapped reason."""
        from openfeature.evaluation_context import EvaluationContext as Ctx

        pro = Ctx(targeting_key="user-1", attributes={"plan": "pro"})
        cases = [
            (of_client.get_boolean_details, "targeted", False, pro, True, "on", "TARGETING_MATCH"),
            (
                of_client.get_boolean_details,
                "targeted",
                True,
                Ctx("user-1"),
                False,
                "off",
                "DEFAULT",
            ),
            (of_client.get_boolean_details, "static-bool", False, None, True, "on", "STATIC"),
            (of_client.get_boolean_details, "rollout", False, Ctx("user-1"), True, "on", "SPLIT"),
            (of_client.get_boolean_details, "killed", True, None, False, "off", "DISABLED"),
            (of_client.get_string_details, "color", "red", None, "blue", "value", "STATIC"),
            (of_client.get_integer_details, "limit", 0, None, 10, "value", "STATIC"),
            (of_client.get_float_details, "ratio", 0.0, None, 0.25, "value", "STATIC"),
            (of_client.get_object_details, "layout", {}, None, {"columns": 3}, "value", "STATIC"),
        ]
        for getter, key, default, ctx, value, variant, reason in cases:
            details = getter(key, default, ctx)
            assert details.error_code is None, (key, details.error_message)
            assert (details.value, details.variant, str(details.reason)) == (
                value,
                variant,
                reason,
            ), key
        meta = of_client.get_boolean_details("targeted", False, pro).flag_metadata
        assert meta["ruleId"] == "paid" and meta["rulesetVersion"] == 9

    def test_missing_flag_is_flag_not_found(self, of_client: Any):
        """An unknown key resolves to the caller's default with FLAG_NOT_FOUND."""
        details = of_client.get_boolean_details("no-such-flag", True)
        assert details.value is True
        assert str(details.error_code) == "FLAG_NOT_FOUND"

    def test_type_mismatch(self, of_client: Any):
        """Asking a string flag for a boolean gives the default with TYPE_MISMATCH."""
        details = of_client.get_boolean_details("color", False)
        assert details.value is False
        assert str(details.error_code) == "TYPE_MISMATCH"

    def test_invalid_context(self, of_client: Any):
        """A context value phaseflag cannot target on gives INVALID_CONTEXT."""
        from openfeature.evaluation_context import EvaluationContext as Ctx

        ctx = Ctx(targeting_key="u", attributes={"nested": {"a": 1}})
        details = of_client.get_boolean_details("targeted", False, ctx)
        assert str(details.error_code) == "INVALID_CONTEXT"

    def test_invalid_flag_is_a_parse_error(self, of_client: Any):
        """A flag isolated as invalid in the ruleset gives PARSE_ERROR (as the in-process
        provider does: one mapping) and the default."""
        details = of_client.get_string_details("broken", "fallback")
        assert details.value == "fallback"
        assert str(details.error_code) == "PARSE_ERROR"

    def test_wrong_key_is_an_error(self, server: PhaseFlagServer):
        """Without the right key the provider reports an error, never a value."""
        pytest.importorskip("openfeature.contrib.provider.ofrep")
        from openfeature import api
        from openfeature.contrib.provider.ofrep import OFREPProvider

        provider = OFREPProvider(base(server), headers_factory=lambda: {"X-API-Key": "wrong"})
        api.set_provider(provider, domain="phaseflag-ofrep-badkey")
        try:
            details = api.get_client("phaseflag-ofrep-badkey").get_boolean_details("targeted", True)
        finally:
            api.clear_providers()
        assert details.value is True
        assert str(details.error_code) == "GENERAL"


# -- raw responses against the OpenAPI schema ---------------------------------------------------


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """The OFREP OpenAPI document, with the known ``oneOf`` defect patched in memory."""
    require_conformance(SPEC, "OFREP conformance spec")
    yaml = pytest.importorskip("yaml")
    loaded = yaml.safe_load(SPEC.read_text("utf-8"))
    patched = copy.deepcopy(loaded)
    schemas = patched["components"]["schemas"]
    # SOURCE.md: codeDefaultFlag matches every object, and an integer matches floatFlag too.
    schemas["codeDefaultFlag"] = {"type": "object", "not": {"required": ["value"]}}
    schemas["floatFlag"]["properties"]["value"] = {"type": "number", "not": {"type": "integer"}}
    return patched


def errors(spec: dict[str, Any], schema_name: str, instance: Any) -> list[str]:
    """Validation error messages of ``instance`` against ``#/components/schemas/<name>``."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(
        {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
    )
    return [e.message for e in validator.iter_errors(instance)]


class TestSchema:
    """Every OFREP response the server sends fits the OFREP 0.3.0 schema."""

    @pytest.mark.parametrize(
        ("key", "context", "reason"),
        [
            ("targeted", {"targetingKey": "u", "plan": "pro"}, "TARGETING_MATCH"),
            ("static-bool", {}, "STATIC"),
            ("rollout", {"targetingKey": "u"}, "SPLIT"),
            ("killed", {}, "DISABLED"),
            ("no-off", {}, "DISABLED"),
            ("color", {}, "STATIC"),
            ("limit", {}, "STATIC"),
            ("ratio", {}, "STATIC"),
            ("layout", {}, "STATIC"),
        ],
    )
    def test_single_success(self, server, spec, key: str, context: dict[str, Any], reason: str):
        """200 answers validate as serverEvaluationSuccess."""
        resp = post(server, f"/ofrep/v1/evaluate/flags/{key}", {"context": context})
        assert resp.status_code == 200
        body = resp.json()
        assert body["key"] == key and body["reason"] == reason
        assert errors(spec, "serverEvaluationSuccess", body) == []

    def test_code_default_shape(self, server, spec):
        """A disabled flag without an off variation has no value or variant (code default)."""
        body = post(server, "/ofrep/v1/evaluate/flags/no-off", {"context": {}}).json()
        assert "value" not in body and "variant" not in body

    def test_default_reason_is_the_only_deviation(self, server, spec):
        """DEFAULT (OpenFeature's reason, absent from OFREP 0.3.0's enum) is the sole misfit."""
        body = post(server, "/ofrep/v1/evaluate/flags/targeted", {"context": {}}).json()
        assert body["reason"] == "DEFAULT"
        assert errors(spec, "serverEvaluationSuccess", body) == [
            "'DEFAULT' is not one of ['STATIC', 'TARGETING_MATCH', 'SPLIT', 'DISABLED', 'UNKNOWN']"
        ]
        assert errors(spec, "serverEvaluationSuccess", {**body, "reason": "STATIC"}) == []

    def test_flag_not_found(self, server, spec):
        """An unknown key is 404 flagNotFound."""
        resp = post(server, "/ofrep/v1/evaluate/flags/nope", {"context": {"targetingKey": "u"}})
        assert resp.status_code == 404
        assert resp.json()["errorCode"] == "FLAG_NOT_FOUND"
        assert errors(spec, "flagNotFound", resp.json()) == []

    @pytest.mark.parametrize(
        ("body", "code"),
        [
            (b"{nope", "PARSE_ERROR"),
            (b"[1]", "PARSE_ERROR"),
            (b'{"context": []}', "INVALID_CONTEXT"),
            (b'{"context": {"targetingKey": 5}}', "INVALID_CONTEXT"),
            (b'{"context": {"targetingKey": "u", "tags": [["a"]]}}', "INVALID_CONTEXT"),
        ],
        ids=["bad-json", "not-object", "context-array", "numeric-key", "nested-list-attribute"],
    )
    def test_bad_requests(self, server, spec, body: bytes, code: str):
        """Bad bodies and contexts are 400 evaluationFailure (single) and
        bulkEvaluationFailure (bulk) with the right errorCode."""
        single = post(server, "/ofrep/v1/evaluate/flags/targeted", body)
        assert (single.status_code, single.json()["errorCode"]) == (400, code)
        assert errors(spec, "evaluationFailure", single.json()) == []
        bulk = post(server, "/ofrep/v1/evaluate/flags", body)
        assert (bulk.status_code, bulk.json()["errorCode"]) == (400, code)
        assert errors(spec, "bulkEvaluationFailure", bulk.json()) == []

    def test_invalid_flag_single(self, server, spec):
        """An isolated invalid flag: a 400 evaluationFailure, PARSE_ERROR (as the provider)."""
        resp = post(server, "/ofrep/v1/evaluate/flags/broken", {"context": {}})
        assert (resp.status_code, resp.json()["errorCode"]) == (400, "PARSE_ERROR")
        assert errors(spec, "evaluationFailure", resp.json()) == []

    def test_bulk_and_etag(self, server, spec):
        """Bulk evaluates every flag, validates, and honours If-None-Match with 304."""
        ctx = {"context": {"targetingKey": "u", "plan": "pro"}}
        resp = post(server, "/ofrep/v1/evaluate/flags", ctx)
        assert resp.status_code == 200
        body = resp.json()
        assert [item["key"] for item in body["flags"]] == [f["key"] for f in document()["flags"]]
        by_key = {item["key"]: item for item in body["flags"]}
        assert by_key["targeted"]["value"] is True
        assert by_key["broken"]["errorCode"] == "PARSE_ERROR"
        assert errors(spec, "bulkEvaluationSuccess", body) == []
        etag = resp.headers["ETag"]
        again = post(server, "/ofrep/v1/evaluate/flags", ctx, **{"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        other = post(
            server,
            "/ofrep/v1/evaluate/flags",
            {"context": {"targetingKey": "v"}},
            **{"If-None-Match": etag},
        )
        assert other.status_code == 200

    def test_auth(self, server):
        """OFREP routes need the key: 401 without, X-API-Key accepted."""
        url = base(server) + "/ofrep/v1/evaluate/flags/color"
        assert requests.post(url, json={"context": {}}, timeout=5).status_code == 401
        ok = requests.post(url, json={"context": {}}, headers={"X-API-Key": KEY}, timeout=5)
        assert ok.status_code == 200


def test_ofrep_and_the_in_process_provider_map_alike(server: PhaseFlagServer, make_client):
    """For every flag and context, OFREP and PhaseFlagProvider give the same reason, variant
    and error code: both use ``phaseflag._openfeature_mapping``."""
    from openfeature.evaluation_context import EvaluationContext as Ctx

    from phaseflag.openfeature import PhaseFlagProvider

    client = make_client(base_url=server.url, api_key=KEY, fetch_mode="polling")
    client.start()
    assert client.wait_until_ready(5)
    provider = PhaseFlagProvider(client)
    getters = {
        "boolean": (provider.resolve_boolean_details, False),
        "string": (provider.resolve_string_details, ""),
        "number": (provider.resolve_float_details, 0.0),
        "json": (provider.resolve_object_details, {}),
    }
    for context in ({}, {"targetingKey": "u1", "plan": "pro"}, {"targetingKey": "u2"}):
        bulk = post(server, "/ofrep/v1/evaluate/flags", {"context": context}).json()
        for item in bulk["flags"]:
            kind = client.ruleset.flags[item["key"]].type
            resolve, default = getters[kind]
            attributes = {k: v for k, v in context.items() if k != "targetingKey"}
            details = resolve(item["key"], default, Ctx(context.get("targetingKey"), attributes))
            if "errorCode" in item:
                assert str(details.error_code) == item["errorCode"], item["key"]
            else:
                assert (str(details.reason), details.variant) == (
                    item["reason"],
                    item.get("variant"),
                ), item["key"]
