"""Web-framework middleware opening ``client.request_context()`` for every request.

Each module imports its framework only when imported itself:
``phaseflag.integrations.flask`` (Flask), ``phaseflag.integrations.django`` (Django)
and ``phaseflag.integrations.asgi`` (Starlette, FastAPI and any ASGI app). Inside a
request every read that passes no context uses the request's, and every read sees the
ruleset held when the request began. Each takes a PhaseFlagClient or an
AsyncPhaseFlagClient.
"""
