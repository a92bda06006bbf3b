"""Value-change subscriptions: ``callback(old, new)`` when a flag's value for one context changes.

Each subscription remembers the value it last reported. After every applied ruleset
change the value is evaluated again (purely: no exposure counted, no hooks) against
the new ruleset, and the callback runs only when it differs. Callbacks run on the
thread that applied the change (the sync thread), like the ``change`` listeners; one
that raises is logged once per callback and exception type, then ignored.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._evaluation import evaluate_flag
from ._model import Ruleset
from ._oncelog import OnceLog

if TYPE_CHECKING:
    from ._client import PhaseFlagClient
    from .types import EvaluationContext

__all__ = ["ValueTracker", "subscribe", "value_in"]

#: Used when the client passes none (its own OnceLog, with its logger, is preferred).
_WARN = OnceLog(logging.getLogger("phaseflag"))

ValueCallback = Callable[[Any, Any], Any]


def value_in(ruleset: Ruleset, flag_key: str, values: Mapping[str, Any]) -> Any:
    """The value ``flag_key`` serves for ``values`` in ``ruleset``; None when absent or failing."""
    flag = ruleset.flags.get(flag_key)
    if flag is None:
        return None
    try:
        result = flag.static if flag.static is not None else evaluate_flag(flag, values, ruleset)
    except Exception:  # the evaluator does not raise; a bug must not stop the sync thread
        return None
    return None if result.error_code is not None else result.value


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


class _Subscription:
    __slots__ = ("callback", "flag_key", "last", "values")

    def __init__(
        self, flag_key: str, values: Mapping[str, Any], callback: ValueCallback, last: Any
    ) -> None:
        self.flag_key = flag_key
        self.values = values
        self.callback = callback
        self.last = last


class ValueTracker:
    """The client's value-change subscriptions (copy-on-write list; updates on one thread)."""

    def __init__(self, warn: OnceLog | None = None) -> None:
        self._warn = warn if warn is not None else _WARN
        self._subs: tuple[_Subscription, ...] = ()
        self.failures = 0  # callback calls that raised (status().listener_failures)
        self._lock = threading.Lock()
        self.listening = False  # the client's "change" listener that drives this is added

    def __bool__(self) -> bool:
        return bool(self._subs)

    def add(
        self,
        flag_key: str,
        values: Mapping[str, Any],
        callback: ValueCallback,
        ruleset: Ruleset,
    ) -> Callable[[], None]:
        """Subscribe; the value now in ``ruleset`` is the baseline. Returns the unsubscribe."""
        sub = _Subscription(flag_key, values, callback, value_in(ruleset, flag_key, values))
        with self._lock:
            self._subs = (*self._subs, sub)

        def unsubscribe() -> None:
            with self._lock:
                self._subs = tuple(s for s in self._subs if s is not sub)

        return unsubscribe

    def ruleset_changed(self, ruleset: Ruleset) -> None:
        """Re-evaluate every subscription against ``ruleset`` and report the ones that changed."""
        for sub in self._subs:
            new = value_in(ruleset, sub.flag_key, sub.values)
            old = sub.last
            if _same(old, new):
                continue
            sub.last = new
            try:
                sub.callback(old, new)
            except Exception as exc:
                self.failures += 1
                name = getattr(sub.callback, "__qualname__", type(sub.callback).__name__)
                self._warn(
                    f"value-change:{sub.flag_key}:{name}:{type(exc).__name__}",
                    "phaseflag: value-change callback %s for flag %r raised %s: %s "
                    "(ignored; logged once)",
                    name,
                    sub.flag_key,
                    type(exc).__name__,
                    exc,
                )

    def reset_after_fork(self) -> None:
        """A fresh lock in a forked child (the parent's may be held)."""
        self._lock = threading.Lock()


def subscribe(
    client: PhaseFlagClient,
    flag_key: str,
    context: EvaluationContext | None,
    callback: ValueCallback,
) -> Callable[[], None]:
    """``client.on_flag_value_change``: the first subscription adds the client's ``change``
    listener that drives every one; returns the unsubscribe function."""
    if not isinstance(flag_key, str):
        raise TypeError("flag_key must be a str")
    if not callable(callback):
        raise TypeError("callback must be callable as callback(old, new)")
    values = client._context_values(context) if context is not None else client._default_values
    tracker, store = client._value_changes, client._store
    with client._hook_lock:
        if not tracker.listening:
            tracker.listening = True
            client._listeners.add("change", lambda _: tracker.ruleset_changed(store.ruleset))
    return tracker.add(flag_key, values, callback, store.ruleset)
