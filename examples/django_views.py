"""Django: create the client once in AppConfig.ready(), read it in views.

Put ``FlagsConfig`` in your app's apps.py and list the app in INSTALLED_APPS;
configure with PHASEFLAG_BASE_URL / PHASEFLAG_API_KEY in the environment. With
gunicorn --preload or uWSGI (no lazy-apps) the client restarts its threads in
every forked worker by itself.
"""

from __future__ import annotations

from django.apps import AppConfig
from django.http import HttpRequest, JsonResponse

from phaseflag import EvaluationContext, PhaseFlagClient

client: PhaseFlagClient | None = None


class FlagsConfig(AppConfig):
    name = "flags"

    def ready(self) -> None:
        global client
        client = PhaseFlagClient()  # settings from PHASEFLAG_* variables
        client.start()  # stop() is registered with atexit and flushes events


def context_for(request: HttpRequest) -> EvaluationContext:
    user = request.user
    return EvaluationContext(
        user_id=str(user.pk) if user.is_authenticated else None,
        session_id=request.session.session_key,
        attributes={"plan": getattr(user, "plan", "free"), "staff": bool(user.is_staff)},
    )


def checkout(request: HttpRequest) -> JsonResponse:
    assert client is not None
    use_new_flow = client.get_boolean_value("new-checkout-flow", False, context_for(request))
    return JsonResponse({"flow": "new" if use_new_flow else "legacy"})
