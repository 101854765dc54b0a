"""What a tag says about its version: the order of `newest: N` and the tags `semver:` ranges see.

A tag is **version-like** when it reads, in this order (README, "Tag rules", says the same):

    [v] NUMBER(.NUMBER)*  [pre-release]  [variant]

- the release: numbers joined by `.` (`3`, `3.20`, `3.20.3`, `1.2.3.4`), after an optional `v`;
- a pre-release, attached or after `-`/`.`/`_`: `rc1`, `-rc.1`, `-beta2`, `a5`, `b2`, `-M02`,
  `-dev`, `-preview1`, `-ea-15` (words: alpha, beta, rc, pre, preview, dev, snapshot,
  nightly, canary, milestone, ea; the letters a, b, c, m only with a number after them);
- a variant, after `-` or `_` (or `.` before a letter): `-slim`, `-alpine3.20`,
  `-bookworm-slim`, `-debian-12-r5`, `_7-jdk`, `.Final`.

Anything else is a word (`latest`, `edge`, `bookworm`, `lts-slim`, `alpine3.20`, a git hash
like `3f2a1bc`) and has no version. A release of one 8-digit date (`20240923`, alpine's edge
snapshots) or `YYYY-MM-DD` is a **date**: it ranks below every version and is never in a
`semver:` range. Referrer-shaped tags (`sha256-<hex>`, `sha256-<hex>.sig`: OCI's referrers tag
schema and cosign's signature, attestation and SBOM tags) are not images: no tag rule chooses
them.

Order, highest first: the release numbers (as numbers; missing parts are 0, so `3.20` equals
`3.20.0`); at the same release, the release itself above its pre-releases (pre-releases by
word, alpha < beta < rc, then number, as SemVer orders them); then a plain release above its
variants, and variants by their text with digit runs compared as numbers (`r10` > `r9`); last,
the tag's own text, so the order is total and a choice never flips between runs.

Every function here reads a tag in one pass (no regular expression, no backtracking), so a
hostile tag list costs time in proportion to its length. `semver:` ranges are npm's grammar,
read by the node-semver package; it only ever sees versions built here from parsed numbers.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import nodesemver

MAX_TAG = 128  # the distribution grammar's longest tag
MAX_RANGE = 256  # the longest `semver:` range read (npm's own limit on a version string)
# Pre-release words, as written (lower case) -> as SemVer compares them.
_PRE_WORDS = {
    "alpha": "alpha",
    "beta": "beta",
    "rc": "rc",
    "pre": "pre",
    "preview": "preview",
    "dev": "dev",
    "snapshot": "snapshot",
    "nightly": "nightly",
    "canary": "canary",
    "milestone": "milestone",
    "ea": "ea",  # early access: openjdk's 24-ea-15
}
_PRE_LETTERS = {"a": "alpha", "b": "beta", "c": "rc", "m": "milestone"}  # with a number only
_VARIANT_SEPARATORS = "-_"
_REFERRER = re.compile(r"sha(?:256|384|512)-[0-9a-f]{64,128}(?:\.[a-z]{1,16})?\Z")


@dataclass(frozen=True)
class TagVersion:
    """What a version-like tag says: its release numbers (digit strings, no leading zeros),
    its pre-release (canonical word, number or ""), its variant text, and whether it is a
    date rather than a version."""

    release: tuple[str, ...]
    pre: tuple[str, str] | None = None
    variant: str = ""
    date: bool = False

    def semver(self) -> str | None:
        """`X.Y.Z[-word.N]` for a semver range (the first three numbers; variants left
        out), or None for a date, which is no semantic version."""
        if self.date:
            return None
        numbers = [*self.release[:3], "0", "0"][:3]
        text = ".".join(numbers)
        if self.pre is not None:
            word, number = self.pre
            text += f"-{word}" + (f".{number}" if number else "")
        return text


def is_referrer_tag(tag: str) -> bool:
    """`sha256-<hex>` (the OCI referrers tag schema's tag for the referrers of an image) and
    cosign's `sha256-<hex>.sig`, `.att`, `.sbom`: tags that hold signatures, attestations and
    SBOMs of another image, not images to run."""
    return len(tag) <= MAX_TAG and _REFERRER.match(tag) is not None


def parse(tag: str) -> TagVersion | None:
    """The version a tag carries, or None for a word (see the module docstring)."""
    if not tag or len(tag) > MAX_TAG or is_referrer_tag(tag):
        return None
    position = 1 if tag[0] in "vV" else 0
    release, position = _numbers(tag, position)
    if not release:
        return None
    pre, position = _pre_release(tag, position)
    if position < len(tag):
        variant = _variant(tag, position)
        if variant is None:
            return None
    else:
        variant = ""
    date = pre is None and _is_date(tag, release, variant)
    if date and variant.startswith("-") and _is_date_text(tag[:10]):
        variant = tag[10:]  # YYYY-MM-DD: the date is the release, what follows the variant
        release = [tag[:4] + tag[5:7] + tag[8:10]]
    return TagVersion(tuple(_plain(n) for n in release), pre, variant, date)


def sort_key(tag: str) -> tuple[Any, ...]:
    """The key that orders tags as versions (sort with reverse=True: highest first).
    Words sort below dates, dates below versions."""
    version = parse(tag)
    if version is None:
        return (0, (), (), (), tag)
    release = list(version.release)
    while len(release) > 1 and release[-1] == "0":
        release.pop()  # 3.20.0 is 3.20
    numbers = tuple((len(n), n) for n in release)
    pre: tuple[Any, ...] = (1,)
    if version.pre is not None:
        word, number = version.pre
        pre = (0, word, (len(number), number))
    variant = (1,) if not version.variant else (0, natural_key(version.variant))
    return (1 if version.date else 2, numbers, pre, variant, tag)


def natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """Text with digit runs compared as numbers (by length, then digits: no conversion,
    so a 5,000-digit run is no error): `r10` > `r9`, `alpine3.20` > `alpine3.9`."""
    key: list[tuple[int, int, str]] = []
    start = 0
    while start < len(text):
        digits = text[start].isascii() and text[start].isdigit()
        end = start
        while end < len(text) and (text[end].isascii() and text[end].isdigit()) == digits:
            end += 1
        part = text[start:end]
        if digits:
            number = part.lstrip("0") or "0"
            key.append((0, len(number), number))
        else:
            key.append((1, 0, part))
        start = end
    return tuple(key)


# --- semver ranges -----------------------------------------------------------------------------


class BadRange(ValueError):
    """A `semver:` range npm's grammar does not read; the message says how."""


def check_range(text: str) -> str:
    """The range as it will be read; BadRange when it cannot be. A comma is read as a space,
    as skopeo's Masterminds/semver reads `>= 1.2, < 3`."""
    if len(text) > MAX_RANGE:
        raise BadRange(f"longer than {MAX_RANGE} characters")
    written = text.replace(",", " ")
    if any(not part.strip() for part in written.split("||")):
        raise BadRange("an empty alternative around '||' (it would match every version)")
    if nodesemver.valid_range(written, False) is None:
        raise BadRange(
            "not a version range: write comparators such as '>=3.18 <4', '^3.18', '~3.18', "
            "'3.x' or '3.12 - 3.13', and '||' between alternatives"
        )
    return written


@functools.lru_cache(maxsize=64)
def _compiled(text: str) -> Any:
    return nodesemver.make_range(check_range(text), False)


def in_range(tag: str, text: str) -> bool:
    """Is the tag a version inside the `semver:` range `text`? Words and dates never are; a
    pre-release only when the range names a pre-release of the same X.Y.Z (npm's rule)."""
    version = parse(tag)
    written = version.semver() if version is not None else None
    if written is None:
        return False
    return bool(nodesemver.satisfies(written, _compiled(text), loose=False))


# --- the one-pass reader -----------------------------------------------------------------------


def _digits_end(tag: str, position: int) -> int:
    end = position
    while end < len(tag) and tag[end].isascii() and tag[end].isdigit():
        end += 1
    return end


def _numbers(tag: str, position: int) -> tuple[list[str], int]:
    """The release: NUMBER(.NUMBER)*, and where it ends."""
    numbers: list[str] = []
    while True:
        end = _digits_end(tag, position)
        if end == position:
            return numbers, position
        numbers.append(tag[position:end])
        if end < len(tag) and tag[end] == "." and _digits_end(tag, end + 1) > end + 1:
            position = end + 1
            continue
        return numbers, end


def _letters_end(tag: str, position: int) -> int:
    end = position
    while end < len(tag) and tag[end].isascii() and tag[end].isalpha():
        end += 1
    return end


def _pre_release(tag: str, position: int) -> tuple[tuple[str, str] | None, int]:
    """A pre-release at `position` (attached, or after one of `-._`), and where it ends;
    (None, position) when there is none."""
    start = position + 1 if position < len(tag) and tag[position] in "-._" else position
    end = _letters_end(tag, start)
    word = tag[start:end].lower()
    canonical = _PRE_WORDS.get(word) or _PRE_LETTERS.get(word)
    if canonical is None or end == start:
        return None, position
    number_start = end + 1 if tag[end : end + 1] in (".", "-") else end  # rc.1, ea-15
    number_end = _digits_end(tag, number_start)
    if number_end == number_start:  # no number: whole words only (rc-slim, not rc.x)
        if word in _PRE_LETTERS or tag[end : end + 1] == ".":
            return None, position
        number_start = number_end = end
    if number_end < len(tag) and tag[number_end] not in _VARIANT_SEPARATORS + ".":
        return None, position  # `-alpine`, `-rcx`: not a pre-release
    return (canonical, _plain(tag[number_start:number_end]) if number_end > end else ""), number_end


def _variant(tag: str, position: int) -> str | None:
    """The variant from `position` (`-slim`, `_7-jdk`, `.Final`), or None when what follows
    the release is no variant (letters stuck to the numbers: `3f2a1bc`)."""
    separator = tag[position]
    rest = tag[position + 1 :]
    if not rest:
        return None
    if separator in _VARIANT_SEPARATORS:
        return tag[position:]
    if separator == "." and rest[0].isascii() and rest[0].isalpha():
        return tag[position:]
    return None


def _is_date(tag: str, release: list[str], variant: str) -> bool:
    if len(release) != 1:
        return False
    if len(release[0]) == 8:
        number = release[0]
        return _plausible(number[:4], number[4:6], number[6:8])
    return len(release[0]) == 4 and _is_date_text(tag[:10])


def _is_date_text(text: str) -> bool:
    """`YYYY-MM-DD`."""
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        return False
    return _plausible(text[:4], text[5:7], text[8:10])


def _plausible(year: str, month: str, day: str) -> bool:
    if not (year + month + day).isascii() or not (year + month + day).isdigit():
        return False
    return 1970 <= int(year) <= 2199 and 1 <= int(month) <= 12 and 1 <= int(day) <= 31


def _plain(number: str) -> str:
    return number.lstrip("0") or "0"
