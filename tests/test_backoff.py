"""Tests for backoff with full jitter, Retry-After parsing and jittered intervals."""

from __future__ import annotations

import random
import statistics
from email.utils import formatdate

import pytest

from phaseflag._backoff import (
    AUTH_BACKOFF_BASE,
    AUTH_BACKOFF_CAP,
    MAX_RETRY_AFTER,
    Backoff,
    auth_backoff,
    jittered,
    parse_retry_after,
)

NOW = 1_700_000_000.0


def draws_at(attempt: int, n: int, *, base: float = 1.0, cap: float = 30.0) -> list[float]:
    """n independent delays drawn at the given attempt number."""
    backoff = Backoff(base, cap, rng=random.Random(attempt))
    out = []
    for _ in range(n):
        backoff.reset()
        for _ in range(attempt):
            backoff.next_delay()
        out.append(backoff.next_delay())
    return out


class TestBackoff:
    def test_each_delay_within_full_jitter_bounds(self) -> None:
        """Delay n lies in [0, min(cap, base * 2**n)]."""
        backoff = Backoff(0.5, 20.0, rng=random.Random(1))
        for attempt in range(12):
            ceiling = min(20.0, 0.5 * 2**attempt)
            assert backoff.ceiling() == ceiling
            assert 0.0 <= backoff.next_delay() <= ceiling

    def test_full_jitter_spread(self) -> None:
        """Draws cover the whole range [0, ceiling] with a mean near ceiling / 2."""
        delays = draws_at(3, 2000)  # ceiling 8
        assert min(delays) < 0.2
        assert max(delays) > 7.8
        assert 3.7 < statistics.fmean(delays) < 4.3

    def test_cap_bounds_late_attempts(self) -> None:
        """Once base * 2**n passes cap, delays spread over [0, cap] and never exceed it."""
        delays = draws_at(10, 1000, cap=30.0)
        assert max(delays) <= 30.0
        assert max(delays) > 29.0
        assert 13.5 < statistics.fmean(delays) < 16.5

    def test_attempts_counted_and_reset(self) -> None:
        """attempts counts delays handed out; reset() starts again from base."""
        backoff = Backoff(1.0, 100.0, rng=random.Random(2))
        for _ in range(5):
            backoff.next_delay()
        assert backoff.attempts == 5
        assert backoff.ceiling() == 32.0
        backoff.reset()
        assert backoff.attempts == 0
        assert backoff.ceiling() == 1.0
        assert backoff.next_delay() <= 1.0

    def test_seeded_rng_reproducible(self) -> None:
        """Two backoffs with equally seeded rngs produce the same delays."""
        a = Backoff(1.0, 60.0, rng=random.Random(42))
        b = Backoff(1.0, 60.0, rng=random.Random(42))
        assert [a.next_delay() for _ in range(10)] == [b.next_delay() for _ in range(10)]

    def test_many_attempts_do_not_overflow(self) -> None:
        """Thousands of attempts keep the delay finite and under cap."""
        backoff = Backoff(1.0, 10.0, rng=random.Random(3))
        for _ in range(5000):
            assert 0.0 <= backoff.next_delay() <= 10.0

    def test_retry_after_is_a_floor(self) -> None:
        """A Retry-After longer than the jittered delay wins, even above cap."""
        backoff = Backoff(1.0, 10.0, rng=random.Random(4))
        assert backoff.next_delay(retry_after=120.0) == 120.0
        assert backoff.attempts == 1

    def test_retry_after_clamped(self) -> None:
        """An absurd Retry-After is clamped to MAX_RETRY_AFTER."""
        backoff = Backoff(1.0, 10.0, rng=random.Random(5))
        assert backoff.next_delay(retry_after=1e9) == MAX_RETRY_AFTER

    def test_short_retry_after_does_not_shorten(self) -> None:
        """A Retry-After of zero leaves the jittered delay as it is."""
        a = Backoff(1.0, 10.0, rng=random.Random(6))
        b = Backoff(1.0, 10.0, rng=random.Random(6))
        assert a.next_delay(retry_after=0.0) == b.next_delay()

    @pytest.mark.parametrize(
        ("base", "cap", "min_delay"),
        [
            (0.0, 1.0, 0.0),
            (-1.0, 1.0, 0.0),
            (2.0, 1.0, 0.0),
            (1.0, float("inf"), 0.0),
            (1.0, 2.0, -1.0),
        ],
    )
    def test_invalid_arguments(self, base: float, cap: float, min_delay: float) -> None:
        """Non-positive base, cap below base, infinite cap or negative min_delay raise."""
        with pytest.raises(ValueError):
            Backoff(base, cap, min_delay=min_delay)


class TestAuthBackoff:
    def test_constants(self) -> None:
        """Auth backoff starts at a minute and grows to an hour."""
        assert (AUTH_BACKOFF_BASE, AUTH_BACKOFF_CAP) == (60.0, 3600.0)

    def test_first_retry_takes_minutes_not_seconds(self) -> None:
        """The first retry after a 401/403 waits 30-60 seconds."""
        for seed in range(200):
            assert 30.0 <= auth_backoff(rng=random.Random(seed)).next_delay() <= 60.0

    def test_grows_to_an_hour(self) -> None:
        """Later retries spread between 30 s and the one-hour cap."""
        backoff = auth_backoff(rng=random.Random(7))
        delays = [backoff.next_delay() for _ in range(300)][10:]
        assert all(30.0 <= d <= 3600.0 for d in delays)
        assert max(delays) > 3000.0


class TestParseRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [("120", 120.0), (" 5 ", 5.0), ("0", 0.0), ("1.5", 1.5), ("007", 7.0)],
    )
    def test_delta_seconds(self, value: str, expected: float) -> None:
        """Delta-seconds parse to that many seconds."""
        assert parse_retry_after(value) == expected

    def test_http_date_in_future(self) -> None:
        """An HTTP-date parses to the seconds between now and then."""
        assert parse_retry_after(formatdate(NOW + 90, usegmt=True), now=NOW) == 90.0

    def test_http_date_minus_zero_zone(self) -> None:
        """A '-0000' zone (naive result) is read as GMT."""
        value = formatdate(NOW + 30).rsplit(" ", 1)[0] + " -0000"
        assert parse_retry_after(value, now=NOW) == 30.0

    def test_http_date_in_past_is_zero(self) -> None:
        """A date already passed means retry now."""
        assert parse_retry_after(formatdate(NOW - 600, usegmt=True), now=NOW) == 0.0

    def test_http_date_uses_clock_by_default(self) -> None:
        """Without now, the wall clock is the reference."""
        import time

        got = parse_retry_after(formatdate(time.time() + 100, usegmt=True))
        assert got is not None
        assert 98.0 <= got <= 100.0

    @pytest.mark.parametrize(
        "value", [None, "", "-5", "soon", "1e5", "12 seconds", "Mon, 99 Foo 2024", "nan", "inf"]
    )
    def test_garbage_is_none(self, value: str | None) -> None:
        """Missing, negative or unparsable values give None."""
        assert parse_retry_after(value, now=NOW) is None


class TestJittered:
    def test_within_ten_percent(self) -> None:
        """The default jitter keeps the interval within ±10% and actually varies it."""
        rng = random.Random(8)
        values = [jittered(30.0, rng=rng) for _ in range(1000)]
        assert all(27.0 <= v <= 33.0 for v in values)
        assert min(values) < 27.5
        assert max(values) > 32.5
        assert 29.5 < statistics.fmean(values) < 30.5

    def test_custom_fraction(self) -> None:
        """fraction sets the spread."""
        rng = random.Random(9)
        assert all(5.0 <= jittered(10.0, 0.5, rng) <= 15.0 for _ in range(200))

    def test_zero_fraction_and_zero_interval(self) -> None:
        """No fraction returns the interval; a zero interval stays zero."""
        assert jittered(10.0, 0.0) == 10.0
        assert jittered(0.0) == 0.0


class TestRetryPolicy:
    """The one policy polling and streaming share, by kind of failure."""

    def test_auth_failures_take_the_auth_backoff(self) -> None:
        """401/403: the first retry in 30-60 s whatever the transient base."""
        from phaseflag._backoff import RetryPolicy
        from phaseflag._errors import AuthenticationError

        for seed in range(50):
            policy = RetryPolicy(base=0.01, cap=0.02, rng=random.Random(seed))
            assert 30.0 <= policy.delay(AuthenticationError("no", 401)) <= 60.0

    def test_transient_failures_back_off_and_honour_retry_after(self) -> None:
        """Network errors and 5xx: full jitter under a doubling ceiling; Retry-After wins."""
        from phaseflag._backoff import MAX_RETRY_AFTER, RetryPolicy
        from phaseflag._errors import TransportError

        policy = RetryPolicy(base=1.0, cap=8.0, rng=random.Random(3))
        delays = [policy.delay(TransportError("down")) for _ in range(6)]
        assert all(0.0 <= d <= min(8.0, 2.0**n) for n, d in enumerate(delays))
        assert policy.attempts == 6
        assert policy.delay(TransportError("busy", 503, retry_after=3600.0)) == MAX_RETRY_AFTER
        policy.reset()
        assert policy.attempts == 0

    def test_defaults_read_when_made(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """base/cap default to RETRY_BASE/RETRY_CAP as they are when the policy is made."""
        import phaseflag._backoff
        from phaseflag._errors import TransportError

        monkeypatch.setattr(phaseflag._backoff, "RETRY_BASE", 0.5)
        monkeypatch.setattr(phaseflag._backoff, "RETRY_CAP", 0.5)
        policy = phaseflag._backoff.RetryPolicy(rng=random.Random(1))
        assert all(policy.delay(TransportError("x")) <= 0.5 for _ in range(20))
