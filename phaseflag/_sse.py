"""An incremental Server-Sent Events parser (WHATWG rules) over an iterable of byte chunks."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from phaseflag._errors import RulesetTooLargeError

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "SSEEvent", "parse_sse"]

DEFAULT_MAX_EVENT_BYTES = 10 * 1024 * 1024

# Line terminators are ASCII, so splitting bytes before decoding never cuts a UTF-8
# character in two, wherever the chunk boundaries fall.
_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched server-sent event.

    ``event`` is the event type (``"message"`` when the server named none), ``data`` the
    data lines joined with ``\\n``, ``id`` the stream's last event ID (it persists across
    events, None until the server sends one) and ``retry`` the last ``retry:`` value in
    milliseconds the server sent on this stream, if any.
    """

    event: str
    data: str
    id: str | None
    retry: int | None = None


class _Parser:
    """Per-stream field buffers; ``line()`` returns an event when a blank line dispatches one."""

    __slots__ = ("data", "event", "last_id", "retry")

    def __init__(self) -> None:
        self.event = ""
        self.data: list[str] = []
        self.last_id: str | None = None
        self.retry: int | None = None

    def line(self, raw: bytes) -> SSEEvent | None:
        if not raw:
            return self._dispatch()
        # surrogateescape, not U+FFFD: the consumer recovers the exact bytes with
        # encode("utf-8", "surrogateescape") and can refuse invalid UTF-8 as a whole.
        text = raw.decode("utf-8", errors="surrogateescape")
        if text.startswith(":"):
            return None
        field, colon, value = text.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self.data.append(value)
        elif field == "event":
            self.event = value
        elif field == "id":
            if "\0" not in value:
                self.last_id = value
        elif field == "retry" and _DIGITS.fullmatch(value):
            self.retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self.data:
            self.event = ""
            return None
        event = SSEEvent(self.event or "message", "\n".join(self.data), self.last_id, self.retry)
        self.event = ""
        self.data = []
        return event


def parse_sse(
    chunks: Iterable[bytes], *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> Iterator[SSEEvent]:
    """Yield each event of a ``text/event-stream`` as soon as its closing blank line arrives.

    Lines end at ``\\r\\n``, ``\\n`` or ``\\r`` (also when split across chunks); comments
    (``:...``) and unknown fields are ignored; a line without a colon is a field with an
    empty value; one space after the colon is stripped; invalid UTF-8 is kept as lone
    surrogates (``surrogateescape``, unlike WHATWG's U+FFFD) so that a ruleset with invalid
    bytes is refused whole rather than silently changed; a
    half-received event at end of input is dropped. Raises RulesetTooLargeError as soon as
    the bytes of one event (every line since the last blank line) exceed ``max_event_bytes``;
    memory therefore stays bounded by that limit plus one chunk.
    """
    parser = _Parser()
    partial: list[bytes] = []
    pending = 0  # bytes of the event being received, line terminators excluded
    skip_lf = False  # a chunk ended in "\r": a "\n" opening the next one belongs to it
    first_line = True
    for chunk in chunks:
        pos = 0
        if skip_lf and chunk:
            skip_lf = False
            if chunk[:1] == b"\n":
                pos = 1
        while True:
            match = _EOL.search(chunk, pos)
            end = len(chunk) if match is None else match.start()
            pending += end - pos
            if pending > max_event_bytes:
                raise RulesetTooLargeError(
                    f"a server-sent event exceeded the limit of {max_event_bytes} bytes"
                )
            if match is None:
                if pos < len(chunk):
                    partial.append(chunk[pos:])
                break
            line = chunk[pos:end]
            if partial:
                partial.append(line)
                line = b"".join(partial)
                partial = []
            if first_line:
                first_line = False
                line = line.removeprefix(_BOM)
            skip_lf = match.group() == b"\r" and match.end() == len(chunk)
            pos = match.end()
            if not line:
                pending = 0
            event = parser.line(line)
            if event is not None:
                yield event
