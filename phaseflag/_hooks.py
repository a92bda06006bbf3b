"""Evaluation hooks: user code run around one flag read (tracing, metrics, audit logs).

The stages and their names follow OpenFeature's Python SDK: ``before``, ``after``,
``error``, ``finally_after``. A hook can never change a read's result: whatever a
stage raises is logged once per hook, stage and exception type (through the client's
``OnceLog``), then ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import MethodType
from typing import TYPE_CHECKING, Any, Final

from ._errors import PhaseFlagError
from ._model import EMPTY_RULESET
from ._oncelog import OnceLog
from ._reads import BOOLEAN, INTEGER, JSON, NUMBER, STRING, Kind
from .types import ErrorCode, EvaluationContext, EvaluationResult

if TYPE_CHECKING:
    from ._client import PhaseFlagClient

__all__ = ["EvaluationError", "Hook", "HookContext", "add_hook", "hooked_read", "run_hooks"]

_STAGES: Final = ("before", "after", "error", "finally_after")


class EvaluationError(PhaseFlagError):
    """What a hook's ``error`` stage receives when a read fell back to the default.

    ``error_code`` is the result's ``ErrorCode`` (``FLAG_NOT_FOUND``, ``TYPE_MISMATCH``,
    ...); reads themselves never raise it.
    """

    def __init__(self, flag_key: str, error_code: str, message: str | None) -> None:
        self.flag_key = flag_key
        self.error_code = error_code
        super().__init__(f"{error_code} for flag {flag_key!r}: {message or 'no details'}")


class HookContext:
    """One read as a hook sees it; a fresh one per hook and per evaluation.

    ``kind`` is the getter's value kind (``"boolean"``, ``"string"``, ``"integer"``,
    ``"number"`` (get_float_*), ``"json"`` or ``"any"`` for ``get_details``/``get_variation``);
    ``context`` is the context the read evaluates (the request scope's when the call
    passed none; None when there is neither); ``ruleset_version`` the version of the
    ruleset it reads (None before any is loaded). ``hook_data`` is a dict private to
    this hook and this evaluation: ``before`` can put a start time there for
    ``finally_after``.
    """

    __slots__ = ("client", "context", "default", "flag_key", "hook_data", "kind", "ruleset_version")

    def __init__(  # noqa: PLR0917 - built in one place
        self,
        client: PhaseFlagClient,
        flag_key: str,
        kind: str,
        default: Any,
        context: EvaluationContext | None,
        ruleset_version: int | None,
    ) -> None:
        self.client = client
        self.flag_key = flag_key
        self.kind = kind
        self.default = default
        self.context = context
        self.ruleset_version = ruleset_version
        self.hook_data: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"HookContext(flag_key={self.flag_key!r}, kind={self.kind!r})"


class Hook:
    """Base class for evaluation hooks: override the stages you need (each does nothing here).

    ``before`` runs before the flag is evaluated; then ``after`` with the result when
    the read served a flag value, or ``error`` with an :class:`EvaluationError` when it
    fell back to the default (flag missing, wrong type, not ready, ...); and always
    ``finally_after`` with the result. Stages run on the reading thread, so keep them
    quick; results are shared, do not mutate their values. A read looks a hook's stages
    up when the hook is added (or, for ``hooks=``, per read) and skips the ones a
    subclass did not override.
    """

    def before(self, ctx: HookContext) -> None:
        """Called before evaluation; its return value is ignored."""

    def after(self, ctx: HookContext, result: EvaluationResult) -> None:
        """Called with the result when a flag value was served."""

    def error(self, ctx: HookContext, exc: Exception) -> None:
        """Called when the read fell back to the default (``exc`` says why)."""

    def finally_after(self, ctx: HookContext, result: EvaluationResult) -> None:
        """Called last, whatever happened."""


def check_hook(hook: object) -> Hook:
    """``hook`` if it has every stage as a method; TypeError naming the missing ones otherwise."""
    missing = [stage for stage in _STAGES if not callable(getattr(hook, stage, None))]
    if missing:
        raise TypeError(
            f"{type(hook).__name__} is not a hook: it lacks {', '.join(missing)} "
            "(subclass phaseflag.Hook and override the stages you need)"
        )
    return hook  # type: ignore[return-value]


_BEFORE, _AFTER, _ERROR, _FINALLY = (Hook.__dict__[stage] for stage in _STAGES)

Stage = Callable[..., Any] | None
#: One hook as a read runs it: the hook and its before, after, error and finally_after,
#: each the bound method, or None where the hook kept Hook's empty stage.
Plan = tuple[Hook, Stage, Stage, Stage, Stage]


def plan(hook: Hook) -> Plan:
    """The stages of ``hook`` a read calls (looked up once, when the hook is added);
    TypeError (from check_hook) when it is not a hook."""
    try:
        b, a, e, f = hook.before, hook.after, hook.error, hook.finally_after
    except AttributeError:
        check_hook(hook)
        raise
    if not (callable(b) and callable(a) and callable(e) and callable(f)):
        check_hook(hook)
    return (
        hook,
        None if getattr(b, "__func__", None) is _BEFORE else b,
        None if getattr(a, "__func__", None) is _AFTER else a,
        None if getattr(e, "__func__", None) is _ERROR else e,
        None if getattr(f, "__func__", None) is _FINALLY else f,
    )


def plans(client_plans: tuple[Plan, ...], call_hooks: Iterable[Hook] | None) -> tuple[Plan, ...]:
    """Client hooks first, then the call's, as OpenFeature orders API, client and call hooks."""
    if not call_hooks:
        return client_plans
    return (*client_plans, *[plan(h) for h in call_hooks])


def run_hooks(  # noqa: PLR0917 - the one call site passes them all
    client: PhaseFlagClient,
    hooks: tuple[Plan, ...],
    kind: Kind | None,
    flag_key: str,
    default: Any,
    context: EvaluationContext | None,
    seen: EvaluationContext | None,
    ruleset_version: int | None,
) -> EvaluationResult:
    """The ``*_details`` read of ``kind`` between the hooks' stages; its result is the read's,
    whatever they do. ``before`` runs in registration order, ``after``/``error``/
    ``finally_after`` in reverse (like OpenFeature); a stage that raises is logged once
    through the client's OnceLog and skipped."""
    name = "any" if kind is None else kind.name
    runs = [(p, HookContext(client, flag_key, name, default, seen, ruleset_version)) for p in hooks]
    for p, ctx in runs:
        if p[1] is not None:
            try:
                p[1](ctx)
            except Exception as exc:
                _failed(client._warn_once, p[0], "before", exc)
    result = client._typed_details(flag_key, default, context, kind)
    runs.reverse()
    if result.error_code is None:
        for p, ctx in runs:
            if p[2] is not None:
                try:
                    p[2](ctx, result)
                except Exception as exc:
                    _failed(client._warn_once, p[0], "after", exc)
    else:
        error = EvaluationError(result.flag_key, result.error_code, result.error_message)
        for p, ctx in runs:
            if p[3] is not None:
                try:
                    p[3](ctx, error)
                except Exception as exc:
                    _failed(client._warn_once, p[0], "error", exc)
    for p, ctx in runs:
        if p[4] is not None:
            try:
                p[4](ctx, result)
            except Exception as exc:
                _failed(client._warn_once, p[0], "finally_after", exc)
    return result


def _failed(warn: OnceLog, hook: Hook, stage: str, exc: Exception) -> None:
    name = type(hook).__qualname__
    warn(
        f"hook:{name}:{stage}:{type(exc).__name__}",
        "phaseflag: hook %s.%s raised %s: %s (ignored; the read's result is unchanged)",
        name,
        stage,
        type(exc).__name__,
        exc,
    )


def hooked_read(  # noqa: PLR0917 - the client's _hooked arguments, passed through
    client: PhaseFlagClient,
    kind: Kind | None,
    flag_key: str,
    default: Any,
    context: EvaluationContext | None,
    call_hooks: Iterable[Hook] | None,
    client_plans: tuple[Plan, ...] | None = None,
) -> EvaluationResult:
    """A read with hooks: the ``*_details`` result for ``kind`` between the hook stages
    (the typed value getters return its value: the same value they return without).
    ``client_plans`` are the client hooks' plans when the caller has them ready."""
    if client_plans is None:
        client_plans = tuple(plan(h) for h in client._hooks) if client._hooks else ()
    try:
        hooks = plans(client_plans, call_hooks)
    except TypeError as exc:
        client._warn_once(f"hooks:{exc}", "phaseflag: %s; the call's hooks are ignored", exc)
        hooks = client_plans
    ruleset = client._store.ruleset
    seen = context
    scope = client._scopes.get() if client._scopes is not None else None
    if scope is not None:
        ruleset = scope.ruleset
        if seen is None:
            seen = scope.context
    elif seen is None:
        seen = client._default_context
    version = None if ruleset is EMPTY_RULESET else ruleset.version
    return run_hooks(client, hooks, kind, flag_key, default, context, seen, version)


def hooked_variation(
    client: PhaseFlagClient,
    flag_key: str,
    context: EvaluationContext | None,
    hooks: Iterable[Hook],
    client_plans: tuple[Plan, ...] | None = None,
) -> EvaluationResult | None:
    """``get_variation`` with hooks: None if the flag is unknown, not ready or the read raised."""
    hooked = hooked_read(client, None, flag_key, None, context, hooks, client_plans)
    code = hooked.error_code
    if code in (ErrorCode.FLAG_NOT_FOUND, ErrorCode.NOT_READY) or (
        code == ErrorCode.GENERAL and hooked.error_message is None  # a read that raised
    ):
        return None
    return hooked


def add_hook(client: PhaseFlagClient, hook: Hook) -> Callable[[], None]:
    """``client.add_hook``: add ``hook`` to the client's hooks and retype its getters;
    returns the function that removes it again."""
    check_hook(hook)
    with client._hook_lock:
        client._hooks = (*client._hooks, hook)
        route_getters(client)

    def remove() -> None:
        with client._hook_lock:
            kept = list(client._hooks)
            if hook in kept:
                kept.remove(hook)
            client._hooks = tuple(kept)
            route_getters(client)

    return remove


def route_getters(client: PhaseFlagClient) -> None:
    """While client hooks exist, instance attributes shadow the getters with ones that
    always run them; without, the class's getters serve and test only their own
    ``hooks`` argument (so a client without hooks pays nothing for them)."""
    client_plans = tuple(plan(h) for h in client._hooks)
    for name, kind, shape in _GETTERS:
        if client_plans:
            client.__dict__[name] = MethodType(_hooked_method(kind, shape, client_plans), client)
        else:
            client.__dict__.pop(name, None)


# -- the read paths a client is retyped to ----------------------------------------------------


def _hooked_method(
    kind: Kind | None, shape: str, client_plans: tuple[Plan, ...]
) -> Callable[..., Any]:
    """A getter with the public one's signature that always runs the client's hooks."""
    if shape == "variation":

        def get_variation(
            self: PhaseFlagClient,
            flag_key: str,
            context: EvaluationContext | None = None,
            hooks: Iterable[Hook] | None = None,
        ) -> EvaluationResult | None:
            return hooked_variation(self, flag_key, context, hooks or (), client_plans)

        return get_variation
    if shape == "value":

        def get_value(
            self: PhaseFlagClient,
            flag_key: str,
            default: Any,
            context: EvaluationContext | None = None,
            hooks: Iterable[Hook] | None = None,
        ) -> Any:
            return hooked_read(self, kind, flag_key, default, context, hooks, client_plans).value

        return get_value

    def get_details(
        self: PhaseFlagClient,
        flag_key: str,
        default: Any,
        context: EvaluationContext | None = None,
        hooks: Iterable[Hook] | None = None,
    ) -> EvaluationResult:
        return hooked_read(self, kind, flag_key, default, context, hooks, client_plans)

    return get_details


#: (getter name, value kind or None for any value, what it returns)
_GETTERS: Final = (
    ("get_boolean_value", BOOLEAN, "value"),
    ("get_string_value", STRING, "value"),
    ("get_integer_value", INTEGER, "value"),
    ("get_float_value", NUMBER, "value"),
    ("get_json_value", JSON, "value"),
    ("get_boolean_details", BOOLEAN, "details"),
    ("get_string_details", STRING, "details"),
    ("get_integer_details", INTEGER, "details"),
    ("get_float_details", NUMBER, "details"),
    ("get_json_details", JSON, "details"),
    ("get_details", None, "details"),
    ("get_variation", None, "variation"),
)
