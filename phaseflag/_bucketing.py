"""Deterministic percentage bucketing, identical in every phaseflag SDK.

``h = murmur3_x86_32(utf8(f"{salt}:{key}"), seed=0)`` (unsigned) and
``bucket = (h % 100) * 1000 + (h // 100) % 1000``, a number in ``[0, 100000)``:
the low two decimal digits pick the whole percent (Unleash's normalised value for
``groupId:userId``), the next three pick thousandths of a percent.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import datetime

import mmh3

__all__ = ["BUCKETS", "bucket", "bucket_key_text", "choose"]

#: Buckets per 100 percent: weights are percentages with up to three decimals.
BUCKETS = 100_000

_hash = mmh3.hash


def bucket(salt: str, key: str) -> int:
    """The bucket in ``[0, 100000)`` of ``key`` under ``salt``; never raises for any str."""
    text = f"{salt}:{key}"
    if text.isascii():  # O(1) in CPython; ASCII is the UTF-8 encoding of itself
        h = _hash(text, 0, False)
    else:
        # mmh3 5.x crashes the interpreter (SIGSEGV) on a str holding a lone surrogate,
        # so non-ASCII text is encoded here; surrogates hash as their UTF-8 bytes as-is.
        h = _hash(text.encode("utf-8", "surrogatepass"), 0, False)
    return (h % 100) * 1000 + (h // 100) % 1000


def choose(thresholds: tuple[int, ...], value: int) -> int:
    """Index of the first cumulative threshold greater than ``value`` (the served slot)."""
    return bisect_right(thresholds, value)


def bucket_key_text(value: object) -> str | None:
    """How a non-string bucketing value becomes text: ``true``/``false``, ints in decimal,
    floats by ``repr`` and datetimes in ISO-8601, so other SDKs can agree.

    None (no bucketing key) for an int too long for Python to write in decimal.
    """
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, datetime):
        return value.isoformat()
    try:
        return repr(value) if isinstance(value, float) else str(value)
    except ValueError:  # int beyond sys.get_int_max_str_digits()
        return None
