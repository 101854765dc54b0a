"""Reading the config's YAML as users write it, and naming its values in messages.

PyYAML's SafeLoader follows YAML 1.1, where an unquoted `3.10` is the number 3.1, `2024-01-15`
a date, `yes` and `on` booleans; an impossible date (`2024-13-45`) or a number of 5,000 digits
raises ValueError from inside PyYAML, and a second `ecr:` silently replaces the first. `load`
reads with a SafeLoader subclass that keeps the text of every number (`WrittenInt`,
`WrittenFloat`), keeps dates and unreadable numbers as text (`Unread`: no key takes a date),
refuses duplicate keys with both line numbers, and lets no exception but ConfigError out.
`kind` and `not_a_string` say in a message what YAML read and how to write it instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from mirror.errors import ConfigError, shortened

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
_TYPE_NAMES = {type(None): "nothing", list: "a list", dict: "a mapping"}


class WrittenInt(int):
    """An int, with the text YAML read it from (`0x1F`, `1_000`, `1:30` and `012` are ints)."""

    text: str

    def __new__(cls, value: int, text: str) -> WrittenInt:
        number = super().__new__(cls, value)
        number.text = text
        return number


class WrittenFloat(float):
    """A float, with the text YAML read it from (`3.10` is 3.1)."""

    text: str

    def __new__(cls, value: float, text: str) -> WrittenFloat:
        number = super().__new__(cls, value)
        number.text = text
        return number


@dataclass(frozen=True)
class Unread:
    """A scalar YAML takes for a date, or a number, boolean... that has no Python value (an
    impossible date, a 5,000-digit number, `!!bool maybe`): kept as the text written."""

    text: str
    kind: str  # "a date", "a number", "a boolean"

    def __str__(self) -> str:
        return self.text


class Loader(yaml.SafeLoader):
    """SafeLoader whose scalars never raise while being built (see the module's docstring)."""


def _int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> WrittenInt | Unread:
    text = loader.construct_scalar(node)
    try:
        value = yaml.SafeLoader.construct_yaml_int(loader, node)
        str(value)  # a 0x number beyond Python's int-to-text limit cannot be shown: unreadable
    except ValueError:
        return Unread(text, "a number")
    return WrittenInt(value, text)


def _float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> WrittenFloat | Unread:
    text = loader.construct_scalar(node)
    try:
        return WrittenFloat(yaml.SafeLoader.construct_yaml_float(loader, node), text)
    except ValueError:  # `!!float abc`
        return Unread(text, "a number")


def _bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool | Unread:
    text = loader.construct_scalar(node)
    value = loader.bool_values.get(text.lower())
    return Unread(text, "a boolean") if value is None else value  # None: `!!bool maybe`


def _timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Unread:
    # No key takes a date; building one fails for 2024-13-45 and `!!timestamp x`.
    return Unread(loader.construct_scalar(node), "a date")


Loader.add_constructor(_INT, _int)
Loader.add_constructor(_FLOAT, _float)
Loader.add_constructor(_BOOL, _bool)
Loader.add_constructor(_TIMESTAMP, _timestamp)


def load(text: str) -> Any:
    """The YAML document in `text` (None when it holds none); ConfigError for anything wrong,
    with a line number where YAML gives one."""
    try:
        loader = Loader(text)  # refuses control characters at once
    except yaml.YAMLError as error:
        raise ConfigError(yaml_problem(error)) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_duplicate_keys(loader, node)
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        raise ConfigError(yaml_problem(error)) from None
    except RecursionError:
        raise ConfigError("YAML nested too deeply") from None
    finally:
        loader.dispose()


def _refuse_duplicate_keys(loader: Loader, root: yaml.Node) -> None:
    """A key given twice in one mapping: YAML keeps the last silently, mirror refuses. Keys
    compare as the values they become (`1` and `0x1` are one key, as in the dict)."""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    seen: set[int] = set()  # aliases make a graph: visit each node once
    while stack:
        node, where = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{where}[{index}]") for index, item in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            lines: dict[Any, int] = {}
            for key, value in node.value:
                path = _key_path(where, key)
                if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE:
                    name, line = loader.construct_object(key), key.start_mark.line + 1
                    if name in lines:
                        both = (
                            f"on line {line}"
                            if lines[name] == line
                            else f"on lines {lines[name]} and {line}"
                        )
                        raise ConfigError(f"{path}: the key appears twice, {both}")
                    lines[name] = line
                stack.append((value, path))


def _key_path(where: str, key: yaml.Node) -> str:
    """`images[0].tags`, `source.credentials["ghcr.io"]`: as config's messages name keys."""
    text = key.value if isinstance(key, yaml.ScalarNode) else "?"
    if not _PLAIN_KEY.match(text):
        return f'{where}["{shortened(text)}"]'
    return f"{where}.{text}" if where else text


def yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.reader.ReaderError):
        character = chr(error.character) if isinstance(error.character, int) else "?"
        return f"character {character!r} at position {error.position}: not allowed in YAML"
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or "not valid YAML"
    if mark is not None:
        where = f"line {mark.line + 1}, column {mark.column + 1}: YAML syntax error: {problem}"
        return where + _quote_hint(mark)
    return f"YAML syntax error: {problem}"


# `key: >=3.18 <4`: a value starting with one of YAML's indicators ('>' and '|' begin block
# text, '*' an alias, '@' and '`' are reserved), which YAML cannot read as plain text.
_INDICATOR_VALUE = re.compile(r"([\w.-]+):[ \t]+([>|*@`][^,}\n#]*)")


def _quote_hint(mark: Any) -> str:
    """How to write the value of the line YAML stopped on, when quoting it is the fix."""
    buffer = getattr(mark, "buffer", None)
    if not isinstance(buffer, str):
        return ""
    lines = buffer.splitlines()
    line = lines[mark.line] if 0 <= mark.line < len(lines) else ""
    found = _INDICATOR_VALUE.search(line[:1000])
    if found is None:
        return ""
    key, value = found.group(1), found.group(2).strip()
    return f' (a value starting with {value[0]!r} must be in quotes: {key}: "{shortened(value)}")'


# --- naming values in messages -------------------------------------------------------------------


def kind(data: Any) -> str:
    """How a wrong value is named in a message: as written when YAML kept the text (`3.10 (a
    number)`, `2024-13-45 (a date)`), else its value (cut when long), or else its type."""
    if isinstance(data, (WrittenInt, WrittenFloat)):
        return f"{shortened(data.text)} (a number)"
    if isinstance(data, Unread):
        return f"{shortened(data.text)} ({data.kind})"
    if isinstance(data, str):
        return repr(shortened(data))
    if isinstance(data, bool):
        return f"{str(data).lower()} (a boolean)"
    if isinstance(data, (int, float)):
        return f"{data!r} (a number)"
    return _TYPE_NAMES.get(type(data), type(data).__name__)


def type_name(data: Any) -> str:
    """What kind of value YAML read, without the value ("a number"): for keys whose value may
    be a secret."""
    if isinstance(data, Unread):
        return data.kind
    if isinstance(data, bool):
        return "a boolean"
    if isinstance(data, (int, float)):
        return "a number"
    if isinstance(data, str):
        return "text"
    return _TYPE_NAMES.get(type(data), f"a {type(data).__name__}")


def not_a_string(data: Any) -> str | None:
    """Where a string is wanted and YAML read something else from plain text: what it read
    and how to write the text instead (in quotes). None for other values."""
    if isinstance(data, (WrittenInt, WrittenFloat, Unread)):
        text = shortened(data.text)
        what = "a number" if not isinstance(data, Unread) else data.kind
        if isinstance(data, WrittenFloat) and repr(float(data)) != data.text:
            what += f" ({float(data)!r})"
        elif isinstance(data, WrittenInt) and str(int(data)) != data.text:
            what += f" ({int(data)})"
        quoted = f': "{text}"' if text == data.text else ""
        return f"YAML read {text} as {what}, not a string: write it in quotes{quoted}"
    if isinstance(data, bool):
        return (
            f"YAML read a boolean ({str(data).lower()}) here, not a string: write it in quotes "
            "(yes, no, on and off are booleans too)"
        )
    return None


def one_line(text: str) -> str:
    """`text` with newlines and other invisible characters escaped (`\\n`, `\\x00`): a
    message is one line whatever a key or value holds."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
