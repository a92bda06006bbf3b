"""Refuse regexes that can backtrack catastrophically, by inspecting ``re``'s parse tree.

Python's ``re`` has no timeout and holds the GIL while matching, so one bad pattern
in a ruleset could stall every thread of the host. The shapes that make a
backtracking engine exponential or high-polynomial are refused at compile time
(the flag is isolated as INVALID_FLAG); what remains is at worst quadratic, and
context values are capped in length (``MAX_REGEX_INPUT``) so each search stays
in the low milliseconds. Refused:

* a quantified item inside another quantified item, including ``?`` and ``{n}``
  under ``*``/``+``/``{m,n}`` — ``(a+)+``, ``(x?){30}``, ``(.*a){12}``;
* alternation under a quantifier whose choices can start with the same
  character — ``(a|aa)+``, ``(a|ab)*`` (``(foo|bar)+`` is fine);
* two unbounded quantifiers in a row whose characters overlap, with only
  optional items between them — ``a*a*b``, ``.*.*=``, ``\\s*.*\\s*``;
* backreferences and conditional groups.
"""

from __future__ import annotations

import sys
from typing import Any, Final

if sys.version_info >= (3, 11):
    from re import _constants as sre_constants
    from re import _parser as sre_parse
else:  # pragma: no cover - Python 3.10
    import sre_constants
    import sre_parse

__all__ = ["regex_hazard"]

_c: Any = sre_constants
_REPEATS: Final = frozenset(
    op for op in (_c.MAX_REPEAT, _c.MIN_REPEAT, getattr(_c, "POSSESSIVE_REPEAT", None)) if op
)
_UNBOUNDED: Final = _c.MAXREPEAT
_SAMPLE: Final = frozenset(chr(i) for i in range(128)) | frozenset("éüß中٣ ")
_CATEGORIES: Final = {
    _c.CATEGORY_DIGIT: frozenset(ch for ch in _SAMPLE if ch.isdigit()),
    _c.CATEGORY_SPACE: frozenset(ch for ch in _SAMPLE if ch.isspace()),
    _c.CATEGORY_WORD: frozenset(ch for ch in _SAMPLE if ch.isalnum() or ch == "_"),
}
_CATEGORIES.update(
    {
        _c.CATEGORY_NOT_DIGIT: _SAMPLE - _CATEGORIES[_c.CATEGORY_DIGIT],
        _c.CATEGORY_NOT_SPACE: _SAMPLE - _CATEGORIES[_c.CATEGORY_SPACE],
        _c.CATEGORY_NOT_WORD: _SAMPLE - _CATEGORIES[_c.CATEGORY_WORD],
    }
)


def regex_hazard(pattern: str) -> str | None:
    """Why ``pattern`` could backtrack catastrophically, or None when it is safe to run.

    Raises ``re.error`` for a pattern that does not parse.
    """
    return _sequence(sre_parse.parse(pattern), repeated=False)


def _sequence(items: Any, *, repeated: bool) -> str | None:
    """Check one sequence of parsed items; ``repeated``: it sits under a quantifier."""
    previous: frozenset[str] | None = None  # chars of the last unbounded quantifier
    for op, av in items:
        if op in _REPEATS:
            low, high, sub = av
            if repeated:
                return "a quantifier inside a quantified group (nested quantifiers)"
            if high > 1 and _ambiguous_branch(sub):
                return "alternation between overlapping choices inside a quantified group"
            problem = _sequence(sub, repeated=high > 1)
            if problem:
                return problem
            if high == _UNBOUNDED:
                chars = _first_chars(sub)
                if previous is not None and previous & chars:
                    return "two adjacent unbounded quantifiers that can match the same text"
                previous = chars
            elif low > 0:
                previous = None
            continue
        if op in (_c.GROUPREF, _c.GROUPREF_EXISTS):
            return "a backreference"
        if op is _c.SUBPATTERN:
            problem = _sequence(av[-1], repeated=repeated)
            if problem:
                return problem
            previous = None
        elif op is _c.BRANCH:
            for alternative in av[1]:
                problem = _sequence(alternative, repeated=repeated)
                if problem:
                    return problem
            previous = None
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            problem = _sequence(av[1], repeated=repeated)
            if problem:
                return problem
        elif op is not _c.AT:  # anchors match no text: they do not separate quantifiers
            previous = None
    return None


def _ambiguous_branch(items: Any) -> bool:
    r"""True when some alternation in ``items`` has two choices that can start alike
    (``a|aa``, ``\w|\d``): repeated, the engine may try every split of the text."""
    for op, av in items:
        if op is _c.BRANCH:
            starts = [_first_chars(alternative) for alternative in av[1]]
            if any(not start for start in starts):  # an empty choice matches anywhere
                return True
            for i, first in enumerate(starts):
                if any(first & other for other in starts[i + 1 :]):
                    return True
            if any(_ambiguous_branch(alternative) for alternative in av[1]):
                return True
        elif (op is _c.SUBPATTERN and _ambiguous_branch(av[-1])) or (
            op in _REPEATS and _ambiguous_branch(av[2])
        ):
            return True
    return False


def _first_chars(items: Any) -> frozenset[str]:
    """Roughly which characters the first item of ``items`` can match (over a sample)."""
    for op, av in items:
        if op is _c.LITERAL:
            return frozenset({chr(av)}) & _SAMPLE or frozenset({"\x00"})
        if op is _c.NOT_LITERAL:
            return _SAMPLE - {chr(av)}
        if op is _c.IN:
            return _class_chars(av)
        if op is _c.SUBPATTERN:
            return _first_chars(av[-1])
        if op in _REPEATS:
            return _first_chars(av[2])
        if op is _c.AT:
            continue
        return _SAMPLE  # ANY and anything unusual: assume it overlaps everything
    return frozenset()


def _class_chars(members: Any) -> frozenset[str]:
    chars: set[str] = set()
    negate = False
    for op, av in members:
        if op is _c.NEGATE:
            negate = True
        elif op is _c.LITERAL:
            chars.add(chr(av))
        elif op is _c.RANGE:
            low, high = av
            chars.update(ch for ch in _SAMPLE if low <= ord(ch) <= high)
        elif op is _c.CATEGORY:
            chars.update(_CATEGORIES.get(av, _SAMPLE))
        else:
            chars.update(_SAMPLE)
    found = frozenset(chars) & _SAMPLE
    return _SAMPLE - found if negate else found
