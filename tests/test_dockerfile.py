"""mirror.dockerfile: the images a Dockerfile pulls, read as BuildKit reads them, and rewritten
byte for byte."""

from __future__ import annotations

import re

import pytest

from mirror import dockerfile
from mirror.dockerfile import DockerfileError, ImageUse

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dockerhub"

Row = tuple[str, int, str, str, str | None]


def rows(uses: list[ImageUse]) -> list[Row]:
    """(kind, line, image, raw, arg) per use."""
    return [(use.kind, use.line, use.image, use.raw, use.arg) for use in uses]


FROM_CASES: list[tuple[str, str, dict[str, str], list[Row]]] = [
    (
        "multi-stage, stage references, case-insensitive stage names",
        "FROM ruby:3.3-slim AS Build\n"
        "RUN bundle install\n"
        "FROM build AS test\n"
        "FROM node:20\n"
        "FROM BUILD\n",
        {},
        [
            ("from", 1, "ruby:3.3-slim", "ruby:3.3-slim", None),
            ("from", 4, "node:20", "node:20", None),
        ],
    ),
    (
        "only EARLIER stages count: a later one, or the stage itself, is an image",
        "FROM later\nFROM ruby AS ruby\nFROM ruby AS later\nFROM later\n",
        {},
        [("from", 1, "later", "later", None), ("from", 2, "ruby", "ruby", None)],
    ),
    (
        "a stage named through an ARG",
        "ARG STAGE=build\nFROM ruby AS build\nFROM ${STAGE}\n",
        {},
        [("from", 2, "ruby", "ruby", None)],
    ),
    (
        "scratch in any case, also through an ARG, is no image",
        "ARG EMPTY=scratch\nFROM scratch\nFROM SCRATCH AS s\nFROM $EMPTY\n",
        {},
        [],
    ),
    (
        "--platform is not part of the image",
        "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\n"
        "FROM --platform=linux/arm64 alpine:3.20\n",
        {},
        [
            ("from", 1, "golang:1.22", "golang:1.22", None),
            ("from", 2, "alpine:3.20", "alpine:3.20", None),
        ],
    ),
    (
        "flags are read as BuildKit reads them: quotes may hold blanks, -- ends them",
        'FROM --platform="linux/amd64 " ruby:3.3\nFROM -- node:20\n',
        {},
        [("from", 1, "ruby:3.3", "ruby:3.3", None), ("from", 2, "node:20", "node:20", None)],
    ),
    (
        "ARG defaults: $NAME, ${NAME}, inside larger text; several per line; quotes",
        "ARG RUBY_VERSION=3.3 NODE=node:20\n"
        "ARG BASE=\"ruby:3.3\" SINGLE='alpine:3.20'\n"
        "FROM $BASE\n"
        "FROM ${NODE}\n"
        "FROM ruby:${RUBY_VERSION}-slim\n"
        "FROM $SINGLE\n",
        {},
        [
            ("from", 3, "ruby:3.3", "$BASE", "BASE"),
            ("from", 4, "node:20", "${NODE}", "NODE"),
            ("from", 5, "ruby:3.3-slim", "ruby:${RUBY_VERSION}-slim", None),
            ("from", 6, "alpine:3.20", "$SINGLE", "SINGLE"),
        ],
    ),
    (
        "build args win over defaults and give ARGs without one a value; used as is",
        "ARG BASE=ruby:3.3\nARG TAG\nARG RAW=x\nFROM $BASE\nFROM node:$TAG\nFROM $RAW\n",
        {"BASE": "ruby:3.4", "TAG": "22", "RAW": "a${TAG}b"},
        [
            ("from", 4, "ruby:3.4", "$BASE", "BASE"),
            ("from", 5, "node:22", "node:$TAG", None),
            ("from", 6, "a${TAG}b", "$RAW", "RAW"),
        ],
    ),
    (
        "a default uses earlier ARGs; re-declaring without a default keeps the value",
        "ARG V=3.3\nARG IMAGE=ruby:${V}-slim\nARG V\nFROM $IMAGE\nFROM ruby:$V\n",
        {},
        [
            ("from", 4, "ruby:3.3-slim", "$IMAGE", "IMAGE"),
            ("from", 5, "ruby:3.3", "ruby:$V", None),
        ],
    ),
    (
        "an override also changes defaults that use it",
        "ARG V=3.3\nARG IMAGE=ruby:${V}-slim\nFROM $IMAGE\n",
        {"V": "3.4"},
        [("from", 3, "ruby:3.4-slim", "$IMAGE", "IMAGE")],
    ),
    (
        "ARGs after the first FROM belong to a stage: later FROMs do not see them",
        "ARG V=1\nFROM a:$V\nARG V=2\nFROM b:$V\n",
        {},
        [("from", 2, "a:1", "a:$V", None), ("from", 4, "b:1", "b:$V", None)],
    ),
    (
        "build args for ARGs the file does not declare are ignored, as by Docker",
        "FROM ruby:${V:-3.3}\n",
        {"V": "3.4"},
        [("from", 1, "ruby:3.3", "ruby:${V:-3.3}", None)],
    ),
    (
        "the builder's platform ARGs need no declaration, but a value from the caller",
        "FROM --platform=$BUILDPLATFORM tool:1-$TARGETARCH\n",
        {"TARGETARCH": "arm64"},
        [("from", 1, "tool:1-arm64", "tool:1-$TARGETARCH", None)],
    ),
    (
        "${V:-default}, ${V-default}: unset, empty and set",
        "ARG UNSET\nARG EMPTY=\nARG SET=3.4\n"
        "FROM ruby:${UNSET:-3.3}\n"
        "FROM ruby:${EMPTY:-3.3}\n"
        "FROM ruby${EMPTY-:3.3}\n"
        "FROM ruby:${SET:-3.3}\n"
        "FROM ruby:${NEVER_DECLARED:-3.3}\n",
        {},
        [
            ("from", 4, "ruby:3.3", "ruby:${UNSET:-3.3}", None),
            ("from", 5, "ruby:3.3", "ruby:${EMPTY:-3.3}", None),
            ("from", 6, "ruby", "ruby${EMPTY-:3.3}", None),
            ("from", 7, "ruby:3.4", "ruby:${SET:-3.3}", None),
            ("from", 8, "ruby:3.3", "ruby:${NEVER_DECLARED:-3.3}", None),
        ],
    ),
    (
        "${V:+word}, nested defaults, ${V#glob} and ${V%glob}",
        "ARG SLIM=1\nARG NO\nARG V=3.3.1\n"
        "FROM ruby:3.3${SLIM:+-slim}${NO:+-alpine}\n"
        "FROM ${NO:-${NO:-ruby}:${V}}\n"
        "FROM ruby:${V%.*}\n"
        "FROM ruby:${V%%.*}\n"
        "FROM ruby:${V#*.}\n",
        {},
        [
            ("from", 4, "ruby:3.3-slim", "ruby:3.3${SLIM:+-slim}${NO:+-alpine}", None),
            ("from", 5, "ruby:3.3.1", "${NO:-${NO:-ruby}:${V}}", None),
            ("from", 6, "ruby:3.3", "ruby:${V%.*}", None),
            ("from", 7, "ruby:3", "ruby:${V%%.*}", None),
            ("from", 8, "ruby:3.1", "ruby:${V#*.}", None),
        ],
    ),
    (
        "quotes and escapes in the image word",
        "ARG V=3.3\nFROM \"ruby:$V\"\nFROM 'ruby:$V'\nFROM ruby:\\$V\n",
        {},
        [
            ("from", 2, "ruby:3.3", '"ruby:$V"', None),
            ("from", 3, "ruby:$V", "'ruby:$V'", None),
            ("from", 4, "ruby:$V", "ruby:\\$V", None),
        ],
    ),
    (
        "comments, blank lines and continuations, also inside an instruction",
        "# the base\n"
        "  # indented comment\n"
        "\n"
        "FROM \\\n"
        "  # a comment inside the instruction\n"
        "\n"
        "  --platform=linux/amd64 \\\n"
        "  ruby:3.3 \\  \n"
        "  AS build\n"
        "RUN echo \\\n"
        "  FROM not-an-instruction\n",
        {},
        [("from", 4, "ruby:3.3", "ruby:3.3", None)],
    ),
    (
        "instructions and AS in any case",
        "arg V=3.3\nfrom ruby:$V as build\nFrom build As test\nfRoM node:20\n",
        {},
        [("from", 2, "ruby:3.3", "ruby:$V", None), ("from", 4, "node:20", "node:20", None)],
    ),
    (
        "# escape=` makes the backtick continue lines; a backslash is then literal",
        "# escape=`\n"
        "FROM mcr.microsoft.com/windows/servercore:ltsc2022 `\n"
        "    AS build\n"
        "RUN dir c:\\\n"
        "FROM mcr.microsoft.com/windows/nanoserver:ltsc2022\n",
        {},
        [
            (
                "from",
                2,
                "mcr.microsoft.com/windows/servercore:ltsc2022",
                "mcr.microsoft.com/windows/servercore:ltsc2022",
                None,
            ),
            (
                "from",
                5,
                "mcr.microsoft.com/windows/nanoserver:ltsc2022",
                "mcr.microsoft.com/windows/nanoserver:ltsc2022",
                None,
            ),
        ],
    ),
    (
        "a directive after a comment is only a comment: backslash still continues",
        "# hello\n# escape=`\nFROM ruby:3.3 \\\n  AS build\n",
        {},
        [("from", 3, "ruby:3.3", "ruby:3.3", None)],
    ),
    (
        "CRLF line endings and a byte-order mark",
        "\ufeffARG BASE=ruby:3.3\r\nFROM $BASE \\\r\n  AS build\r\nFROM node:20\r\n",
        {},
        [("from", 2, "ruby:3.3", "$BASE", "BASE"), ("from", 4, "node:20", "node:20", None)],
    ),
    (
        "here-documents are skipped: a Python `from` inside one is no FROM",
        "FROM python:3.12\n"
        "RUN <<EOF python3\n"
        "from pathlib import Path\n"
        "FROM fake:1\n"
        "EOF\n"
        "COPY <<-'CONF' << TWO /etc/\n"
        "\tFROM fake:2\n"
        "\tCONF\n"
        "from fake:3\n"
        "TWO\n"
        "ONBUILD RUN <<X\n"
        "FROM fake:4\n"
        "X\n"
        'RUN ["sh", "-c", "cat <<X"]\n'
        "FROM alpine:3.20\n",
        {},
        [
            ("from", 1, "python:3.12", "python:3.12", None),
            ("from", 15, "alpine:3.20", "alpine:3.20", None),
        ],
    ),
    ("an empty file pulls nothing", "", {}, []),
    ("comments only", "# nothing here\n\n", {}, []),
]

SYNTAX = "BUILDKIT_SYNTAX"

SYNTAX_CASES: list[tuple[str, str, dict[str, str], list[Row]]] = [
    (
        "# syntax= pulls the frontend image",
        "# syntax=docker/dockerfile:1\nFROM ruby:3.3\n",
        {},
        [
            ("syntax", 1, "docker/dockerfile:1", "docker/dockerfile:1", SYNTAX),
            ("from", 2, "ruby:3.3", "ruby:3.3", None),
        ],
    ),
    (
        "key in any case, blanks around '=', after escape and check directives",
        "# escape=`\n# check=skip=all\n#  SYNTAX =  docker/dockerfile:1.7  \nFROM ruby\n",
        {},
        [
            ("syntax", 3, "docker/dockerfile:1.7", "docker/dockerfile:1.7", SYNTAX),
            ("from", 4, "ruby", "ruby", None),
        ],
    ),
    (
        "the image is the value up to its first space; the rest is for the frontend",
        "# syntax=example/frontend:2 --debug\nFROM ruby\n",
        {},
        [
            ("syntax", 1, "example/frontend:2", "example/frontend:2", SYNTAX),
            ("from", 2, "ruby", "ruby", None),
        ],
    ),
    (
        "a byte-order mark, CRLF, and a #! first line are skipped",
        "\ufeff#!/usr/bin/env buildctl\r\n# syntax=docker/dockerfile:1\r\nFROM ruby\r\n",
        {},
        [
            ("syntax", 2, "docker/dockerfile:1", "docker/dockerfile:1", SYNTAX),
            ("from", 3, "ruby", "ruby", None),
        ],
    ),
    (
        "BuildKit's other form: // at the top",
        "// syntax=docker/dockerfile:1\nFROM ruby\n",
        {},
        [
            ("syntax", 1, "docker/dockerfile:1", "docker/dockerfile:1", SYNTAX),
            ("from", 2, "ruby", "ruby", None),
        ],
    ),
    (
        "after a comment: only a comment",
        "# the build\n# syntax=docker/dockerfile:1\nFROM ruby\n",
        {},
        [("from", 3, "ruby", "ruby", None)],
    ),
    (
        "after a blank line: only a comment",
        "\n# syntax=docker/dockerfile:1\nFROM ruby\n",
        {},
        [("from", 3, "ruby", "ruby", None)],
    ),
    (
        "after an unknown directive: only a comment",
        "# foo=bar\n# syntax=docker/dockerfile:1\nFROM ruby\n",
        {},
        [("from", 3, "ruby", "ruby", None)],
    ),
    (
        "after an instruction: only a comment",
        "FROM ruby\n# syntax=docker/dockerfile:1\n",
        {},
        [("from", 1, "ruby", "ruby", None)],
    ),
    (
        "with blanks before '#': not for DetectSyntax (the parser still takes it as a directive)",
        "  # syntax=docker/dockerfile:1\n# escape=`\nFROM ruby `\n AS b\n",
        {},
        [("from", 3, "ruby", "ruby", None)],
    ),
]

PARSE_CASES = FROM_CASES + SYNTAX_CASES


@pytest.mark.parametrize(
    ("text", "build_args", "expected"),
    [case[1:] for case in PARSE_CASES],
    ids=[case[0] for case in PARSE_CASES],
)
def test_parse(text: str, build_args: dict[str, str], expected: list[Row]) -> None:
    uses = dockerfile.parse(text, build_args)
    assert rows(uses) == expected
    for use in uses:
        assert text[use.start : use.end] == use.raw


def test_offsets_point_at_the_image_text() -> None:
    text = "ARG B=ruby:3.3\r\nFROM --platform=$P \\\r\n   $B AS x\r\n"
    (use,) = dockerfile.parse(text)
    assert (use.start, use.end) == (text.index("$B"), text.index("$B") + 2)


def test_an_image_split_by_a_continuation_spans_it() -> None:
    text = "FROM ruby:3.\\\n3 AS x\n"
    (use,) = dockerfile.parse(text)
    assert (use.image, use.raw) == ("ruby:3.3", "ruby:3.\\\n3")


def test_images_are_deduplicated_in_order_of_first_use() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"
        "ARG NODE=node:20\n"
        "FROM ruby:3.3 AS a\n"
        "FROM $NODE\n"
        "FROM scratch\n"
        "FROM a\n"
        "FROM ruby:3.3\n"
        "FROM node:20 AS n\n"
        "FROM alpine:3.20\n"
        "FROM n\n"
    )
    assert dockerfile.images(dockerfile.parse(text)) == [
        "docker/dockerfile:1",
        "ruby:3.3",
        "node:20",
        "alpine:3.20",
    ]


REWRITE_CASES: list[tuple[str, str, dict[str, str], dict[str, str], str]] = [
    (
        "only the image text changes: flags, stage names, comments, spacing stay",
        "# syntax=docker/dockerfile:1\n"
        "FROM   --platform=$BUILDPLATFORM   ruby:3.3-slim   AS build  \n"
        "# FROM ruby:3.3-slim\n"
        "FROM build AS test\n"
        "FROM\tnode:20\n"
        "FROM scratch\n",
        {},
        {
            "ruby:3.3-slim": f"{ECR}/library/ruby:3.3-slim",
            "node:20": f"{ECR}/library/node:20",
            "build": "never/used:1",
            "scratch": "never/used:2",
        },
        "# syntax=docker/dockerfile:1\n"
        f"FROM   --platform=$BUILDPLATFORM   {ECR}/library/ruby:3.3-slim   AS build  \n"
        "# FROM ruby:3.3-slim\n"
        "FROM build AS test\n"
        f"FROM\t{ECR}/library/node:20\n"
        "FROM scratch\n",
    ),
    (
        "images not in the mapping stay; a repeated image changes everywhere",
        "FROM ruby:3.3\nFROM alpine:3.20\nFROM ruby:3.3 AS again\n",
        {},
        {"ruby:3.3": f"{ECR}/library/ruby:3.3"},
        f"FROM {ECR}/library/ruby:3.3\nFROM alpine:3.20\nFROM {ECR}/library/ruby:3.3 AS again\n",
    ),
    (
        "ARG images: the FROM text becomes the ECR reference, the ARG line stays",
        'ARG BASE="ruby:3.3"\nARG V=20\nFROM ${BASE} AS base\nFROM node:${V}-slim\n',
        {},
        {"ruby:3.3": f"{ECR}/library/ruby:3.3", "node:20-slim": f"{ECR}/library/node:20-slim"},
        f'ARG BASE="ruby:3.3"\nARG V=20\nFROM {ECR}/library/ruby:3.3 AS base\n'
        f"FROM {ECR}/library/node:20-slim\n",
    ),
    (
        "the mapping is keyed by the image as expanded with the build args",
        "ARG BASE=ruby:3.3\nFROM $BASE\n",
        {"BASE": "ruby:3.4"},
        {"ruby:3.3": "not/this:1", "ruby:3.4": f"{ECR}/library/ruby:3.4"},
        f"ARG BASE=ruby:3.3\nFROM {ECR}/library/ruby:3.4\n",
    ),
    (
        "CRLF and continuation lines are kept",
        "FROM --platform=$BUILDPLATFORM \\\r\n    ruby:3.3 \\\r\n    AS build\r\nRUN true\r\n",
        {},
        {"ruby:3.3": f"{ECR}/library/ruby:3.3"},
        f"FROM --platform=$BUILDPLATFORM \\\r\n    {ECR}/library/ruby:3.3 \\\r\n"
        "    AS build\r\nRUN true\r\n",
    ),
    (
        "an image split by a continuation is replaced whole",
        "FROM ruby:3.\\\n3 AS x\n",
        {},
        {"ruby:3.3": f"{ECR}/library/ruby:3.3"},
        f"FROM {ECR}/library/ruby:3.3 AS x\n",
    ),
    (
        "escape directive file",
        "# escape=`\nFROM mcr.microsoft.com/windows/servercore:ltsc2022 `\n  AS build\n",
        {},
        {"mcr.microsoft.com/windows/servercore:ltsc2022": f"{ECR}/windows/servercore:ltsc2022"},
        f"# escape=`\nFROM {ECR}/windows/servercore:ltsc2022 `\n  AS build\n",
    ),
    (
        "here-document bodies are not touched",
        "COPY <<EOF /Dockerfile\nFROM ruby:3.3\nEOF\nFROM ruby:3.3\n",
        {},
        {"ruby:3.3": f"{ECR}/library/ruby:3.3"},
        f"COPY <<EOF /Dockerfile\nFROM ruby:3.3\nEOF\nFROM {ECR}/library/ruby:3.3\n",
    ),
    (
        "the syntax directive: only its image; the frontend's arguments stay",
        "#syntax = example/frontend:2 --debug\nFROM ruby\n",
        {},
        {"example/frontend:2": f"{ECR}/example/frontend:2"},
        f"#syntax = {ECR}/example/frontend:2 --debug\nFROM ruby\n",
    ),
    (
        "an empty mapping changes nothing",
        "# syntax=docker/dockerfile:1\r\nFROM ruby:3.3\r\n",
        {},
        {},
        "# syntax=docker/dockerfile:1\r\nFROM ruby:3.3\r\n",
    ),
]


@pytest.mark.parametrize(
    ("text", "build_args", "mapping", "expected"),
    [case[1:] for case in REWRITE_CASES],
    ids=[case[0] for case in REWRITE_CASES],
)
def test_rewrite(
    text: str, build_args: dict[str, str], mapping: dict[str, str], expected: str
) -> None:
    assert dockerfile.rewrite(text, dockerfile.parse(text, build_args), mapping) == expected


@pytest.mark.parametrize(
    ("uses_from", "mapping", "message"),
    [
        (
            "FROM node:20\n",
            {"node:20": "x/node:20"},
            "line 1: 'node:20' is not where parse found it",
        ),
        (
            "FROM ruby:3.3\n",
            {"ruby:3.3": "ecr/ruby:3.3 AS x"},
            "cannot write 'ecr/ruby:3.3 AS x' as an image reference",
        ),
        ("FROM ruby:3.3\n", {"ruby:3.3": ""}, "cannot write '' as an image reference"),
        ("FROM ruby:3.3\n", {"ruby:3.3": "${X}"}, "cannot write '${X}' as an image reference"),
        (
            "FROM ruby:3.3\n",
            {"ruby:3.3": "build"},
            "cannot write 'build' as an image reference: it reads as a stage",
        ),
        (
            "FROM ruby:3.3\n",
            {"ruby:3.3": "0"},
            "cannot write '0' as an image reference: it reads as a stage",
        ),
    ],
)
def test_rewrite_refuses(uses_from: str, mapping: dict[str, str], message: str) -> None:
    uses = dockerfile.parse(uses_from)
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        dockerfile.rewrite("FROM ruby:3.3\n", uses, mapping)


BUILD_ARG_CASES: list[tuple[str, str, dict[str, str], dict[str, str], list[tuple[str, str]]]] = [
    (
        "whole-ARG images only, each once, in order",
        "ARG BASE=ruby:3.3\nARG NODE=node:20\nARG V=3.20\n"
        "FROM ${NODE} AS n\nFROM $BASE\nFROM alpine:$V\nFROM $NODE\n",
        {},
        {
            "ruby:3.3": f"{ECR}/library/ruby:3.3",
            "node:20": f"{ECR}/library/node:20",
            "alpine:3.20": f"{ECR}/library/alpine:3.20",
        },
        [("NODE", f"{ECR}/library/node:20"), ("BASE", f"{ECR}/library/ruby:3.3")],
    ),
    (
        "unmapped images, scratch and stages give no build arg",
        "ARG BASE=ruby:3.3\nARG EMPTY=scratch\nARG STAGE=b\n"
        "FROM $BASE AS b\nFROM $EMPTY\nFROM $STAGE\n",
        {},
        {"scratch": "x/scratch:1", "b": "x/b:1"},
        [],
    ),
    (
        "the value follows the build args",
        "ARG BASE=ruby:3.3\nFROM $BASE\n",
        {"BASE": "ruby:3.4"},
        {"ruby:3.4": f"{ECR}/library/ruby:3.4"},
        [("BASE", f"{ECR}/library/ruby:3.4")],
    ),
    (
        "the syntax directive's image goes in BUILDKIT_SYNTAX, without the frontend's arguments",
        "# syntax=example/frontend:2 --debug\nFROM ruby\n",
        {},
        {"example/frontend:2": f"{ECR}/example/frontend:2", "ruby": f"{ECR}/library/ruby"},
        [("BUILDKIT_SYNTAX", f"{ECR}/example/frontend:2")],
    ),
]


@pytest.mark.parametrize(
    ("text", "build_args", "mapping", "expected"),
    [case[1:] for case in BUILD_ARG_CASES],
    ids=[case[0] for case in BUILD_ARG_CASES],
)
def test_build_args(
    text: str,
    build_args: dict[str, str],
    mapping: dict[str, str],
    expected: list[tuple[str, str]],
) -> None:
    assert dockerfile.build_args(dockerfile.parse(text, build_args), mapping) == expected


ERROR_CASES: list[tuple[str, dict[str, str], str]] = [
    ("FROM\n", {}, "line 1: FROM without an image"),
    ("# c\n\nFROM --platform=linux/amd64\n", {}, "line 3: FROM without an image"),
    (
        "FROM ruby:3.3 builder\n",
        {},
        "line 1: FROM takes '<image> [AS <name>]', not 'ruby:3.3 builder'",
    ),
    ("FROM ruby:3.3 AS\n", {}, "line 1: FROM takes '<image> [AS <name>]', not 'ruby:3.3 AS'"),
    (
        "FROM ruby AS b c\n",
        {},
        "line 1: FROM takes '<image> [AS <name>]', not 'ruby AS b c'",
    ),
    (
        "FROM ruby AS 1st\n",
        {},
        "line 1: bad stage name '1st' (a letter, then letters, digits, '.', '_' or '-')",
    ),
    (
        "FROM ruby:3.3 AS base # a comment only at the start of a line\n",
        {},
        "line 1: FROM takes '<image> [AS <name>]', not "
        "'ruby:3.3 AS base # a comment only at the start of a line'",
    ),
    ("FROM --pull ruby\n", {}, "line 1: unknown FROM flag --pull (only --platform)"),
    (
        "FROM --platform linux/amd64 ruby\n",
        {},
        "line 1: FROM --platform needs a value: --platform=<p>",
    ),
    ("FROM --platform=a --platform=b ruby\n", {}, "line 1: FROM has --platform twice"),
    ("ARG X\n\nFROM ruby\nFROM $X\n", {}, "line 4: unknown variable $X has no default"),
    ("ARG X\nFROM ruby:${X}-slim\n", {}, "line 2: unknown variable $X has no default"),
    ("ARG X\nFROM ruby:${X%.*}\n", {}, "line 2: unknown variable $X has no default"),
    ("ARG X\nFROM \\\n  \\\n  $X\n", {}, "line 2: unknown variable $X has no default"),
    ("ARG X\r\n\r\nFROM $X\r\n", {"Y": "1"}, "line 3: unknown variable $X has no default"),
    ("FROM $X\n", {"X": "ruby"}, "line 1: unknown variable $X: no ARG X before the first FROM"),
    (
        "FROM ruby\nARG X=1\nFROM $X\n",
        {},
        "line 3: unknown variable $X: no ARG X before the first FROM",
    ),
    (
        "FROM tool:$TARGETARCH\n",
        {},
        "line 1: unknown variable $TARGETARCH is set by the builder: pass its value in build_args",
    ),
    (
        "ARG TARGETOS\nFROM tool:${TARGETOS:-linux}\n",
        {},
        "line 2: unknown variable $TARGETOS is set by the builder: pass its value in build_args",
    ),
    (
        "ARG A\nARG B=x$A\nFROM $B\n",
        {},
        "line 3: unknown variable $A has no default (in the default of ARG B on line 2)",
    ),
    ("ARG X\nFROM ${X:+ruby}\n", {}, "line 2: FROM image '${X:+ruby}' is empty once expanded"),
    ("ARG V\nFROM ruby:${V:?set_V_to_a_Ruby_version}\n", {}, "line 2: V: set_V_to_a_Ruby_version"),
    ("ARG V\nFROM ruby:${V?}\n", {}, "line 2: V: is not allowed to be unset"),
    ("ARG V=\nFROM ruby:${V:?}\n", {}, "line 2: V: must not be empty"),
    ("ARG V=a\nFROM ${V/a/b}\n", {}, "line 2: unsupported substitution ${V/...}"),
    ("ARG V=a\nFROM ${V:#a}\n", {}, "line 2: unsupported substitution ${V:#...}"),
    ("FROM ruby:${\n", {}, "line 1: missing '}' in 'ruby:${'"),
    ("FROM ruby:${V:-3.3\n", {}, "line 1: missing '}' in 'ruby:${V:-3.3'"),
    ("FROM ruby:${}\n", {}, "line 1: bad substitution in 'ruby:${}'"),
    ("FROM 'ruby\n", {}, 'line 1: unterminated single quote in "\'ruby"'),
    ('FROM "ruby\n', {}, "line 1: unterminated double quote in '\"ruby'"),
    ("# escape=x\nFROM ruby\n", {}, "line 1: bad escape directive 'x' (use ` or \\)"),
    ("# escape=`\n# escape=\\\nFROM ruby\n", {}, "line 2: a second escape parser directive"),
    (
        "# syntax=docker/dockerfile:1\n# SYNTAX=other/frontend:1\nFROM ruby\n",
        {},
        "line 2: a second syntax parser directive",
    ),
    ("ARG\nFROM ruby\n", {}, "line 1: ARG without a name"),
    ("ARG A=1 =2\nFROM ruby\n", {}, "line 1: ARG without a name: '=2'"),
    ("FROM ruby\nRUN <<EOF\necho hi\n", {}, "line 2: here-document <<EOF has no end"),
    (
        '{"syntax": "example/frontend:2"}\n',
        {},
        'line 1: a JSON file with a "syntax" key is built by that frontend '
        "('example/frontend:2'), not read as a Dockerfile",
    ),
]


@pytest.mark.parametrize(("text", "build_args", "message"), ERROR_CASES)
def test_errors(text: str, build_args: dict[str, str], message: str) -> None:
    with pytest.raises(DockerfileError) as caught:
        dockerfile.parse(text, build_args)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


def test_an_unused_broken_arg_is_no_error() -> None:
    text = "ARG A\nARG B=$A\nARG C=${D:?needed}\nFROM ruby:3.3\n"
    assert dockerfile.images(dockerfile.parse(text)) == ["ruby:3.3"]
