"""``matches`` patterns compiled with RE2, whose matching time is linear in the input.

Python's ``re`` backtracks, has no timeout and holds the GIL, so one hostile pattern
could stall every thread of the host. RE2 (the ``google-re2`` package) runs a
automaton instead: no pattern can make a search exponential, so no hazard analysis
is needed. The price is syntax: backreferences, lookaround, atomic groups and
possessive quantifiers do not exist in RE2; a pattern using them is refused with a
message saying which (its flag is isolated as INVALID_FLAG). ``\\d``, ``\\w``, ``\\s``
and ``\\b`` are ASCII classes in RE2, and ``$`` matches only at the end of the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

import re2

__all__ = ["RegexError", "compile_regex"]


class RegexError(ValueError):
    """A pattern RE2 cannot compile; the message says why and what to write instead."""


# RE2's own messages for the constructs it lacks, mapped to one a ruleset author can act on.
_BACKREFERENCE: Final = "backreferences are not supported (RE2 matches in linear time and has none)"
_UNSUPPORTED: Final = (
    (re.compile(r"invalid escape sequence: \\[1-9]"), _BACKREFERENCE),
    (
        re.compile(r"invalid perl operator: \(\?<?[=!]"),
        "lookahead and lookbehind are not supported (RE2 matches in linear time and has none)",
    ),
    (
        re.compile(r"invalid perl operator: \(\?>"),
        "atomic groups are not supported (RE2 never backtracks: write the group plainly)",
    ),
    (
        re.compile(r"bad repetition operator: (?:[*+?]|\{[0-9,]*\})\+"),
        "possessive quantifiers are not supported (RE2 never backtracks: drop the extra '+')",
    ),
    (re.compile(r"invalid escape sequence: \\Z"), r"\Z is not supported: write \z"),
)


def _options(ignore_case: bool) -> re2.Options:
    options = re2.Options()
    options.case_sensitive = not ignore_case
    options.never_capture = True  # only "does it match" is asked: no submatch bookkeeping
    options.log_errors = False  # a refused pattern is reported once, by the compiler, not on stderr
    return options


def compile_regex(pattern: str, *, ignore_case: bool) -> Callable[[str], bool]:
    """A function telling whether ``pattern`` occurs anywhere in a string (a search).

    Raises RegexError for a pattern RE2 cannot compile. The function never raises:
    a string is searched as UTF-8 (lone surrogates passed through as bytes).
    """
    try:
        search = re2.compile(pattern, _options(ignore_case)).search
    except re2.error as exc:
        raise RegexError(_explain(pattern, exc)) from None

    def matches(text: str) -> bool:
        return search(text.encode("utf-8", "surrogatepass")) is not None

    return matches


def _explain(pattern: str, exc: Exception) -> str:
    detail = exc.args[0] if exc.args else ""
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    detail = str(detail)
    if detail.startswith("invalid perl operator: (?P") and "(?P=" in pattern:
        return _BACKREFERENCE  # RE2 stops at "(?P", before the "=" of a named backreference
    for shape, message in _UNSUPPORTED:
        if shape.search(detail):
            return message
    return detail or "RE2 cannot compile it"
