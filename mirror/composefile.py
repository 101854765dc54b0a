"""Every image a Docker Compose file pulls, and how to point each one at ECR.

`parse` reads a Compose file as `docker compose` (compose-spec/compose-go, `loader/`) reads
it, as far as the images it pulls need, and returns one `ImageUse` per service that pulls one:

- each service under `services:` with an `image:` and no `build:`. A service with `build:`
  builds its image, and its `image:` names what it builds (Compose tags the result with it):
  nothing to mirror; nor is another service's `image:` that equals it once interpolated
  (Compose builds it rather than pulls it: isServiceImageToBuild), so a value a building
  service shares through an anchor is never rewritten. A service with `pull_policy: never`
  or `pull_policy: build` pulls nothing either. Services of every profile count
  (`profiles:` only chooses which start; a CI job may start any of them);
- the `source` of each long-form volume with `type: image` (`services.*.volumes[]`): an
  image Compose pulls and mounts, whether or not the service builds;
- YAML merge keys (`<<: *default`, `<<: [*a, *b]`) and anchors, as YAML defines them: a key
  written in the service wins over a merged one, and the first merged mapping over later
  ones. An image given once and used by several services through an alias is one value;
- `extends:` (`extends: base` or `{service: base}`) of a service of the same file: the
  service inherits `build:` from its base (so `image:` then names a build), a cycle is an
  error. A service that extends a service of *another* file (`{file: ..., service: ...}`)
  and names its own `image:` without `build:` is an error: whether that image is pulled or
  built depends on the other file, which `parse` does not read (each file is read on its
  own; run it on the other file too). `include:` is not followed either; `parse`'s `notes`
  name both (an include, and such a service with no image of its own);
- several YAML documents in one file (`---`), which Compose merges in order: a later
  document's `image:` replaces an earlier one's, and a service that any of them gives
  `build:` builds. Compose's `!reset` tag removes a key, `!override` replaces it;
- variables in `image:`, as Compose interpolates them: `$VAR`, `${VAR}`, `${VAR:-default}`,
  `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+replacement}`,
  `${VAR+replacement}`, nested defaults, `$$` for a `$`. Values come from `variables`: what
  `docker compose` would use, the environment over the `.env` file (`variables()` builds
  that mapping; `dotenv()` reads a `.env` file).

Where Compose would quietly use an empty string (a variable with no value and no default;
it only warns "The "TAG" variable is not set. Defaulting to a blank string."), `parse` stops
with a ComposeError instead, as `dockerfile.parse` does for an ARG without a value: mirroring
a wrong image is worse than asking. The message names the variable and how to give it.

Not followed, as they are not images a service pulls or come from outside the file: the
images a `build:` pulls (its Dockerfile: use `ensure --dockerfile` on it; its
`additional_contexts: docker-image://...`), `include:`d files, and other files given with
`docker compose -f a.yaml -f b.yaml` (run `parse` on each).

`rewrite` (`yamlnodes.rewrite`) changes only those `image:` values, keeping every other
byte: comments, key order, quoting, indentation, anchors, CRLF. An image written with
variables is replaced by the mapped reference, so the file no longer depends on them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml

from mirror.errors import shortened
from mirror.yamlnodes import (
    ImageUse,
    Parsed,
    Where,
    YamlFileError,
    documents,
    entries,
    images,
    rewrite,
    sequence,
    string,
)

__all__ = [
    "MAX_SIZE",
    "ComposeError",
    "ImageUse",
    "dotenv",
    "images",
    "parse",
    "rewrite",
    "variables",
]

MAX_SIZE = 1 << 20  # bytes of a Compose file or .env file mirror reads (real ones: a few kB)
_RESET = "!reset"  # Compose's tag that removes a key an earlier document set
_OVERRIDE = "!override"  # Compose's tag that replaces rather than merges: a scalar is replaced
_NAME = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")  # compose-go: (?i)[_a-z][_a-z0-9]*
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class ComposeError(YamlFileError):
    """The Compose file (or .env file) cannot be read for its images: one line naming the
    document, the line and the key path (`services.web.image`)."""


@dataclass
class _Service:
    """A service as the documents of the file, merged in order, define it."""

    where: Where
    node: yaml.Node
    image: tuple[yaml.Node, Where] | None = None
    build: bool = False
    pull_policy: tuple[yaml.Node, Where] | None = None
    image_volumes: list[tuple[yaml.Node, Where]] = field(default_factory=list)
    extends: tuple[str, bool, yaml.Node, Where] | None = None  # base, in another file?, at


def parse(
    text: str, variables: Mapping[str, str] | None = None, *, notes: list[str] | None = None
) -> list[ImageUse]:
    """The image of each service that pulls one, in the order services first appear.

    `variables` are what `docker compose` would interpolate with (see `variables()`).
    `notes` receives a line for each part of the file whose images come from another file
    that is not read (`include:`, a service extending another file's service with no image
    of its own): a person should run ensure on that file too.
    Raises ComposeError naming the document, line and key for what Compose would refuse,
    for images that cannot be known, and for what is not a Compose file.
    """
    known = dict(variables or {})
    said = notes if notes is not None else []
    try:
        parsed = documents(text)
        services = _services(parsed, said)
        said += _from_other_files(services)
        built = _built_images(services, known)
        uses = []
        for name, service in services.items():
            pulled = [service.image] if _pulls_its_image(name, services, known) else []
            for node, where in [*filter(None, pulled), *service.image_volumes]:
                image = _image(node, where, known)
                if image not in built:  # a service builds it: Compose's isServiceImageToBuild
                    uses.append(parsed.use(node, where, image, text))
    except YamlFileError as error:
        raise ComposeError(str(error)) from None
    return uses


def _pulls_its_image(
    name: str, services: Mapping[str, _Service], variables: Mapping[str, str]
) -> bool:
    service = services[name]
    if service.image is None or _not_pulled(service, variables):
        return False
    return not _builds(name, services, [])


def _image_volumes(node: yaml.Node, where: Where) -> list[tuple[yaml.Node, Where]]:
    """The `source` of each long-form `type: image` volume: an image Compose pulls and mounts."""
    found = []
    for index, item in enumerate(sequence(node, where)):
        if not isinstance(item, yaml.MappingNode):
            continue  # the short form "src:dst" mounts no image
        at = where.index(index)
        keys = entries(item, at)
        kind = keys.get("type")
        if kind is None or string(kind[1], at.key("type")) != "image" or "source" not in keys:
            continue
        found.append((keys["source"][1], at.key("source")))
    return found


def _built_images(services: Mapping[str, _Service], variables: Mapping[str, str]) -> set[str]:
    """The images services build (their `image:` names what they build). Compose does not
    pull a service's image that another service builds (compose's isServiceImageToBuild), and
    a value a building service shares through an anchor must stay as written."""
    built = set()
    for name, service in services.items():
        if service.image is None or not _builds(name, services, []):
            continue
        node, where = service.image
        try:
            built.add(_image(node, where, variables))
        except YamlFileError:  # its own line says so when it is asked for
            continue
    return built


def _not_pulled(service: _Service, variables: Mapping[str, str]) -> bool:
    """`pull_policy: never` (the image must be there already) or `build` (always built)."""
    if service.pull_policy is None:
        return False
    node, where = service.pull_policy
    try:
        policy = interpolate(string(node, where), variables)
    except _Unresolved as error:
        raise where.error(node, str(error)) from None
    return policy.strip().lower() in ("never", "build")


def _services(parsed: Parsed, notes: list[str]) -> dict[str, _Service]:
    services: dict[str, _Service] = {}
    found = False
    for number, root in enumerate(parsed.nodes, 1):
        if root is None:
            continue
        where = parsed.where(number)
        top = entries(root, where)
        if "include" in top:
            line = top["include"][1].start_mark.line + 1
            notes.append(
                f"line {line}: include: is not followed: the images of the files it includes "
                "are not mirrored; run ensure --compose on each of them too"
            )
        if "services" not in top:
            found = found or "include" in top
            continue
        found = True
        services_where = where.key("services")
        for name, (_, node) in entries(top["services"][1], services_where).items():
            _merge(services, name, node, services_where.key(name))
    if not found:
        raise YamlFileError("no services: key in any document: not a Compose file")
    return services


def _from_other_files(services: Mapping[str, _Service]) -> list[str]:
    """A line for each service that extends a service of another file and names no image of
    its own: what it pulls, if anything, is in that file."""
    notes = []
    for name, service in services.items():
        if service.extends is None or service.image is not None or service.build:
            continue
        base, elsewhere, node, _ = service.extends
        if elsewhere:
            notes.append(
                f"line {node.start_mark.line + 1}: service {name} extends {base} of another "
                "file, which mirror does not read: the image it pulls, if any, is named there; "
                "run ensure --compose on that file too"
            )
    return notes


def _merge(services: dict[str, _Service], name: str, node: yaml.Node, where: Where) -> None:
    """Take in one document's definition of a service, over what earlier ones said."""
    if node.tag == _RESET:
        services.pop(name, None)
        return
    if node.tag == _OVERRIDE:  # the whole service replaced: nothing earlier stays (build: too)
        services.pop(name, None)
    service = services.setdefault(name, _Service(where, node))
    keys = entries(node, where)
    if "image" in keys:
        value = keys["image"][1]
        service.image = None if value.tag == _RESET else (value, where.key("image"))
    if "build" in keys:
        service.build = keys["build"][1].tag != _RESET
    if "volumes" in keys:
        value = keys["volumes"][1]
        merged = [] if value.tag in (_RESET, _OVERRIDE) else service.image_volumes
        volumes = [] if value.tag == _RESET else _image_volumes(value, where.key("volumes"))
        service.image_volumes = merged + volumes
    if "pull_policy" in keys:
        value = keys["pull_policy"][1]
        service.pull_policy = None if value.tag == _RESET else (value, where.key("pull_policy"))
    if "extends" in keys:
        service.extends = _extends(keys["extends"][1], where.key("extends"))


def _extends(node: yaml.Node, where: Where) -> tuple[str, bool, yaml.Node, Where]:
    """`extends: base` or `extends: {service: base, file: other.yaml}`."""
    if isinstance(node, yaml.ScalarNode):
        return string(node, where), False, node, where
    keys = entries(node, where)
    if "service" not in keys:
        raise where.error(node, "no service: key (the service to extend)")
    base = string(keys["service"][1], where.key("service"))
    return base, "file" in keys, node, where


def _builds(name: str, services: Mapping[str, _Service], chain: list[str]) -> bool:
    """Does the service build its image, itself or through what it extends?"""
    service = services[name]
    if service.build:
        return True
    if service.extends is None:
        return False
    base, elsewhere, node, where = service.extends
    if elsewhere:  # the service asked about has an image: of its own, or one it extends has
        raise where.error(
            node,
            f"service {name} extends {base} of another file, which mirror does not read: "
            "whether its image: is pulled or built depends on that file; give the service "
            "its own build: (if it builds) or mirror the image by name",
        )
    if base == name or base in chain:
        raise where.error(node, f"extends makes a cycle: {' -> '.join([*chain, name, base])}")
    if base not in services:
        raise where.error(node, f"extends {base}, which is no service of this file")
    return _builds(base, services, [*chain, name])


def _image(node: yaml.Node, where: Where, variables: Mapping[str, str]) -> str:
    """The image a service pulls: its `image:` text with variables filled in."""
    if isinstance(node, yaml.ScalarNode) and node.tag == _OVERRIDE:
        written = str(node.value)
    else:
        written = string(node, where)
    try:
        image = interpolate(written, variables)
    except _Unresolved as error:
        raise where.error(node, str(error)) from None
    except RecursionError:
        raise where.error(node, "variables nested too deeply") from None
    if not image.strip():
        raise where.error(node, f"{shortened(written)!r} is empty once its variables are filled in")
    return image


# --- Variables ---------------------------------------------------------------------------------


class _Unresolved(Exception):
    """A variable reference cannot be filled in."""


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """`value` with Compose's variable references filled in from `variables`; _Unresolved
    for a variable without a value or default, `${VAR:?message}`, and broken references."""
    out: list[str] = []
    at = 0
    while (dollar := value.find("$", at)) >= 0:
        out.append(value[at:dollar])
        after = value[dollar + 1 : dollar + 2]
        name = _NAME.match(value, dollar + 1)
        if after == "$":  # $$ is a $
            out.append("$")
            at = dollar + 2
        elif after == "{":
            piece, at = _braced(value, dollar + 1, variables)
            out.append(piece)
        elif name:
            out.append(_require(name.group(), variables))
            at = name.end()
        else:  # a $ before anything else stays, as in Compose
            out.append("$")
            at = dollar + 1
    out.append(value[at:])
    return "".join(out)


def _braced(value: str, brace: int, variables: Mapping[str, str]) -> tuple[str, int]:
    """`${...}` starting at the brace: its value, and where the text goes on after it."""
    close = _closing(value, brace)
    if close < 0:
        raise _Unresolved(f"invalid variable reference in {shortened(value)!r}: no closing }}")
    inner = value[brace + 1 : close]
    name = _NAME.match(inner)
    if name is None:
        raise _Unresolved(f"invalid variable reference ${{{shortened(inner)}}}")
    rest = inner[name.end() :]
    if not rest:
        return _require(name.group(), variables), close + 1
    operator = next((o for o in _OPERATORS if rest.startswith(o)), None)
    if operator is None:
        raise _Unresolved(f"invalid variable reference ${{{shortened(inner)}}}")
    argument = rest[len(operator) :]
    return _substituted(name.group(), operator, argument, variables), close + 1


def _substituted(name: str, operator: str, argument: str, variables: Mapping[str, str]) -> str:
    current = variables.get(name)
    usable = current is not None and (bool(current) or not operator.startswith(":"))
    if operator.endswith("-"):
        return current if usable and current is not None else interpolate(argument, variables)
    if operator.endswith("+"):
        return interpolate(argument, variables) if usable else current or ""
    if not usable or current is None:  # ?: Compose's own message
        reason = interpolate(argument, variables)
        raise _Unresolved(
            f"required variable {name} is missing a value" + (f": {reason}" if reason else "")
        )
    return current


def _closing(value: str, brace: int) -> int:
    """Where the `}` closing the `{` at `brace` is, nested braces counted; -1 if none."""
    depth = 0
    for at in range(brace, len(value)):
        if value[at] == "{":
            depth += 1
        elif value[at] == "}":
            depth -= 1
            if depth == 0:
                return at
    return -1


def _require(name: str, variables: Mapping[str, str]) -> str:
    value = variables.get(name)
    if value is None:
        raise _Unresolved(
            f"variable {name} is not set (in the environment or .env) and has no default "
            f"(docker compose would put an empty string in its place): set {name}, or write "
            f"${{{name}:-default}}"
        )
    return value


def variables(environment: Mapping[str, str], dotenv_text: str | None = None) -> dict[str, str]:
    """What `docker compose` interpolates a file with: the `.env` file's values (given as
    text, None when there is none), and the environment's over them (Compose's precedence:
    "values set in the shell environment override those set in the .env file")."""
    values = dotenv(dotenv_text, environment) if dotenv_text is not None else {}
    return {**values, **environment}


# .env lines: `[export ]KEY=VALUE`, `KEY: VALUE` or `KEY` alone (taken from the environment).
_ENV_LINE = re.compile(r"(?:export[ \t]+)?([\w.\[\]-]+)[ \t]*(?:([=:])[ \t]*(.*))?\Z")
# Escapes in double quotes, as compose-go's dotenv expands them.
_ESCAPE = re.compile(r"\\(?:([abfnrtv\"\\])|(\$)|0([0-7]{0,3}))")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def dotenv(text: str, environment: Mapping[str, str]) -> dict[str, str]:
    """The variables a `.env` file sets, read as compose-go's `dotenv` reads it: blank lines
    and `#` comments, `KEY=VALUE` (`export ` before it, `:` for `=`, spaces around it),
    unquoted values (a ` #` starts a comment), 'single-quoted' values (as written),
    "double-quoted" values (backslash escapes), variables in unquoted and double-quoted
    values (from the environment first, then the lines above), and `KEY` alone (the
    environment's value, if any). A quoted value over several lines, which Compose allows,
    is refused, as is a variable without a value: ComposeError naming the line."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        found = _ENV_LINE.match(stripped)
        if found is None:
            raise ComposeError(f".env line {number}: not KEY=VALUE: {shortened(stripped)!r}")
        key, separator, value = found.groups()
        if separator is None:
            if key in environment:
                values[key] = environment[key]
            continue
        lookup = {**values, **environment}
        try:
            values[key] = _env_value(value, lookup)
        except _Unresolved as error:
            raise ComposeError(f".env line {number}: {key}: {error}") from None
    return values


def _env_value(value: str, lookup: Mapping[str, str]) -> str:
    quote = value[:1]
    if quote not in ("'", '"'):
        return interpolate(value.split(" #", 1)[0].rstrip(), lookup)
    close = _closing_quote(value, quote)
    if close < 0:
        raise _Unresolved(f"a {quote} opens the value and none closes it on this line")
    rest = value[close + 1 :].strip()
    if rest and not rest.startswith("#"):
        raise _Unresolved(f"text after the closing {quote}: {shortened(rest)!r}")
    inner = value[1:close]
    if quote == "'":
        return inner.replace("\\'", "'")
    return interpolate(_ESCAPE.sub(_unescape, inner), lookup)


def _closing_quote(value: str, quote: str) -> int:
    at = 1
    while at < len(value):
        if value[at] == "\\":
            at += 2
            continue
        if value[at] == quote:
            return at
        at += 1
    return -1


def _unescape(found: re.Match[str]) -> str:
    plain, dollar, octal = found.groups()
    if dollar:
        return "$$"  # a literal $: interpolation then reads $$ as one
    if octal is not None:
        return chr(int(octal or "0", 8))
    return _ESCAPES.get(plain, plain)
