"""pytest plugin: a ``phaseflag_client`` fixture and ``@pytest.mark.phaseflag(...)`` flag values.

Registered through the ``pytest11`` entry point, so it is active wherever phaseflag is installed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from ._client import PhaseFlagClient
from .testing import create_mock_client

__all__ = ["phaseflag_client"]

_MARKER_HELP = (
    "phaseflag(values=None, /, **flags): serve these flag values (as overrides) from the "
    "phaseflag_client fixture during the test; keys that are not identifiers go in the dict"
)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``phaseflag`` marker (so ``--strict-markers`` accepts it)."""
    config.addinivalue_line("markers", _MARKER_HELP)


@pytest.fixture
def phaseflag_client() -> Iterator[PhaseFlagClient]:
    """A started mock PhaseFlagClient (no network, no flags until set), stopped after the test.

    Override this fixture in a ``conftest.py`` to return your application's own
    client: the ``phaseflag`` marker then overrides flags on that client instead.
    """
    client = create_mock_client()
    try:
        yield client
    finally:
        client.stop()


@pytest.fixture(autouse=True)
def _phaseflag_marker(request: pytest.FixtureRequest) -> Iterator[None]:
    """Apply ``@pytest.mark.phaseflag`` values to ``phaseflag_client`` for one test."""
    values = _marker_values(request)
    if not values:
        yield
        return
    client = request.getfixturevalue("phaseflag_client")
    for key, value in values.items():
        client.set_override(key, value)
    try:
        yield
    finally:
        for key in values:
            client.clear_override(key)


def _marker_values(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Merge every ``phaseflag`` marker on the test; the closest (the function's) wins."""
    values: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("phaseflag"))):
        if len(marker.args) > 1 or (marker.args and not isinstance(marker.args[0], Mapping)):
            raise TypeError(
                "@pytest.mark.phaseflag takes one dict of flag values and/or keyword arguments, "
                f"got {marker.args!r}"
            )
        if marker.args:
            values.update(marker.args[0])
        values.update(marker.kwargs)
    return values
