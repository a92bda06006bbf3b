"""``phaseflag serve``: a PhaseFlag-compatible API and OFREP server over a ruleset file.

Built on uvicorn and Starlette (the ``phaseflag-sdk[server]`` extra); see
PhaseFlagServer for what it serves and ``docs/server.md`` for running it.
"""

from ._limits import Limits
from ._relay import RelaySource, relay_source
from ._run import run
from ._server import PhaseFlagServer

__all__ = ["Limits", "PhaseFlagServer", "RelaySource", "relay_source", "run"]
