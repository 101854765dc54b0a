"""YAML files whose images mirror points at ECR in place: Compose files, Kubernetes manifests.

`composefile` and `kubefile` find the image values; this module reads the YAML and writes the
new values back. It reads with PyYAML's composer only: nodes, never constructed objects, so
no tag runs anything and an alias bomb is never expanded (the walks visit only the paths
that hold images). Each scalar keeps where its text is written: PyYAML's node marks start at
an anchor or tag written before a value (`&img 'postgres:16'`), so the loader also records
where each scalar *token* starts, and a value is replaced by exactly the characters of its
token. Everything else in the file (comments, key order, quoting of other values,
indentation, anchors, aliases, merge keys, CRLF line endings, a byte-order mark) stays byte
for byte: there is no re-dump. `rewrite` checks its own work by reading the result again.

Offsets count characters of the `str` given; to keep CRLF, read files with `newline=""`.

Messages are one line, naming the document (when the file has several), the line and the
key path the way Compose and kubectl name them: `document 2, line 14:
spec.template.spec.containers[0].image: expected text, found a mapping`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import yaml

from mirror.errors import shortened
from mirror.yamlfile import one_line, yaml_problem

__all__ = [
    "ImageUse",
    "Parsed",
    "Style",
    "Where",
    "YamlFileError",
    "describe",
    "documents",
    "entries",
    "images",
    "rewrite",
    "sequence",
    "string",
]

MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_KINDS = {
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:timestamp": "a date",
    "tag:yaml.org,2002:binary": "binary data",
}
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
# What a new value may be written as, unquoted, wherever a plain scalar stood: an image
# reference's characters, starting with none of YAML's indicators.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*\Z")
_MESSAGE = 400  # characters of a message at most

Style = Literal["plain", "single", "double", "block"]
_STYLES: dict[str | None, Style] = {None: "plain", "'": "single", '"': "double"}


class YamlFileError(ValueError):
    """A file cannot be read for its images: one line, naming the document, the line and
    the key path. The caller adds the file's name."""

    def __init__(self, message: str) -> None:
        message = one_line(message)
        if len(message) > _MESSAGE:
            message = f"{message[:240]} ...({len(message):,} characters)... {message[-120:]}"
        super().__init__(message)


@dataclass(frozen=True)
class ImageUse:
    """One value in a YAML file that names an image a tool pulls."""

    image: str  # as pulled: "postgres:16" (Compose variables resolved)
    raw: str  # as written, always == text[start:end]: "'postgres:${PG:-16}'"
    start: int  # offset of raw in the text (the scalar's first character, its quote if any)
    end: int  # offset just after raw
    line: int  # 1-based line of raw
    document: int  # 1-based document of the file
    path: str  # "services.db.image", "spec.template.spec.containers[0].image"
    style: Style  # how the value is written: plain, 'single', "double" or a block (| or >)


@dataclass(frozen=True)
class Where:
    """Where a walk is in a file: for messages."""

    document: int  # 1-based
    many: bool  # the file holds several documents: messages name the document
    path: str = ""

    def key(self, name: str) -> Where:
        if not _PLAIN_KEY.match(name):
            step = f'["{shortened(name)}"]'
        else:
            step = f".{name}" if self.path else name
        return Where(self.document, self.many, self.path + step)

    def index(self, number: int) -> Where:
        return Where(self.document, self.many, f"{self.path}[{number}]")

    def error(self, node: yaml.Node, message: str) -> YamlFileError:
        line = f"line {node.start_mark.line + 1}"
        where = f"document {self.document}, {line}" if self.many else line
        return YamlFileError(f"{where}: {self.path or 'the document'}: {message}")


@dataclass(frozen=True)
class Parsed:
    """The documents of a file (None for an empty one) and where each scalar token starts."""

    nodes: list[yaml.Node | None]
    starts: Mapping[int, tuple[int, int]]  # a scalar token's end offset -> its start, line

    def where(self, number: int) -> Where:
        return Where(number, len(self.nodes) > 1)

    def use(self, node: yaml.Node, where: Where, image: str, text: str) -> ImageUse:
        """The ImageUse of a scalar node that holds an image."""
        end = node.end_mark.index
        start, line = self.starts.get(end, (node.start_mark.index, node.start_mark.line))
        style: Style = _STYLES.get(getattr(node, "style", None), "block")
        raw = text[start:end]
        return ImageUse(image, raw, start, end, line + 1, where.document, where.path, style)


class _Loader(yaml.SafeLoader):
    """SafeLoader that notes where each scalar token starts (after any anchor or tag)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.starts: dict[int, tuple[int, int]] = {}

    def get_token(self) -> yaml.Token:
        token: yaml.Token = super().get_token()  # type: ignore[no-untyped-call]
        if isinstance(token, yaml.ScalarToken):
            mark = token.start_mark
            self.starts[token.end_mark.index] = (mark.index, mark.line)
        return token


def documents(text: str) -> Parsed:
    """Every document of `text`, as nodes; YamlFileError for what is not YAML."""
    try:
        loader = _Loader(text)  # refuses control characters at once
    except yaml.YAMLError as error:
        raise YamlFileError(yaml_problem(error)) from None
    try:
        nodes: list[yaml.Node | None] = []
        while loader.check_node():
            node = loader.get_node()
            empty = isinstance(node, yaml.ScalarNode) and node.tag == _NULL and not node.value
            nodes.append(None if empty else node)
        return Parsed(nodes, loader.starts)
    except yaml.YAMLError as error:
        raise YamlFileError(yaml_problem(error)) from None
    except RecursionError:
        raise YamlFileError("YAML nested too deeply") from None
    finally:
        loader.dispose()


def describe(node: yaml.Node) -> str:
    """What a node holds, for a message: "a mapping", "a number (1.5)", "nothing"."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == _NULL:
        return "nothing"
    kind = _KINDS.get(node.tag)
    if kind is not None:
        return f"{kind} ({shortened(str(node.value))}): write it in quotes if it is text"
    if node.tag == _STR:
        return "text"
    return f"a value tagged {shortened(node.tag)}"


def entries(node: yaml.Node, where: Where) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """A mapping's keys (as written) with their key and value nodes, merge keys (`<<: *x`)
    resolved as YAML says: keys written win over merged ones, and among merged mappings the
    first listed wins. A key given twice is refused (Compose and kubectl refuse it too; PyYAML
    would keep the last quietly)."""
    return _entries(node, where, set())


def _entries(
    node: yaml.Node, where: Where, merging: set[int]
) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise where.error(node, f"expected a mapping, found {describe(node)}")
    if id(node) in merging:
        raise where.error(node, "a merge key (<<) that merges the mapping into itself")
    merged: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    written: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key, value in node.value:
        if key.tag == MERGE:
            sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
            for source in reversed(sources):  # the first listed wins: merge it last
                merged.update(_entries(source, where, merging | {id(node)}))
            continue
        if not isinstance(key, yaml.ScalarNode):
            continue  # a complex key: never one that holds an image
        if key.value in written:
            first = written[key.value][0].start_mark.line + 1
            raise where.key(key.value).error(
                key, f"the key appears twice, on lines {first} and {key.start_mark.line + 1}"
            )
        written[key.value] = (key, value)
    return {**merged, **written}


def sequence(node: yaml.Node, where: Where) -> list[yaml.Node]:
    """A list's items; an empty value (`containers:`) is no items."""
    if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise where.error(node, f"expected a list, found {describe(node)}")
    return list(node.value)


def string(node: yaml.Node, where: Where) -> str:
    """A scalar's text, which YAML must read as a string."""
    if not isinstance(node, yaml.ScalarNode) or node.tag != _STR:
        raise where.error(node, f"expected text, found {describe(node)}")
    return str(node.value)


def images(uses: Sequence[ImageUse]) -> list[str]:
    """The images, each once, in order of first use."""
    return list(dict.fromkeys(use.image for use in uses))


def rewrite(text: str, uses: Sequence[ImageUse], mapping: Mapping[str, str]) -> str:
    """`text` with the value of each use whose image is in `mapping` replaced by the mapped
    reference, written in the value's own style (plain, 'single' or "double" quotes; a block
    scalar becomes a double-quoted one). Nothing else changes. A value given once and used
    twice through an alias is replaced once, where it is written. `uses` must come from
    parsing `text`; ValueError if they do not fit it, if a new value cannot be written in
    place, or if the result would not read back as the new values."""
    pieces: list[str] = []
    expected: list[tuple[int, str]] = []  # (offset in the result, value) of each new scalar
    cursor = 0
    for use in sorted({use.start: use for use in uses}.values(), key=lambda use: use.start):
        if use.image not in mapping:
            continue
        if use.start < cursor or text[use.start : use.end] != use.raw:
            raise ValueError(f"line {use.line}: {use.raw!r} is not where it was found")
        new = mapping[use.image]
        written = _written(new, use)
        pieces.append(text[cursor : use.start])
        expected.append((sum(map(len, pieces)), new))
        pieces.append(written)
        cursor = use.end
    pieces.append(text[cursor:])
    result = "".join(pieces)
    _check(result, expected)
    return result


def _written(new: str, use: ImageUse) -> str:
    """`new` as YAML text in place of `use`'s value."""
    if not new or not new.isprintable():
        raise ValueError(f"cannot write {new!r} as an image reference")
    if use.style == "plain":
        if not _PLAIN_VALUE.match(new):
            raise ValueError(
                f"line {use.line}: cannot write {new!r} unquoted in place of {use.raw}"
            )
        return new
    if use.style == "single":
        return "'" + new.replace("'", "''") + "'"
    double = '"' + new.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if use.style == "block":  # `>-` and its lines: keep the line breaks that end it
        return double + use.raw[len(use.raw.rstrip(" \t\r\n")) :]
    return double


def _check(result: str, expected: Sequence[tuple[int, str]]) -> None:
    """Read `result` again: each new value must be a string scalar starting where it was
    written. Cheap insurance against any corner of YAML the writer did not foresee."""
    if not expected:
        return
    try:
        parsed = documents(result)
    except YamlFileError as error:
        raise ValueError(f"the rewritten file is not YAML: {error}") from None
    found = {
        parsed.starts.get(node.end_mark.index, (node.start_mark.index, 0))[0]: node
        for root in parsed.nodes
        if root is not None
        for node in _scalars(root)
    }
    for offset, value in expected:
        node = found.get(offset)
        if node is None or node.tag != _STR or node.value != value:
            raise ValueError(f"{value!r} would not read back as written")


def _scalars(root: yaml.Node) -> Iterator[yaml.ScalarNode]:
    """Every scalar node under `root`, each once (aliases make a graph)."""
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            yield node
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(item for pair in node.value for item in pair)
