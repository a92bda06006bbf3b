"""The flag dashboard at ``/ui`` (placeholder until its routes land)."""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute

__all__ = ["dashboard_routes"]


def dashboard_routes(app: Any) -> list[BaseRoute]:
    """The dashboard's routes."""
    return []
