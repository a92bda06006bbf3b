"""Retry timing: the retry policy of the sync thread, exponential backoff with full jitter,
Retry-After parsing and jittered intervals."""

from __future__ import annotations

import math
import random
import re
import time
from datetime import timezone
from email.utils import parsedate_to_datetime

from ._errors import AuthenticationError

__all__ = [
    "AUTH_BACKOFF_BASE",
    "AUTH_BACKOFF_CAP",
    "MAX_RETRY_AFTER",
    "RETRY_BASE",
    "RETRY_CAP",
    "Backoff",
    "RetryPolicy",
    "auth_backoff",
    "jittered",
    "parse_retry_after",
]

AUTH_BACKOFF_BASE = 60.0
"""First ceiling (seconds) of the backoff after a 401/403: a bad key is not retried quickly."""

AUTH_BACKOFF_CAP = 3600.0
"""Largest wait (seconds) between retries after a 401/403."""

MAX_RETRY_AFTER = 600.0
"""A server's Retry-After is honoured up to this many seconds (ten minutes, as the poller and the
README promise), so a bogus header cannot stall the stream or hold events for long."""

RETRY_BASE = 1.0
"""First ceiling (seconds) of the backoff after a network error, a timeout, a 429 or a 5xx."""

RETRY_CAP = 300.0
"""Largest wait (seconds) between retries of such failures (a Retry-After may ask for more)."""

# Past this exponent base * 2**n exceeds any sane cap; clamping keeps the float finite.
_MAX_EXPONENT = 64
_DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?")


class Backoff:
    """Exponential backoff, full jitter: delay n is ``uniform(0, min(cap, base * 2**n))``.

    ``min_delay`` raises the low end of the draw (never above the current ceiling), for
    policies such as the auth backoff that must not retry almost at once. Not thread-safe:
    give each retry loop its own instance. Raises ValueError for non-positive ``base`` or a
    ``cap`` below ``base``.
    """

    __slots__ = ("_attempts", "_base", "_cap", "_min_delay", "_rng")

    def __init__(
        self,
        base: float,
        cap: float,
        *,
        min_delay: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if not (math.isfinite(base) and base > 0):
            raise ValueError(f"backoff base must be a positive number of seconds, got {base!r}")
        if not (math.isfinite(cap) and cap >= base):
            raise ValueError(f"backoff cap must be >= base ({base!r}), got {cap!r}")
        if not (math.isfinite(min_delay) and min_delay >= 0):
            raise ValueError(f"backoff min_delay must be >= 0, got {min_delay!r}")
        self._base = float(base)
        self._cap = float(cap)
        self._min_delay = float(min_delay)
        self._rng = rng if rng is not None else random.Random()
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """How many delays have been handed out since construction or the last ``reset()``."""
        return self._attempts

    def ceiling(self) -> float:
        """The upper bound of the next ``next_delay()`` draw (before any Retry-After)."""
        return min(self._cap, self._base * 2.0 ** min(self._attempts, _MAX_EXPONENT))

    def next_delay(self, retry_after: float | None = None) -> float:
        """Return the seconds to wait before the next attempt and count the attempt.

        When the server sent ``Retry-After``, the delay is at least that long (clamped to
        ``MAX_RETRY_AFTER``), even above ``cap``: the server knows best when it can cope.
        """
        ceiling = self.ceiling()
        self._attempts += 1
        delay = self._rng.uniform(min(self._min_delay, ceiling), ceiling)
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay

    def reset(self) -> None:
        """Start again from the first attempt (call after a success)."""
        self._attempts = 0

    def __repr__(self) -> str:
        return f"Backoff(base={self._base!r}, cap={self._cap!r}, attempts={self._attempts})"


def auth_backoff(*, rng: random.Random | None = None) -> Backoff:
    """The policy after a 401/403: first retry in 30-60 s, the ceiling doubling up to an hour.

    The 30 s floor keeps a rejected key from hammering the API; the jitter spreads a fleet
    whose key was rotated at one instant.
    """
    return Backoff(AUTH_BACKOFF_BASE, AUTH_BACKOFF_CAP, min_delay=AUTH_BACKOFF_BASE / 2, rng=rng)


class RetryPolicy:
    """When to try a failed sync request again, by kind of failure: the one policy that
    polling and streaming (connects and fallback polls alike) share.

    - 401/403 (AuthenticationError): the auth backoff, first retry in 30-60 s, the ceiling
      doubling up to an hour, so a bad key never hammers the API yet a fixed one recovers;
    - anything else (network errors, deadlines, 429, 5xx): ``uniform(0, min(cap, base *
      2**n))``, at least the server's Retry-After up to MAX_RETRY_AFTER.

    ``reset()`` after a success starts both afresh. ``base``/``cap`` default to RETRY_BASE
    and RETRY_CAP read when the policy is made. Not thread-safe: one per retry loop.
    """

    __slots__ = ("_auth", "_transient")

    def __init__(
        self,
        *,
        base: float | None = None,
        cap: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        base = RETRY_BASE if base is None else base
        cap = RETRY_CAP if cap is None else cap
        self._transient = Backoff(base, max(cap, base), rng=rng)
        self._auth = auth_backoff(rng=rng)

    def delay(self, error: BaseException) -> float:
        """Seconds to wait before retrying after ``error``; counts the attempt."""
        if isinstance(error, AuthenticationError):
            return self._auth.next_delay()
        retry_after = getattr(error, "retry_after", None)
        return self._transient.next_delay(retry_after)

    def reset(self) -> None:
        """A request succeeded: the next failure starts from the first delay again."""
        self._transient.reset()
        self._auth.reset()

    def reset_auth(self) -> None:
        """The key was accepted (a stream connected): a later 401/403 starts afresh."""
        self._auth.reset()

    @property
    def attempts(self) -> int:
        """Failures since the last ``reset()`` that were not auth failures."""
        return self._transient.attempts


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header into seconds from ``now`` (default: ``time.time()``).

    Accepts delta-seconds (``"120"``, also ``"1.5"``) or an HTTP-date; a date in the past
    gives ``0.0``. Returns None for a missing, negative or unparsable value; never raises.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # parsedate_to_datetime returns a naive datetime for "-0000"; HTTP-dates are GMT.
        when = when.replace(tzinfo=timezone.utc)
    try:
        target = when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
    reference = time.time() if now is None else now
    return max(0.0, target - reference)


def jittered(interval: float, fraction: float = 0.1, rng: random.Random | None = None) -> float:
    """Return ``interval`` spread uniformly by ``±fraction`` (default ±10%), never negative.

    Used for polling and flush intervals so that a fleet started together does not call
    the API in lockstep.
    """
    draw = (rng if rng is not None else random).uniform(1.0 - fraction, 1.0 + fraction)
    return max(0.0, interval * draw)
