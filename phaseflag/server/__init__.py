"""``phaseflag serve``: a PhaseFlag-compatible API and OFREP server over a ruleset file.

Built on the standard library (``http.server``); see PhaseFlagServer for what it serves.
"""

from ._http import Limits
from ._server import PhaseFlagServer, run

__all__ = ["Limits", "PhaseFlagServer", "run"]
