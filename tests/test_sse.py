"""Tests for the incremental Server-Sent Events parser."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest

from phaseflag._errors import RulesetError, RulesetTooLargeError
from phaseflag._sse import SSEEvent, parse_sse


def events(*chunks: bytes, max_event_bytes: int = 1024 * 1024) -> list[SSEEvent]:
    return list(parse_sse(chunks, max_event_bytes=max_event_bytes))


def byte_by_byte(data: bytes) -> Iterable[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


STREAM = (
    b": welcome\n"
    b"event: ruleset\n"
    b'data: {"version": 1,\n'
    b'data:  "flags": []}\n'
    b"id: 7\n"
    b"\n"
    b"event: ping\n"
    b"data:\n"
    b"\n"
    b"data: caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x9a\x80\n"
    b"\n"
)
EXPECTED = [
    SSEEvent("ruleset", '{"version": 1,\n "flags": []}', "7"),
    SSEEvent("ping", "", "7"),
    SSEEvent("message", "café € 🚀", "7"),
]


class TestFields:
    def test_single_event_default_name(self) -> None:
        """An event without an event field is dispatched with the type 'message'."""
        assert events(b"data: hello\n\n") == [SSEEvent("message", "hello", None)]

    def test_multi_line_data_joined_with_newline(self) -> None:
        """Several data lines are joined with a single LF and no trailing LF."""
        assert events(b"data: a\ndata: b\ndata: c\n\n")[0].data == "a\nb\nc"

    def test_named_event(self) -> None:
        """The event field sets the type of the next dispatched event only."""
        got = events(b"event: ruleset\ndata: {}\n\ndata: x\n\n")
        assert [e.event for e in got] == ["ruleset", "message"]

    def test_only_one_leading_space_stripped(self) -> None:
        """One space after the colon is removed; further spaces are part of the value."""
        assert events(b"data:   x \n\n")[0].data == "  x "
        assert events(b"data:x\n\n")[0].data == "x"

    def test_value_may_contain_colons(self) -> None:
        """Only the first colon separates the field name from the value."""
        assert events(b"data: a:b: c\n\n")[0].data == "a:b: c"

    def test_line_without_colon_is_field_with_empty_value(self) -> None:
        """A bare 'data' line appends an empty data line, per the spec."""
        assert events(b"data\ndata\n\n")[0].data == "\n"

    def test_garbage_and_unknown_fields_ignored(self) -> None:
        """Unknown field names and garbage lines do not disturb the event."""
        got = events(b"garbage line\nfoo: bar\n\x00\x01\ndata: ok\n\n")
        assert got == [SSEEvent("message", "ok", None)]

    def test_event_without_data_not_dispatched(self) -> None:
        """A blank line after only an event field dispatches nothing and resets the type."""
        assert events(b"event: ping\n\ndata: x\n\n") == [SSEEvent("message", "x", None)]

    def test_id_persists_across_events(self) -> None:
        """The last event ID stays set for later events until the server changes it."""
        got = events(b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n")
        assert [e.id for e in got] == ["1", "1", ""]

    def test_id_with_nul_ignored(self) -> None:
        """An id containing NUL is ignored, keeping the previous one."""
        got = events(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
        assert [e.id for e in got] == ["1", "1"]

    def test_retry_exposed_when_digits(self) -> None:
        """A retry field made of ASCII digits is exposed; anything else is ignored."""
        got = events(b"retry: 1500\ndata: a\n\nretry: soon\ndata: b\n\n")
        assert [e.retry for e in got] == [1500, 1500]

    def test_bom_stripped_once(self) -> None:
        """A UTF-8 byte order mark opening the stream is not part of the first field name."""
        assert events(b"\xef\xbb\xbfdata: x\n\n") == [SSEEvent("message", "x", None)]

    def test_invalid_utf8_kept_recoverable(self) -> None:
        """Invalid UTF-8 does not raise and is not replaced: the exact bytes come back."""
        data = events(b"data: a\xffb\xc3\xa9\n\n")[0].data
        assert "\ufffd" not in data
        assert data.encode("utf-8", "surrogateescape") == b"a\xffb\xc3\xa9"


class TestLinesAndChunks:
    @pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
    def test_line_endings(self, eol: bytes) -> None:
        """LF, CRLF and CR all end lines."""
        data = eol.join([b"event: e", b"data: a", b"data: b", b"", b""])
        assert events(data) == [SSEEvent("e", "a\nb", None)]

    def test_crlf_split_across_chunks_is_one_line_end(self) -> None:
        """A CR ending one chunk and the LF opening the next make one terminator, not two."""
        assert events(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [
            SSEEvent("message", "a\nb", None)
        ]

    def test_comments_and_pings_ignored(self) -> None:
        """Comment lines (keep-alive pings) dispatch nothing."""
        assert events(b": ping\n\n:\n\n: another\ndata: x\n\n") == [SSEEvent("message", "x", None)]

    def test_half_event_at_eof_not_dispatched(self) -> None:
        """An event whose blank line never arrived is dropped at end of input."""
        assert events(b"data: done\n\nevent: ruleset\ndata: {partial") == [
            SSEEvent("message", "done", None)
        ]
        assert events(b"data: complete line but no blank\n") == []

    def test_whole_stream(self) -> None:
        """A realistic stream parses to the expected events."""
        assert events(STREAM) == EXPECTED

    def test_byte_by_byte_chunks(self) -> None:
        """Feeding one byte at a time (splitting lines and UTF-8 characters) changes nothing."""
        assert list(parse_sse(byte_by_byte(STREAM))) == EXPECTED
        crlf = STREAM.replace(b"\n", b"\r\n")
        assert list(parse_sse(byte_by_byte(crlf))) == EXPECTED

    def test_every_two_way_split(self) -> None:
        """Splitting the stream at any single point gives the same events."""
        crlf = STREAM.replace(b"\n", b"\r\n")
        for data in (STREAM, crlf):
            for cut in range(len(data) + 1):
                assert events(data[:cut], data[cut:]) == EXPECTED, cut

    def test_multibyte_character_split_between_chunks(self) -> None:
        """A 4-byte UTF-8 character cut in the middle is decoded whole."""
        rocket = "🚀".encode()
        got = events(b"data: " + rocket[:1], rocket[1:3], rocket[3:] + b"\n\n")
        assert got[0].data == "🚀"

    def test_empty_chunks_ignored(self) -> None:
        """Empty chunks between bytes do not end lines or reset the CR state."""
        assert events(b"data: a\r", b"", b"\n", b"", b"\n") == [SSEEvent("message", "a", None)]

    def test_events_yielded_incrementally(self) -> None:
        """Each event is yielded before later chunks are read (the stream is live)."""
        pulled: list[int] = []

        def chunks() -> Iterator[bytes]:
            for i, chunk in enumerate([b"data: 1\n\n", b"data: 2\n\n"]):
                pulled.append(i)
                yield chunk

        stream = parse_sse(chunks())
        assert next(stream).data == "1"
        assert pulled == [0]


class TestSizeLimit:
    def test_oversize_event_raises(self) -> None:
        """An event above max_event_bytes raises RulesetTooLargeError (a RulesetError)."""
        with pytest.raises(RulesetTooLargeError) as info:
            events(b"data: " + b"x" * 200 + b"\n\n", max_event_bytes=100)
        assert isinstance(info.value, RulesetError)
        assert "100 bytes" in str(info.value)

    def test_oversize_counts_all_lines_of_one_event(self) -> None:
        """Many short data lines add up toward the limit of their event."""
        with pytest.raises(RulesetTooLargeError):
            events(b"data: 0123456789\n" * 20 + b"\n", max_event_bytes=100)

    def test_limit_is_per_event(self) -> None:
        """Many small events, together far above the limit, all parse."""
        got = events(b"data: 0123456789\n\n" * 100, max_event_bytes=50)
        assert len(got) == 100

    def test_endless_line_stopped_early(self) -> None:
        """A line that never ends is refused once the limit is passed, not read forever."""
        pulled = 0

        def endless() -> Iterator[bytes]:
            nonlocal pulled
            while True:
                pulled += 1
                yield b"y" * 1000

        with pytest.raises(RulesetTooLargeError):
            list(parse_sse(endless(), max_event_bytes=10_000))
        assert pulled == 11
