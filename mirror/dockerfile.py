"""Every image a Dockerfile makes BuildKit pull, and how to point each one at ECR.

`parse` reads the text the way BuildKit does (moby/buildkit, frontend/dockerfile/), as far as
the images it pulls need, and returns one `ImageUse` per place that pulls an image:

- `syntax`: the `# syntax=IMAGE` parser directive, found as `parser.DetectSyntax` finds it: after
  an optional byte-order mark and an optional `#!` first line, in the run of directive lines at
  the very top, each starting with `#` in its first column (`  # syntax=x` is not one) and
  naming `syntax`, `escape` or `check` in any case, with blanks around `=` allowed; the first
  other line (a comment, a blank line, an instruction, an unknown or repeated key) ends the run,
  and a `# syntax=` after it is an ordinary comment. The image is the value up to its first
  space. Failing `#`, BuildKit tries the same at the top with `//` in place of `#`, then the
  whole file as a JSON object with a "syntax" key; the `//` form is followed, the JSON form is
  an error (it is not a Dockerfile). `frontend/dockerfile/builder/build.go` then pulls that
  image and hands it the build;
- `from`: `FROM` images, expanded with the ARGs before the first `FROM` (below); not `scratch`
  and not the name of an earlier stage;
- `copy`: `COPY --from=IMAGE`. As in `dockerfile2llb/convert.go` (`toCommand`), a value is a
  stage if any stage of the file has that name (case-insensitive; a stage defined later is
  still a stage, and the build then fails), else a stage index if it is a number, else an
  image. BuildKit does not expand variables there: `--from=$X` (and quotes or escapes that
  would change the word) fails the build, and `parse` says so. `ADD` has no `--from`;
- `mount`: `RUN --mount=...,from=IMAGE,...`. The `--mount` value is CSV (`go-csvvalue`: `"`
  quotes a field, `""` is a quote in it, a bare `"` is an error); keys are case-insensitive, the
  last `from=` wins. BuildKit resolves the `from` of every mount whatever its `type` (bind by
  default, cache, tmpfs, ssh: `convert_runmount.go`, `detectRunMount`), as a stage name else an
  image: there is no stage index here, so `from=0` is an error in `parse` rather than an image
  named "0". A `$` in `from` (except as its last character) fails the build
  (`commands_runmount.go`, `parseMount`), and `parse` says so. `source`/`src`,
  `target`/`dst`/`destination` and the other keys do not change which image is pulled.

The flags of `FROM`, `COPY` and `RUN` are read as BuildKit's `extractBuilderFlags` reads them:
words starting with `--` at the start of the arguments, quotes (`'` or `"`) removed and the
escape character applied, `--` ending them. `--from` twice, or `--from`/`--mount` without `=`,
are errors, as in BuildKit.

`ONBUILD COPY --from=...` and `ONBUILD RUN --mount=...,from=...` run in a build whose stage is
`FROM` the stage holding them, so they are images of this build when a later stage of this
file is `FROM` that stage (`resolveStages` runs the triggers of a stage's base stage); they are
reported there, resolved as above. Triggers of a stage nothing here builds on run only in
other builds, where a `--from` name means a stage of *that* Dockerfile (BuildKit's
documentation says so): they are not reported, since what they name cannot be known here.

The text is read as BuildKit's parser reads it:

- parser directives at the top of the file: `# escape=` followed by a backtick makes the
  backtick the escape and line-continuation character (Windows images). Here leading blanks
  are allowed (`parser.Parse` strips them, `DetectSyntax` does not), and a `#!` first line
  ends the directives;
- line continuations (the escape character at the end of a line, trailing spaces allowed);
  comment lines and blank lines inside a continued instruction are dropped, as BuildKit does;
- comments: lines whose first non-blank character is `#` (elsewhere `#` is plain text, so
  `FROM ruby AS x # note` is an error, as in Docker); CRLF line endings; a byte-order mark;
- instructions in any case (`from`, `FROM`, `Arg`);
- here-documents (`RUN <<EOF` ... `EOF`, also on COPY and ADD), whose bodies are skipped, so a
  Python `from x import y` or a `COPY --from=x` inside one is not taken for an instruction;
- `ARG` lines before the first FROM (the only ones FROM lines can use), several per line, with
  quoted values; a default may use the ARGs declared before it. A caller-supplied build arg wins
  over the default, and is used as is (not expanded), as with `docker build --build-arg`;
- in FROM images: `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME-word}`, `${NAME:+word}`,
  `${NAME+word}`, `${NAME:?message}`, `${NAME?message}`, `${NAME#glob}`, `${NAME##glob}`,
  `${NAME%glob}`, `${NAME%%glob}`, quotes, and the escape character.

Where Docker would quietly use an empty string, `parse` stops with a `DockerfileError` instead,
because mirroring a wrong image is worse than asking: a bare `$NAME` (or `${NAME#...}`) whose
ARG has no default and no build arg, or that no ARG before the first FROM declares, or that is
one of the platform ARGs the builder fills in (`TARGETARCH`...) when the caller did not pass it.
The caller's build args name only ARGs the Dockerfile declares before the first FROM, as with
Docker (others are ignored), except the builder's platform ARGs, which need no declaration.
`${NAME/pattern/replacement}` is not supported (a `DockerfileError` says so).

Not followed, because they come from the build command rather than the file: the
`BUILDKIT_SYNTAX` build arg (it replaces the syntax directive), `--build-context NAME=...`
(it replaces an image or a stage), and `ONBUILD` triggers inside base images.

Offsets (`ImageUse.start`, `ImageUse.end`) count characters of the `str` given to `parse`. To
keep CRLF line endings when rewriting a file, read it with `newline=""`
(`path.read_text(newline="")` is Python 3.13+; `open(path, newline="")` works everywhere):
the default universal-newline reading turns CRLF into LF.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BUILDER_ARGS",
    "DockerfileError",
    "ImageUse",
    "Kind",
    "build_args",
    "images",
    "not_by_build_args",
    "parse",
    "rewrite",
]

# The platform ARGs BuildKit defines in the global scope: usable in FROM without an ARG line.
BUILDER_ARGS = frozenset(
    {
        "BUILDPLATFORM",
        "BUILDOS",
        "BUILDARCH",
        "BUILDVARIANT",
        "TARGETPLATFORM",
        "TARGETOS",
        "TARGETARCH",
        "TARGETVARIANT",
    }
)

# The build arg BuildKit takes, when given, as the frontend image instead of the syntax directive.
_SYNTAX_ARG = "BUILDKIT_SYNTAX"

# BuildKit's directive regexp is ([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$ (Go's \s is
# [\t\n\f\r ]); `_directive` reads the same by hand, in time linear in the line.
_DIRECTIVE_KEY = re.compile(r"[a-zA-Z][a-zA-Z0-9]*")
_GO_SPACE = "\t\n\f\r "
MAX_SIZE = 1 << 20  # bytes of a Dockerfile mirror reads (real ones: a few kB, rarely 100 kB)
MAX_VALUE = 4096  # characters an expanded ARG value or FROM word may have (an image: ~300)
MAX_EXPANDED = 16 << 20  # characters all ARG expansions of one file may produce together
MAX_QUOTES = 64  # quote characters next to an image that parse will look through
_MESSAGE = 400  # characters of a message; longer ones keep their start and end
_DIRECTIVES = frozenset({"escape", "syntax", "check"})
_TOKEN = re.compile(r"[^\t\v\f\r ]+")  # BuildKit splits instruction arguments on [\t\v\f\r ]+
_SPACE = "\t\n\v\f\r \x85\xa0"  # Go's unicode.IsSpace, which extractBuilderFlags splits flags on
_STAGE_NAME = re.compile(r"[a-z][a-z0-9._-]*\Z")
_STAGE_INDEX = re.compile(r"[+-]?[0-9]+\Z")  # what Go's strconv.Atoi reads as a number
_WHOLE_ARG = re.compile(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})\Z")
# What BuildKit's shell lexer would change in a word even with no variables set.
_SHELL_SPECIAL = re.compile(r"['\"]|\$[{@*#?$!\w-]")
_HEREDOC = re.compile(r"[0-9]*<<(-?)([^<]+)\Z")
_HEREDOC_COMMANDS = frozenset({"run", "copy", "add"})
_REFERENCE_CHARS = re.compile(r"[A-Za-z0-9._:/@+-]+\Z")
_ALIAS_STAGE = "FROM $NAME AS name, with ARG NAME before the first FROM"
_UNQUOTABLE = "its quotes leave no place to write another image; quote the whole image or nothing"

Kind = Literal["syntax", "from", "copy", "mount"]


class DockerfileError(ValueError):
    """The Dockerfile cannot be read; the message starts with the 1-based line number. What
    it quotes from the file is cut: a message is at most a few hundred characters."""

    def __init__(self, message: str) -> None:
        super().__init__(_fit(message))


def _fit(message: str) -> str:
    if len(message) <= _MESSAGE:
        return message
    return f"{message[:240]} ...({len(message):,} characters)... {message[-120:]}"


@dataclass(frozen=True)
class ImageUse:
    """One place in a Dockerfile that makes the build pull an image."""

    kind: Kind  # "syntax" directive, "from" image, "copy" --from, "mount" from=
    line: int  # 1-based line of the directive or instruction (of the ONBUILD, for its trigger)
    image: str  # as the build pulls it: "ruby:3.3-slim", with FROM's build args expanded
    raw: str  # as written, always == text[start:end]: "$BASE", "ruby:${V}-slim"
    start: int  # offset of raw in the text
    end: int  # offset just after raw
    # The build arg that can stand for the image without editing the file: NAME for a FROM
    # whose whole image is "$NAME" or "${NAME}", BUILDKIT_SYNTAX for the syntax directive.
    arg: str | None = None


def parse(text: str, build_args: Mapping[str, str] | None = None) -> list[ImageUse]:
    """Every place in a Dockerfile that pulls an image.

    The syntax directive comes first, then FROM, COPY --from and RUN --mount from= images in
    file order, and the images of a stage's ONBUILD triggers where a FROM builds on it.
    `build_args` are the values `docker build --build-arg` would get; they win over ARG defaults.
    Raises DockerfileError, whose message names the line, for what BuildKit would refuse and
    for images that cannot be known (see the module docstring).
    """
    try:
        physical = _physical_lines(text)
        instructions = list(_instructions(physical))
        syntax = _syntax_use(text, physical)
        froms = {i.number: _split_from(i) for i in instructions if i.command == "from"}
        if not froms:  # an empty file, a typo'd path to some other file
            raise DockerfileError(
                "line 1: no FROM instruction: not a Dockerfile (BuildKit builds none without one)"
            )
        build = _Build(text, dict(build_args or {}), froms)
        uses = [syntax] if syntax else []
        for instruction in instructions:
            uses += build.step(instruction)
    except RecursionError:  # ${A:-${A:-...}} a thousand deep
        raise DockerfileError("variables nested too deeply to expand") from None
    return uses


def images(uses: Sequence[ImageUse]) -> list[str]:
    """The images, each once, in order of first use.

    Images are compared as written after expansion: "ruby:3.3" and "docker.io/library/ruby:3.3"
    are two entries here.
    """
    return list(dict.fromkeys(use.image for use in uses))


def rewrite(text: str, uses: Sequence[ImageUse], mapping: Mapping[str, str]) -> str:
    """`text` with the image text of each use whose image is in `mapping` replaced.

    Only the image text changes: the syntax directive's image, a FROM image, the value of
    --from, the value of a mount's from=. Flags, quotes around them, stage names, comments,
    spacing, line continuations and line endings stay byte for byte. An image written as an
    ARG ("FROM $BASE") is replaced by the mapped reference, so the build no longer depends on
    the ARG (`build_args` gives the --build-arg values for the other way: leaving the file as
    is). `uses` must come from `parse(text)`; ValueError if they do not fit the text, or if a
    mapped value is not an image reference that can be written in their place as is.
    """
    pieces: list[str] = []
    cursor = 0
    for use in sorted(uses, key=lambda use: use.start):
        if use.image not in mapping:
            continue
        if use.start < cursor or text[use.start : use.end] != use.raw:
            raise ValueError(f"line {use.line}: {use.raw!r} is not where parse found it")
        new = mapping[use.image]
        if not _REFERENCE_CHARS.match(new):
            raise ValueError(f"cannot write {new!r} as an image reference")
        if use.kind != "syntax" and (_STAGE_NAME.match(new) or _STAGE_INDEX.match(new)):
            raise ValueError(f"cannot write {new!r} as an image reference: it reads as a stage")
        pieces += (text[cursor : use.start], new)
        cursor = use.end
    pieces.append(text[cursor:])
    return "".join(pieces)


def build_args(uses: Sequence[ImageUse], mapping: Mapping[str, str]) -> list[tuple[str, str]]:
    """(build arg, new reference) for mapped uses whose image a build arg can replace.

    That is ARGs that are a FROM's whole image, and BUILDKIT_SYNTAX for the syntax directive
    (BuildKit then pulls the frontend image it names instead; any words after the image in
    the directive are left out, as BuildKit's own frontend ignores them). Passing these as
    --build-arg builds from the mapped images without editing the file. Each pair once, in
    order of first use.
    """
    partly = _partly_written(uses)
    pairs = (
        (use.arg, mapping[use.image])
        for use in uses
        if use.arg is not None and use.arg not in partly and use.image in mapping
    )
    return list(dict.fromkeys(pairs))


def not_by_build_args(uses: Sequence[ImageUse]) -> list[str]:
    """The images `build_args` cannot point elsewhere: not written as a whole ARG, or written
    with an ARG that another image uses as a part (`FROM $BASE` and `FROM $BASE:1`)."""
    partly = _partly_written(uses)
    return list(dict.fromkeys(use.image for use in uses if use.arg is None or use.arg in partly))


def _partly_written(uses: Sequence[ImageUse]) -> set[str]:
    """The ARGs used as a part of an image (`FROM $BASE:1`): a build arg cannot replace
    those images whole, nor, without changing them too, any image that is the ARG alone."""
    return {name for use in uses if use.arg is None for name in _VARIABLE.findall(use.raw)}


_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


# --- Reading instructions -------------------------------------------------------------------


@dataclass(frozen=True)
class _Instruction:
    number: int  # 1-based line number of its first line
    text: str  # the logical line: continuations joined, escape characters at line ends removed
    offsets: list[int]  # offsets[i] is where text[i] is in the original text
    command: str  # lowercased: "from", "arg"...
    args_start: int  # where the arguments start in `text`
    escape: str


def _physical_lines(text: str) -> list[tuple[int, str]]:
    """(offset, line without its line ending) for each line of the text."""
    physical = []
    offset = 0
    for piece in text.split("\n"):
        physical.append((offset, piece.rstrip("\r")))
        offset += len(piece) + 1
    return physical


def _instructions(physical: list[tuple[int, str]]) -> Iterator[_Instruction]:
    """The Dockerfile's instructions, as BuildKit's parser splits them into logical lines."""
    directives = _Directives()
    i = 0
    while i < len(physical):
        offset, content = physical[i]
        number = i + 1
        i += 1
        skip = 1 if number == 1 and content.startswith("\ufeff") else 0
        body_start = skip + len(content[skip:]) - len(content[skip:].lstrip())
        body = content[body_start:]
        if directives.read(body, number) or body.startswith("#"):
            continue
        chars: list[str] = []
        offsets: list[int] = []
        more = _append(chars, offsets, directives.continuation, body, offset + body_start)
        while more and i < len(physical):
            offset, content = physical[i]
            i += 1
            stripped = content.lstrip()
            if stripped and not stripped.startswith("#"):
                more = _append(chars, offsets, directives.continuation, content, offset)
        logical = "".join(chars)
        first = _TOKEN.search(logical)
        if first is None:
            continue
        command = first.group().lower()
        yield _Instruction(number, logical, offsets, command, first.end(), directives.escape)
        args = logical[first.end() :]
        if command == "onbuild":  # ONBUILD RUN <<EOF: the trigger's here-document is read too
            trigger = _TOKEN.search(args)
            command = trigger.group().lower() if trigger else ""
            args = args[trigger.end() :] if trigger else ""
        if command in _HEREDOC_COMMANDS:
            for name, chomp in _heredocs(args, directives.escape):
                i = _heredoc_end(physical, i, name, chomp, number)


class _Directives:
    """The parser directives at the top of the file; of them, only `escape` matters here."""

    def __init__(self) -> None:
        self.reading = True
        self.seen: set[str] = set()
        self.escape = "\\"
        self.continuation = re.compile(r"\\[ \t]*\Z")

    def read(self, body: str, number: int) -> bool:
        """Take in a line with its leading blanks removed; True if it is a parser directive."""
        if not self.reading:
            return False
        directive = _directive(body, "#")
        if directive is None:
            self.reading = False  # a comment, a blank line or an instruction ends directives
            return False
        key, value, _ = directive
        if key in self.seen:
            raise DockerfileError(f"line {number}: a second {key} parser directive")
        self.seen.add(key)
        if key == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(
                    f"line {number}: bad escape directive {value!r} (use ` or \\)"
                )
            self.escape = value
            self.continuation = re.compile(re.escape(value) + r"[ \t]*\Z")
        return True


def _directive(line: str, prefix: str) -> tuple[str, str, int] | None:
    """(key in lower case, value, where the value starts in `line`) if `line` is a parser
    directive written after `prefix`, as BuildKit's DirectiveParser.ParseLine reads one."""
    if not line.startswith(prefix):
        return None
    rest = line[len(prefix) :]
    body = rest.lstrip()
    key = _DIRECTIVE_KEY.match(body)
    if not key or key.group().lower() not in _DIRECTIVES:
        return None
    after = body[key.end() :].lstrip(_GO_SPACE)
    if not after.startswith("="):
        return None
    value_text = after[1:]  # each of these is an end of `body`
    stripped = value_text.lstrip(_GO_SPACE)
    if stripped:
        value, start = stripped.rstrip(_GO_SPACE), len(body) - len(stripped)
    elif value_text:  # only blanks: (.+?) takes the last one, as Go's and Python's regexps do
        value, start = value_text[-1], len(body) - 1
    else:
        return None
    return key.group().lower(), value, len(line) - len(body) + start


def _append(
    chars: list[str], offsets: list[int], continuation: re.Pattern[str], segment: str, at: int
) -> bool:
    """Add one physical line's text to a logical line; True if it continues on the next line."""
    end = continuation.search(segment)
    if end:
        segment = segment[: end.start()]
    chars.append(segment)
    offsets.extend(range(at, at + len(segment)))
    return end is not None


def _heredocs(args: str, escape: str) -> list[tuple[str, bool]]:
    """The here-documents an instruction opens: (terminator, leading tabs stripped?)."""
    if args.lstrip().startswith("["):
        try:
            form = json.loads(args)
        except (ValueError, RecursionError):
            form = None
        if isinstance(form, list) and all(isinstance(item, str) for item in form):
            return []  # exec form: no here-documents
    docs = []
    # BuildKit's lexer keeps blanks after "<<" in the word: "<< EOF" opens a here-document too.
    for word in _words(re.sub(r"<<[ \t]+", "<<", args), escape):
        match = _HEREDOC.match(word)
        if match:
            name = re.sub(r"\\(.)|[\"']", r"\1", match.group(2))
            if name:
                docs.append((name, match.group(1) == "-"))
    return docs


def _heredoc_end(
    physical: list[tuple[int, str]], i: int, name: str, chomp: bool, number: int
) -> int:
    """The index of the line after the here-document that starts at physical[i]."""
    for j in range(i, len(physical)):
        line = physical[j][1]
        if (line.lstrip("\t") if chomp else line) == name:
            return j + 1
    raise DockerfileError(f"line {number}: here-document <<{name} has no end")


def _words(text: str, escape: str) -> list[str]:
    """Split on blanks outside quotes, keeping quotes and escapes (BuildKit's parseWords)."""
    esc = re.escape(escape)
    word = (
        rf"(?:'[^']*(?:'|\Z)"  # single quotes: nothing is special inside
        rf'|"(?:{esc}.|[^"{esc}])*(?:"|{esc}?\Z)'  # double quotes: the escape character works
        rf"|{esc}.|{esc}\Z"
        rf"|[^\s'\"{esc}])+"
    )
    return re.findall(word, text)


# --- The syntax directive -------------------------------------------------------------------


def _syntax_use(text: str, physical: list[tuple[int, str]]) -> ImageUse | None:
    """The frontend image the build pulls, found as BuildKit's parser.DetectSyntax finds it."""
    lines = [(number, offset, line) for number, (offset, line) in enumerate(physical, start=1)]
    number, offset, line = lines[0]
    if line.startswith("\ufeff"):
        lines[0] = (number, offset + 1, line[1:])
    if lines[0][2].startswith("#!"):
        del lines[0]  # a shebang line is skipped
    for prefix in ("#", "//"):
        seen: set[str] = set()
        for number, offset, line in lines:
            directive = _directive(line, prefix)
            if directive is None or directive[0] in seen:
                break
            key, value, at = directive
            if key == "syntax":
                image = value.split(" ", 1)[0]  # words after it are arguments for the frontend
                start, end = offset + at, offset + at + len(image)
                return ImageUse("syntax", number, image, image, start, end, _SYNTAX_ARG)
            seen.add(key)
    if lines:
        number, offset, _ = lines[0]
        try:
            document = json.loads(text[offset:])
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, dict) and isinstance(document.get("syntax"), str):
            raise DockerfileError(
                f'line {number}: a JSON file with a "syntax" key is built by that frontend '
                f"({document['syntax']!r}), not read as a Dockerfile"
            )
    return None


# --- The build: stages, ARGs, and the images instructions pull ------------------------------


@dataclass(frozen=True)
class _From:
    """A FROM instruction's words, checked as BuildKit's parser checks them."""

    image: tuple[int, int]  # where the image word is in the instruction's text
    stage: str | None  # the name after AS, as written


class _Build:
    """Walks the instructions in order, keeping what the images of the next one depend on."""

    def __init__(self, text: str, overrides: dict[str, str], froms: dict[int, _From]) -> None:
        self.text = text
        self.overrides = overrides
        self.froms = froms
        self.scope = _Scope(overrides)
        # Every stage name of the file: COPY --from and mount from= look names up among all.
        self.names = {f.stage.lower() for f in froms.values() if f.stage is not None}
        # BuildKit's list of stages, which --from=<index> indexes: one per FROM, then one per
        # COPY --from or mount that is not a stage, in file order (convert.go, addState).
        self.sources = len(froms)
        self.earlier: dict[str, int] = {}  # stage names so far, the only ones FROM can use
        self.stage = -1
        self.triggers: list[list[_Instruction]] = []  # ONBUILD COPY/RUN of each stage
        self.triggered: set[int] = set()

    def step(self, instruction: _Instruction) -> list[ImageUse]:
        command = instruction.command
        if command == "arg" and self.stage < 0:
            _declare(instruction, self.scope, self.overrides)
        elif command == "from":
            return self._from(instruction, self.froms[instruction.number])
        elif command == "copy":
            return self._copy(instruction, instruction.args_start, trigger=False)
        elif command == "run":
            return self._run(instruction, instruction.args_start, trigger=False)
        elif command == "onbuild" and self.stage >= 0:
            self.triggers[self.stage].append(instruction)
        return []

    def _from(self, instruction: _Instruction, words: _From) -> list[ImageUse]:
        number = instruction.number
        start, end = words.image
        written = instruction.text[start:end]
        try:
            image = _Expander(written, instruction.escape, self.scope).expand()
        except _ExpandError as error:
            raise DockerfileError(f"line {number}: {error}") from None
        if not image:
            raise DockerfileError(f"line {number}: FROM image {written!r} is empty once expanded")
        base = self.earlier.get(image.lower())
        uses: list[ImageUse] = []
        if base is not None:
            uses = self._trigger(base)
        elif not _is_scratch(image):
            whole = _WHOLE_ARG.match(written)
            arg = (whole.group(1) or whole.group(2)) if whole else None
            uses = [self._use("from", instruction, image, (start, end), arg)]
        self.stage += 1
        self.triggers.append([])
        if words.stage is not None:
            self.earlier[words.stage.lower()] = self.stage
        return uses

    def _trigger(self, stage: int) -> list[ImageUse]:
        """The images of the ONBUILD triggers of `stage`, which run in a stage built on it."""
        if stage in self.triggered:
            return []  # the same text pulls the same images
        self.triggered.add(stage)
        uses: list[ImageUse] = []
        for instruction in self.triggers[stage]:
            trigger = _TOKEN.search(instruction.text, instruction.args_start)
            command = trigger.group().lower() if trigger else ""
            if trigger and command == "copy":
                uses += self._copy(instruction, trigger.end(), trigger=True)
            elif trigger and command == "run":
                uses += self._run(instruction, trigger.end(), trigger=True)
        return uses

    def _copy(self, instruction: _Instruction, at: int, *, trigger: bool) -> list[ImageUse]:
        number = instruction.number
        flags = [f for f in _flags(instruction, at)[0] if f.name == "from"]
        if not flags:
            return []
        if len(flags) > 1:
            raise DockerfileError(f"line {number}: COPY has --from twice")
        flag = flags[0]
        if flag.value is None:
            raise DockerfileError(f"line {number}: COPY --from needs a value: --from=<image>")
        value = flag.value
        if not value:
            return []  # --from= copies from the build context
        if _SHELL_SPECIAL.search(value) or instruction.escape in value:
            raise DockerfileError(
                f"line {number}: COPY --from={value}: BuildKit expands no variables or quotes "
                f"in --from; copy from a stage instead ({_ALIAS_STAGE})"
            )
        if _STAGE_INDEX.match(value):
            index = int(value)
            if not trigger and not 0 <= index < self.sources:
                raise DockerfileError(
                    f"line {number}: COPY --from={value}: there is no stage {index}"
                )
            return []
        if value.lower() in self.names:
            return []
        if not trigger:  # triggers run after every other instruction has had its place
            self.sources += 1
        if _is_scratch(value):
            return []
        span = flag.word.raw_span(flag.value_at, len(flag.word.text))
        if span is None:
            raise DockerfileError(f"line {number}: COPY --from={value}: {_UNQUOTABLE}")
        return [self._use("copy", instruction, value, span)]

    def _run(self, instruction: _Instruction, at: int, *, trigger: bool) -> list[ImageUse]:
        number = instruction.number
        uses: list[ImageUse] = []
        for flag in _flags(instruction, at)[0]:
            if flag.name != "mount":
                continue
            if flag.value is None:
                raise DockerfileError(f"line {number}: RUN --mount needs a value: --mount=<opts>")
            source = _mount_from(flag, number)
            if source is not None and source[0].lower() in self.names:
                continue
            if not trigger:
                self.sources += 1
            if source is None or _is_scratch(source[0]):
                continue  # no from=: BuildKit counts it as scratch
            image, span = source
            uses.append(self._use("mount", instruction, image, span))
        return uses

    def _use(
        self,
        kind: Kind,
        instruction: _Instruction,
        image: str,
        span: tuple[int, int],
        arg: str | None = None,
    ) -> ImageUse:
        """An ImageUse for the image written at `span` of the instruction's text."""
        start = instruction.offsets[span[0]]
        end = instruction.offsets[span[1] - 1] + 1
        return ImageUse(kind, instruction.number, image, self.text[start:end], start, end, arg)


def _is_scratch(image: str) -> bool:
    return image.lower() == "scratch"


def _split_from(instruction: _Instruction) -> _From:
    number = instruction.number
    flags, rest = _flags(instruction, instruction.args_start)
    for index, flag in enumerate(flags):
        if flag.name != "platform":
            raise DockerfileError(
                f"line {number}: unknown FROM flag --{flag.name} (only --platform)"
            )
        if flag.value is None:
            raise DockerfileError(f"line {number}: FROM --platform needs a value: --platform=<p>")
        if index:
            raise DockerfileError(f"line {number}: FROM has --platform twice")
    tokens = list(_TOKEN.finditer(instruction.text, rest))
    words = [token.group() for token in tokens]
    if not words:
        raise DockerfileError(f"line {number}: FROM without an image")
    stage: str | None = None
    if len(words) == 3 and words[1].lower() == "as":
        stage = words[2]
        if not _STAGE_NAME.match(stage.lower()):
            raise DockerfileError(
                f"line {number}: bad stage name {stage!r} (a letter, then letters, digits, "
                "'.', '_' or '-')"
            )
    elif len(words) != 1:
        raise DockerfileError(
            f"line {number}: FROM takes '<image> [AS <name>]', not {' '.join(words)!r}"
        )
    return _From(tokens[0].span(), stage)


def _declare(instruction: _Instruction, scope: _Scope, overrides: Mapping[str, str]) -> None:
    words = _words(instruction.text[instruction.args_start :], instruction.escape)
    if not words:
        raise DockerfileError(f"line {instruction.number}: ARG without a name")
    for word in words:
        name, has_default, default = word.partition("=")
        if not name:
            raise DockerfileError(f"line {instruction.number}: ARG without a name: {word!r}")
        scope.declared.add(name)
        if name in overrides:
            scope.values[name] = overrides[name]
        elif has_default:
            try:
                scope.values[name] = _Expander(default, instruction.escape, scope).expand()
            except _ExpandError as error:
                where = f"in the default of ARG {name} on line {instruction.number}"
                scope.values[name] = _Unknown(f"{error} ({where})")
        # An ARG without a default keeps the value an earlier ARG line gave it, if any.


# --- Flags and mount options, with where each character is written ---------------------------


@dataclass(frozen=True)
class _Word:
    """A flag word as BuildKit's extractBuilderFlags reads it: quotes removed, escapes applied."""

    text: str  # "--from=busybox:1.36" for --from="busybox:1.36"
    spans: list[tuple[int, int]]  # spans[i]: where text[i] is written (with its escape character)
    quotes: list[str]  # quotes[p - start]: the quote open before position p ("" if none)
    start: int  # where the word is in the instruction's text
    end: int

    def raw_span(self, a: int, b: int) -> tuple[int, int] | None:
        """Where text[a:b] is written, such that plain text written there instead reads back as
        itself: quotes that open or close inside are taken in. None if there is no such span."""
        covered = {p for start, end in self.spans for p in range(start, end)}
        backs = [self.spans[a][0]]
        while backs[-1] > self.start and backs[-1] - 1 not in covered and len(backs) <= MAX_QUOTES:
            backs.append(backs[-1] - 1)  # a quote character, just before
        ahead = [self.spans[b - 1][1]]
        while ahead[-1] < self.end and ahead[-1] not in covered and len(ahead) <= MAX_QUOTES:
            ahead.append(ahead[-1] + 1)  # a quote character, just after
        if len(backs) > MAX_QUOTES or len(ahead) > MAX_QUOTES:
            return None  # hundreds of quotes around an image: no one writes that
        candidates = sorted(
            ((i + j, back, end) for i, back in enumerate(backs) for j, end in enumerate(ahead)),
        )
        for _, back, end in candidates:
            if self.quotes[back - self.start] == self.quotes[end - self.start]:
                return back, end
        return None


@dataclass(frozen=True)
class _Flag:
    word: _Word
    name: str  # "from" for --from=x
    value: str | None  # None when the word has no "="
    value_at: int  # where the value starts in word.text


def _flags(instruction: _Instruction, at: int) -> tuple[list[_Flag], int]:
    """The --flags at `at` in the instruction's text, and where its other arguments start."""
    words, rest = _flag_words(instruction.text, at, instruction.escape)
    flags = []
    for word in words:
        name, equals, value = word.text[2:].partition("=")
        flags.append(_Flag(word, name, value if equals else None, len(name) + 3))
    return flags, rest


def _flag_words(line: str, pos: int, escape: str) -> tuple[list[_Word], int]:
    """BuildKit's extractBuilderFlags: the words starting with "--" before the other arguments."""
    words: list[_Word] = []
    while True:
        while pos < len(line) and line[pos] in _SPACE:
            pos += 1
        if not line.startswith("--", pos):
            return words, pos
        word = _flag_word(line, pos, escape)
        pos = word.end
        if word.text == "--":  # the end of the flags
            return words, pos
        words.append(word)


def _flag_word(line: str, pos: int, escape: str) -> _Word:
    start = pos
    chars: list[str] = []
    spans: list[tuple[int, int]] = []
    quotes: list[str] = []
    quote = ""
    while pos < len(line):
        ch = line[pos]
        if not quote and ch in _SPACE:
            break
        quotes.append(quote)
        if (not quote and ch in "'\"") or ch == quote:
            quote = "" if quote else ch
            pos += 1
        elif ch == escape and pos + 1 == len(line):
            quote = ""  # an escape character at the very end is dropped
            pos += 1
        else:
            size = 2 if ch == escape else 1
            if size == 2:
                quotes.append(quote)
            chars.append(line[pos + size - 1])
            spans.append((pos, pos + size))
            pos += size
    quotes.append(quote)
    return _Word("".join(chars), spans, quotes, start, pos)


def _mount_from(flag: _Flag, number: int) -> tuple[str, tuple[int, int]] | None:
    """The image or stage a --mount names with from=, and where it is written; None if none."""
    assert flag.value is not None
    try:
        fields = _csv_fields(flag.value)
    except _CsvError as error:
        raise DockerfileError(f"line {number}: RUN --mount={flag.value}: {error}") from None
    found: tuple[str, list[tuple[int, int]]] | None = None
    for text, spans in fields:
        key, equals, value = text.partition("=")
        if equals and key.lower() == "from":
            found = value, spans[len(key) + 1 :]  # the last from= wins
    if found is None or not found[0]:
        return None
    value, spans = found
    dollar = value.find("$")
    if dollar not in (-1, len(value) - 1):
        raise DockerfileError(
            f"line {number}: RUN --mount from={value}: BuildKit expands no variables in a "
            f"mount's from; mount a stage instead ({_ALIAS_STAGE})"
        )
    if _STAGE_INDEX.match(value):
        raise DockerfileError(
            f"line {number}: RUN --mount from={value}: a mount takes a stage name, not an index "
            f"(BuildKit would pull an image named {value!r})"
        )
    a = flag.value_at + spans[0][0]
    b = flag.value_at + spans[-1][1]
    span = flag.word.raw_span(a, b)
    if span is None:
        raise DockerfileError(f"line {number}: RUN --mount from={value}: {_UNQUOTABLE}")
    return value, span


class _CsvError(Exception):
    pass


def _csv_fields(value: str) -> list[tuple[str, list[tuple[int, int]]]]:
    """go-csvvalue's Fields: each field, with where each of its characters is in `value`."""
    if not value:
        raise _CsvError("no mount options")
    fields = []
    pos = 0
    while True:
        if not value.startswith('"', pos):
            comma = value.find(",", pos)
            end = len(value) if comma < 0 else comma
            if '"' in value[pos:end]:
                raise _CsvError('a bare " in a field not in quotes')
            fields.append((value[pos:end], [(i, i + 1) for i in range(pos, end)]))
            if comma < 0:
                return fields
            pos = comma + 1
            continue
        chars: list[str] = []
        spans: list[tuple[int, int]] = []
        pos += 1
        while True:
            close = value.find('"', pos)
            if close < 0:
                raise _CsvError('a " opens a field and none closes it')
            chars += value[pos:close]
            spans += [(i, i + 1) for i in range(pos, close)]
            if value.startswith('""', close):
                chars.append('"')
                spans.append((close, close + 2))
                pos = close + 2
                continue
            pos = close + 1
            break
        fields.append(("".join(chars), spans))
        if pos == len(value):
            return fields
        if value[pos] != ",":
            raise _CsvError('a " inside a field in quotes (write "" for one)')
        pos += 1


# --- Variable expansion (BuildKit's shell lexer, for one word) -------------------------------


class _ExpandError(Exception):
    """A word cannot be expanded; the message has no line number yet."""

    def __init__(self, message: str) -> None:
        super().__init__(_fit(message))


@dataclass(frozen=True)
class _Unknown:
    """A variable that has a value at build time which we cannot know: using it is an error."""

    message: str


class _Scope:
    """The ARGs declared before the first FROM, plus the builder's platform ARGs."""

    def __init__(self, overrides: Mapping[str, str]) -> None:
        self.declared: set[str] = set()
        self.values: dict[str, str | _Unknown] = {}
        self.expanded = 0  # characters every expansion so far produced (MAX_EXPANDED)
        for name in BUILDER_ARGS:
            self.values[name] = (
                overrides[name]
                if name in overrides
                else _Unknown(
                    f"unknown variable ${name} is set by the builder: pass its value in build_args"
                )
            )

    def get(self, name: str) -> str | None:
        """The value, or None when unset; raises for values we cannot know."""
        value = self.values.get(name)
        if isinstance(value, _Unknown):
            raise _ExpandError(value.message)
        return value

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is not None:
            return value
        if name in self.declared:
            raise _ExpandError(f"unknown variable ${name} has no default")
        raise _ExpandError(f"unknown variable ${name}: no ARG {name} before the first FROM")


class _Expander:
    """One word expanded as BuildKit's shell lexer does, to at most MAX_VALUE characters (so
    that 40 lines of `ARG B=$A$A` do not double into terabytes), within the file's
    MAX_EXPANDED in all."""

    def __init__(self, word: str, escape: str, scope: _Scope) -> None:
        self.word = word
        self.escape = escape
        self.scope = scope
        self.pos = 0
        self.size = 0

    def expand(self) -> str:
        value = self._until("")
        if len(value) > MAX_VALUE:
            raise _ExpandError(f"expands to more than {MAX_VALUE:,} characters")
        return value

    def _grown(self, piece: str) -> str:
        """`piece`, counted against the limits before it is added to a value."""
        self.size += len(piece)
        self.scope.expanded += len(piece)
        if self.size > MAX_VALUE:
            raise _ExpandError(f"expands to more than {MAX_VALUE:,} characters")
        if self.scope.expanded > MAX_EXPANDED:
            raise _ExpandError(
                f"the ARGs of this file expand to more than {MAX_EXPANDED >> 20} MiB in all"
            )
        return piece

    def _until(self, stop: str, *, raw_escapes: bool = False) -> str:
        """Expand up to `stop` (consumed), or to the end when `stop` is ""."""
        word = self.word
        out: list[str] = []
        while self.pos < len(word):
            ch = word[self.pos]
            if ch == stop:
                self.pos += 1
                return "".join(out)
            if ch == "'":
                out.append(self._grown(self._single_quoted()))
            elif ch == '"':
                out.append(self._grown(self._double_quoted()))
            elif ch == "$":
                out.append(self._grown(self._dollar()))
            else:
                self.pos += 1
                if ch == self.escape:
                    if self.pos == len(word):
                        break
                    if raw_escapes:
                        out.append(ch)
                    ch = word[self.pos]
                    self.pos += 1
                out.append(ch)
        if stop:
            raise _ExpandError(f"missing '{stop}' in {word!r}")
        return "".join(out)

    def _single_quoted(self) -> str:
        close = self.word.find("'", self.pos + 1)
        if close < 0:
            raise _ExpandError(f"unterminated single quote in {self.word!r}")
        text = self.word[self.pos + 1 : close]
        self.pos = close + 1
        return text

    def _double_quoted(self) -> str:
        word = self.word
        self.pos += 1
        out: list[str] = []
        while self.pos < len(word):
            ch = word[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "$":
                out.append(self._grown(self._dollar()))
                continue
            self.pos += 1
            if ch == self.escape and self.pos < len(word) and word[self.pos] in ('"', "$", ch):
                ch = word[self.pos]
                self.pos += 1
            out.append(ch)
        raise _ExpandError(f"unterminated double quote in {word!r}")

    def _name(self) -> str:
        word, start = self.word, self.pos
        if start < len(word) and "0" <= word[start] <= "9":
            while self.pos < len(word) and "0" <= word[self.pos] <= "9":
                self.pos += 1
        else:
            while self.pos < len(word) and (word[self.pos].isalnum() or word[self.pos] == "_"):
                self.pos += 1
        return word[start : self.pos]

    def _dollar(self) -> str:
        word = self.word
        self.pos += 1
        if not word.startswith("{", self.pos):
            name = self._name()
            return self.scope.require(name) if name else "$"
        self.pos += 1
        name = self._name()
        if self.pos == len(word):
            raise _ExpandError(f"missing '}}' in {word!r}")
        if not name:
            raise _ExpandError(f"bad substitution in {word!r}")
        op = word[self.pos]
        self.pos += 1
        if op == "}":
            return self.scope.require(name)
        colon = op == ":"
        if colon:
            op = word[self.pos] if self.pos < len(word) else ""
            self.pos += 1
        if op not in ("-", "+", "?", "#", "%") or (colon and op in ("#", "%")):
            raise _ExpandError(f"unsupported substitution ${{{name}{':' * colon}{op}...}}")
        argument = self._until("}", raw_escapes=op in ("#", "%"))
        value = self.scope.get(name)
        unset = value is None or (colon and not value)
        if op == "-":
            return argument if unset or value is None else value
        if op == "+":
            return "" if unset else argument
        if op == "?":
            if unset or value is None:
                default = "is not allowed to be unset" if value is None else "must not be empty"
                raise _ExpandError(f"{name}: {argument or default}")
            return value
        value = self.scope.require(name)
        longest = argument.startswith(op)
        return _trim(value, argument[1:] if longest else argument, op == "#", longest)


def _trim(value: str, pattern: str, prefix: bool, longest: bool) -> str:
    """Remove the shortest (or longest) prefix or suffix of `value` matching the glob."""
    glob = re.compile(fnmatch.translate(pattern))
    size = len(value)
    for cut in range(size, -1, -1) if longest else range(size + 1):
        # the part tried, value[:cut] or value[size - cut:], without copying it
        start, end = (0, cut) if prefix else (size - cut, size)
        if glob.fullmatch(value, start, end):
            return value[cut:] if prefix else value[: size - cut]
    return value
