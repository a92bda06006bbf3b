"""Regenerate ``bucketing.json``: phaseflag's published bucketing test vectors.

The vectors pin the bucketing formula of DESIGN.md §4 for every phaseflag SDK::

    h = murmur3_x86_32(utf8(f"{salt}:{key}"), seed=0)      # unsigned
    bucket = (h % 100) * 1000 + (h // 100) % 1000          # in [0, 100000)

and rollouts: weights are percentages (up to three decimals); the first variation whose
cumulative weight x 1000 exceeds ``bucket`` is served. This script computes everything with
``mmh3`` directly and never imports phaseflag, so the vectors check the SDK rather than
repeat it. Run ``python tests/vectors/generate_bucketing.py`` to rewrite the file; the
output is deterministic (tests/test_bucketing.py checks the file matches ``build()``).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import mmh3

OUTPUT = Path(__file__).with_name("bucketing.json")

SALTS = [
    "new-checkout-flow",
    "flag",
    "",
    "AB12A",
    "Feature.B3",
    "café-crème",
    "旗標-rollout",
    "🚩",
    "salt:with:colons",
    "s" * 256,
]

_PLAIN_KEYS = [
    "",
    "0",
    "1",
    "42",
    "-1",
    "user-1",
    "user-2",
    "user-9",
    "User-1",
    "alice@example.com",
    "bob@example.org",
    "00000000-0000-0000-0000-000000000000",
    "f47ac10b-58cc-4372-a567-0e02b2c3d479",
    "true",
    "1.5",
    " leading-space",
    "trailing-space ",
    "tab\there",
    "new\nline",
    'quote"d',
    "back\\slash",
    "nul\u0000byte",
    "colon:key",
]
_NON_ASCII_KEYS = [
    "José",
    "Zoë",
    "Ærøskøbing",
    "naïve café",
    "é",  # NFC: one code point
    "e\u0301",  # NFD: e + combining acute; a different key from the NFC form
    "Straße",
    "İstanbul",
    "用户42",
    "ユーザー",
    "사용자",
    "пользователь",
    "مستخدم",
    "משתמש",
    "उपयोगकर्ता",
    "👩‍💻",
    "🇩🇪",
    "🚀🚀🚀",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",  # noqa: RUF001 - mathematical letters on purpose
    "\u00a0nbsp",
    "\ufeffbom",
]
_LONG_KEYS = [
    "x" * 1000,
    "é" * 500,
    "🚩" * 300,
    "user-" + "9" * 200,
    "ab" * 2048,
]
_NUMBERED = [f"user-{i}" for i in range(40)] + [str(i * 7919) for i in range(20)]

#: Weight sets (percentages) for the rollout cases; strings keep the decimals exact.
WEIGHTS = [
    ["50", "50"],
    ["10", "90"],
    ["0", "100"],
    ["100", "0"],
    ["33.333", "33.333", "33.334"],
    ["0.001", "99.999"],
    ["99.999", "0.001"],
    ["25", "25", "25", "25"],
    ["1", "0", "99"],
    ["12.5", "37.5", "50"],
    ["0.5", "0.5", "99"],
    ["20", "20", "20", "20", "20"],
]


def murmur(text: str) -> int:
    """murmur3_x86_32 of the UTF-8 bytes of ``text``, seed 0, unsigned."""
    return int(mmh3.hash(text.encode("utf-8"), 0, signed=False))


def bucket_of(salt: str, key: str) -> tuple[int, int]:
    """``(h, bucket)`` for ``salt`` and ``key``, straight from the formula."""
    h = murmur(f"{salt}:{key}")
    return h, (h % 100) * 1000 + (h // 100) % 1000


def served(weights: list[str], bucket: int) -> int:
    """Index of the variation served for ``bucket``: first cumulative threshold above it."""
    total = Decimal(0)
    for index, weight in enumerate(weights):
        total += Decimal(weight)
        if total * 1000 > bucket:
            return index
    raise AssertionError("weights must sum to 100")


def keys() -> list[str]:
    """Every key used in the triples, in a fixed order."""
    return _PLAIN_KEYS + _NON_ASCII_KEYS + _NUMBERED


def _triples() -> list[dict[str, Any]]:
    out = []
    for s, salt in enumerate(SALTS):
        chosen = keys() + (_LONG_KEYS if s < 3 else [])
        for key in chosen:
            h, b = bucket_of(salt, key)
            out.append({"salt": salt, "key": key, "hash": h, "bucket": b})
    return out


def _edge_keys(salt: str, wanted: list[int], limit: int = 3_000_000) -> dict[int, str]:
    """Keys ``user-<n>`` whose bucket under ``salt`` is each of ``wanted`` (deterministic)."""
    found: dict[int, str] = {}
    targets = set(wanted)
    for n in range(limit):
        key = f"user-{n}"
        b = bucket_of(salt, key)[1]
        if b in targets and b not in found:
            found[b] = key
            if len(found) == len(targets):
                break
    return found


def _rollouts() -> list[dict[str, Any]]:
    out = []
    sample = _PLAIN_KEYS[:12] + _NON_ASCII_KEYS[:8]
    for w, weights in enumerate(WEIGHTS):
        salt = SALTS[w % len(SALTS)]
        for key in sample:
            out.append(_rollout_case(salt, key, weights))
    # Buckets on either side of the thresholds, where an off-by-one would show.
    edges = _edge_keys("edge", [0, 999, 1000, 49_999, 50_000, 99_999])
    for _, key in sorted(edges.items()):
        for weights in (["50", "50"], ["1", "99"], ["0.001", "99.999"], ["99.999", "0.001"]):
            out.append(_rollout_case("edge", key, weights))
    return out


def _rollout_case(salt: str, key: str, weights: list[str]) -> dict[str, Any]:
    b = bucket_of(salt, key)[1]
    variations = [
        {"variation": f"v{i}", "weight": float(weight)} for i, weight in enumerate(weights)
    ]
    return {
        "salt": salt,
        "key": key,
        "variations": variations,
        "bucket": b,
        "served": f"v{served(weights, b)}",
    }


def build() -> dict[str, Any]:
    """The complete vectors document."""
    return {
        "description": (
            "phaseflag bucketing vectors: h = murmur3_x86_32(utf8(salt + ':' + key), seed 0), "
            "unsigned; bucket = (h % 100) * 1000 + (h // 100) % 1000. Rollouts: the first "
            "variation whose cumulative weight * 1000 exceeds bucket is served."
        ),
        "generator": "tests/vectors/generate_bucketing.py",
        "vectors": _triples(),
        "rollouts": _rollouts(),
    }


def render(document: dict[str, Any]) -> str:
    """JSON text with one vector per line (small diffs, easy for other SDKs to read)."""
    lines = ["{"]
    for name in ("description", "generator"):
        lines.append(f"  {json.dumps(name)}: {json.dumps(document[name], ensure_ascii=False)},")
    for name, last in (("vectors", False), ("rollouts", True)):
        items = document[name]
        lines.append(f"  {json.dumps(name)}: [")
        for i, item in enumerate(items):
            comma = "," if i < len(items) - 1 else ""
            lines.append("    " + json.dumps(item, ensure_ascii=False) + comma)
        lines.append("  ]" + ("" if last else ","))
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Write ``bucketing.json`` next to this script."""
    document = build()
    OUTPUT.write_text(render(document), encoding="utf-8")
    print(f"wrote {len(document['vectors'])} vectors, {len(document['rollouts'])} rollouts")


if __name__ == "__main__":
    main()
