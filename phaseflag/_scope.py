"""Request scopes: one context and one ruleset snapshot for every read inside ``with``.

A scope lives in a ``contextvars.ContextVar`` owned by the client, so it is per thread
and per asyncio task (a task started inside a scope inherits it, as contextvars do).
The client creates its variable on the first ``request_context()``: a client that never
opens a scope pays one attribute test per read, one that does pays one ``ContextVar.get``.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ._errors import InvalidContextError
from .types import EvaluationContext

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._client import PhaseFlagClient
    from ._model import Ruleset

_NO_VALUES: Mapping[str, Any] = {}

__all__ = ["RequestScope", "Scope", "open_scope"]


class Scope:
    """What reads inside one ``request_context`` see: the pinned ruleset and the context."""

    __slots__ = ("context", "outer", "ruleset", "values")

    def __init__(
        self, ruleset: Ruleset, context: EvaluationContext | None, values: Mapping[str, Any]
    ) -> None:
        self.ruleset = ruleset
        self.context = context  # merged over the client's default_context; None if neither
        self.values = values  # context's evaluation values, as reads that pass none use them
        self.outer: Scope | None = None  # the scope this one is nested in, restored on exit


class RequestScope:
    """The context manager ``client.request_context(ctx)`` returns (re-entrant, nestable).

    Entering pins the ruleset held at that moment; a nested scope pins its own.
    ``__enter__`` returns the scope's context (None when neither ``ctx`` nor a
    ``default_context`` was given). One object may be entered by several threads or
    tasks at once: what to restore on exit is kept in the entered scope (in the
    ContextVar), not on this object.
    """

    __slots__ = ("_scope", "_var")

    def __init__(self, var: ContextVar[Scope | None], scope_factory: Any) -> None:
        self._var = var
        self._scope = scope_factory

    def __enter__(self) -> EvaluationContext | None:
        scope: Scope = self._scope()
        scope.outer = self._var.get()
        self._var.set(scope)
        return scope.context

    def __exit__(self, *exc_info: object) -> None:
        scope = self._var.get()
        self._var.set(scope.outer if scope is not None else None)

    async def __aenter__(self) -> EvaluationContext | None:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__()


def open_scope(client: PhaseFlagClient, context: EvaluationContext | None) -> RequestScope:
    """``client.request_context``: the client's scope variable is made on first use (from
    then on its reads check it); the context is merged over ``default_context`` once, here."""
    if context is not None and not isinstance(context, EvaluationContext):
        raise InvalidContextError(
            "context", f"expected an EvaluationContext, got {type(context).__name__}"
        )
    if client._scopes is None:
        with client._hook_lock:
            if client._scopes is None:
                client._scopes = ContextVar(f"phaseflag-scope-{id(client):x}", default=None)
                client._publish()
    merged = context
    if client._default_context is not None:
        merged = client._default_context.merge(context)
    values = merged._values if merged is not None else _NO_VALUES
    store = client._store

    def pin() -> Scope:
        return Scope(store.ruleset, merged, values)

    return RequestScope(client._scopes, pin)
