"""Django: ``make_middleware(client, context)`` builds a middleware class for ``MIDDLEWARE``.

In your project (say ``myapp/flags.py``)::

    client = PhaseFlagClient(...)
    FlagMiddleware = make_middleware(
        client, lambda request: EvaluationContext(user_id=str(request.user.pk))
    )

and add ``"myapp.flags.FlagMiddleware"`` to ``MIDDLEWARE`` (after the authentication
middleware when ``context`` uses ``request.user``). Works for sync and async views.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

if TYPE_CHECKING:
    from .._async import AsyncPhaseFlagClient
    from .._client import PhaseFlagClient
    from ..types import EvaluationContext

__all__ = ["make_middleware"]


def make_middleware(
    client: PhaseFlagClient | AsyncPhaseFlagClient,
    context: Callable[[Any], EvaluationContext | None] | None = None,
) -> type:
    """A Django middleware class opening ``client.request_context(context(request))`` per
    request (``context`` None: the client's ``default_context`` only)."""

    class PhaseFlagMiddleware:
        sync_capable = True
        async_capable = True

        def __init__(self, get_response: Callable[[Any], Any]) -> None:
            self.get_response = get_response
            self.is_async = iscoroutinefunction(get_response)
            if self.is_async:
                markcoroutinefunction(self)

        def __call__(self, request: Any) -> Any:
            if self.is_async:
                return self._acall(request)
            with client.request_context(context(request) if context is not None else None):
                return self.get_response(request)

        async def _acall(self, request: Any) -> Any:
            with client.request_context(context(request) if context is not None else None):
                response: Awaitable[Any] = self.get_response(request)
                return await response

    return PhaseFlagMiddleware
