"""Limits: what one client and one request may cost ``phaseflag serve``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits on clients and requests; anything beyond is refused, never buffered.

    ``header_timeout`` bounds the time from a connection's (or a request's) first byte
    to its last header byte, so a client trickling its headers (slowloris) is closed
    after that many seconds. ``max_connections_per_client`` caps the connections of one
    IP address that have not yet sent an authenticated request; the ones over it are
    closed at once (a connection that authenticated counts only against
    ``max_connections``, so thousands of SDK streams behind one address are fine).
    ``max_connections`` caps them all (answered 503 and closed). ``idle_timeout`` closes
    a keep-alive connection that sends nothing between requests.
    """

    max_body_bytes: int = 1024 * 1024
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    max_request_line: int = 8 * 1024
    #: Seconds a keep-alive connection may sit idle between requests before it is closed.
    idle_timeout: float = 60.0
    #: Connections served at once; more are answered 503 and closed.
    max_connections: int = 20_000
    #: Seconds from the first byte of a request to the end of its headers.
    header_timeout: float = 10.0
    #: Not-yet-authenticated connections one address may hold; more are closed at once.
    max_connections_per_client: int = 4096
