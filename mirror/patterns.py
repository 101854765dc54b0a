"""Tag rule patterns (`match`, `exclude`), matched by RE2: in time linear in the tag, whatever
the pattern.

Python's `re` backtracks: a rule like `(\\d+\\.?)+` takes hours on a 40-character tag a
registry serves, and nothing interrupts it (not even SIGTERM). RE2 (google-re2, Google's
engine; RE2 syntax: https://github.com/google/re2/wiki/Syntax) has no backtracking, so no
pattern and no tag can make it slow. What it gives up for that, backreferences (`\\1`) and
lookarounds (`(?=`, `(?!`, `(?<=`), is refused when the config is loaded, as are `\\Z` (RE2
writes `\\z`; a rule is matched whole anyway) and repetitions over 1,000.
"""

from __future__ import annotations

import functools
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information


class PatternError(ValueError):
    """RE2 cannot compile the pattern; the message says why."""


@functools.lru_cache(maxsize=256)
def compiled(pattern: str) -> Any:
    """The RE2 program for `pattern`; PatternError when RE2 refuses it."""
    options = re2.Options()
    options.log_errors = False  # RE2 would also print the error on stderr
    try:
        return re2.compile(pattern, options)
    except re2.error as error:
        why = error.args[0] if error.args else error
        text = why.decode(errors="replace") if isinstance(why, bytes) else str(why)
        raise PatternError(text) from None


def fullmatch(pattern: str, text: str) -> bool:
    """Does `pattern` match all of `text`?"""
    return compiled(pattern).fullmatch(text) is not None
