"""mirror.dockerfile: the images a Dockerfile pulls, read as BuildKit reads them, and rewritten
byte for byte."""

from __future__ import annotations

import re

import pytest

from mirror import dockerfile
from mirror.dockerfile import DockerfileError, ImageUse
from tests.stage import Stage

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

COPY_CASES: list[tuple[str, str, dict[str, str], list[Row]]] = [
    (
        "COPY --from: an image, a stage name in any case, a stage index, scratch, the context",
        "FROM golang:1.22 AS build\n"
        "FROM alpine:3.20\n"
        "COPY --from=busybox:1.36 /bin/busybox /bin/\n"
        "COPY --from=Build /out /out\n"
        "COPY --from=0 /out /out\n"
        "COPY --from=scratch / /\n"
        "COPY --from= . /src\n"
        "copy --link --from=nginx:1.27 --chmod=644 /etc/nginx /etc/nginx\n",
        {},
        [
            ("from", 1, "golang:1.22", "golang:1.22", None),
            ("from", 2, "alpine:3.20", "alpine:3.20", None),
            ("copy", 3, "busybox:1.36", "busybox:1.36", None),
            ("copy", 8, "nginx:1.27", "nginx:1.27", None),
        ],
    ),
    (
        "a stage defined later is still a stage, for COPY (BuildKit then refuses to build it)",
        "FROM alpine\nCOPY --from=later / /\nFROM alpine AS later\n",
        {},
        [("from", 1, "alpine", "alpine", None), ("from", 3, "alpine", "alpine", None)],
    ),
    (
        "quotes around the value are removed (raw is inside them), escapes applied",
        "FROM alpine\n"
        'COPY --from="busybox:1.36" / /\n'
        "COPY --'from'=nginx:1.27 / /\n"
        "COPY --from=redis\\:7 / /\n",
        {},
        [
            ("from", 1, "alpine", "alpine", None),
            ("copy", 2, "busybox:1.36", "busybox:1.36", None),
            ("copy", 3, "nginx:1.27", "nginx:1.27", None),
            ("copy", 4, "redis:7", "redis\\:7", None),
        ],
    ),
    (
        "--from inside a continued line, CRLF",
        "FROM alpine\r\nCOPY --chown=0:0 \\\r\n  --from=busybox:1.36 \\\r\n  / /\r\n",
        {},
        [("from", 1, "alpine", "alpine", None), ("copy", 2, "busybox:1.36", "busybox:1.36", None)],
    ),
    (
        "only flags (starting with --, before the arguments) count; ADD has no --from",
        "FROM alpine\n"
        "COPY a --from=busybox /\n"
        "COPY -- --from=busybox /\n"
        "COPY '--from=busybox' / /\n"
        "ADD --from=busybox / /\n",
        {},
        [("from", 1, "alpine", "alpine", None)],
    ),
    (
        "stage indexes count FROMs, then each image or scratch a COPY or mount names",
        "FROM alpine\nCOPY --from=busybox / /\nRUN --mount=target=/x true\nCOPY --from=2 / /\n",
        {},
        [("from", 1, "alpine", "alpine", None), ("copy", 2, "busybox", "busybox", None)],
    ),
]

MOUNT_CASES: list[tuple[str, str, dict[str, str], list[Row]]] = [
    (
        "RUN --mount from=: every type but secret; a stage in any case; no from; scratch",
        "FROM golang:1.22 AS build\n"
        "RUN --mount=type=bind,from=tool:3,source=/t,target=/t \\\n"
        "    --mount=type=cache,target=/root/.cache,from=alpine:3.20 \\\n"
        "    --mount=from=python:3.12,target=/py \\\n"
        "    --mount=type=tmpfs,target=/tmp,from=debian:12 \\\n"
        "    --network=none go build\n"
        "RUN --mount=from=BUILD,target=/b --mount=type=cache,target=/c --mount=from=scratch true\n",
        {},
        [
            ("from", 1, "golang:1.22", "golang:1.22", None),
            ("mount", 2, "tool:3", "tool:3", None),
            ("mount", 2, "alpine:3.20", "alpine:3.20", None),
            ("mount", 2, "python:3.12", "python:3.12", None),
            ("mount", 2, "debian:12", "debian:12", None),
        ],
    ),
    (
        "CSV: keys in any case, quoted fields, quotes around the flag, the last from= wins",
        "FROM alpine\n"
        "RUN --mount=type=bind,FROM=tool:3,target=/t true\n"
        "RUN --mount='type=bind,\"from=tool:4\",target=/t' true\n"
        'RUN --mount="type=bind,from=tool:5,target=/t" true\n'
        "RUN --mount=from=tool:6,from=tool:7 true\n"
        'RUN --mount=type=bind,from="tool:8",target=/t true\n',
        {},
        [
            ("from", 1, "alpine", "alpine", None),
            ("mount", 2, "tool:3", "tool:3", None),
            ("mount", 3, "tool:4", "tool:4", None),
            ("mount", 4, "tool:5", "tool:5", None),
            ("mount", 5, "tool:7", "tool:7", None),
            ("mount", 6, "tool:8", "tool:8", None),
        ],
    ),
    (
        "a $ as the last character of from= is no variable",
        "FROM alpine\nRUN --mount=from=tool$ true\n",
        {},
        [("from", 1, "alpine", "alpine", None), ("mount", 2, "tool$", "tool$", None)],
    ),
]

ONBUILD_CASES: list[tuple[str, str, dict[str, str], list[Row]]] = [
    (
        "ONBUILD triggers of a stage another stage builds on run in this build, once",
        "FROM alpine AS base\n"
        "ONBUILD COPY --from=busybox:1.36 /bin/busybox /bin/\n"
        "ONBUILD RUN --mount=from=tool:3,target=/t --mount=from=base,target=/b true\n"
        "FROM base AS one\n"
        "FROM base AS two\n",
        {},
        [
            ("from", 1, "alpine", "alpine", None),
            ("copy", 2, "busybox:1.36", "busybox:1.36", None),
            ("mount", 3, "tool:3", "tool:3", None),
        ],
    ),
    (
        "triggers for other builds, where --from may name their stages, are not followed",
        "FROM alpine\nONBUILD COPY --from=build /app /app\nONBUILD RUN --mount=from=$X true\n",
        {},
        [("from", 1, "alpine", "alpine", None)],
    ),
]

HEREDOC_CASES: list[tuple[str, str, dict[str, str], list[Row]]] = [
    (
        "COPY --from= and # syntax= inside here-documents are text",
        "FROM alpine\n"
        "COPY <<EOF /Dockerfile\n"
        "# syntax=docker/dockerfile:1\n"
        "COPY --from=busybox / /\n"
        "RUN --mount=from=tool,target=/t true\n"
        "EOF\n"
        "RUN <<'SH'\n"
        "docker build --build-arg X=COPY --from=busybox .\n"
        "SH\n",
        {},
        [("from", 1, "alpine", "alpine", None)],
    ),
]

PARSE_CASES = FROM_CASES + SYNTAX_CASES + COPY_CASES + MOUNT_CASES + ONBUILD_CASES + HEREDOC_CASES


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
    text = "ARG B=ruby:3.3\r\nFROM --platform=$P \\\r\n   $B AS x\r\nCOPY --from='a:1' / /\r\n"
    from_use, copy_use = dockerfile.parse(text)
    assert (from_use.start, from_use.end) == (text.index("$B"), text.index("$B") + 2)
    assert (copy_use.start, copy_use.end) == (text.index("a:1"), text.index("a:1") + 3)


def test_an_image_split_by_a_continuation_spans_it() -> None:
    text = "FROM ruby:3.\\\n3 AS x\nCOPY --from=busy\\\nbox:1 / /\n"
    from_use, copy_use = dockerfile.parse(text)
    assert (from_use.image, from_use.raw) == ("ruby:3.3", "ruby:3.\\\n3")
    assert (copy_use.image, copy_use.raw) == ("busybox:1", "busy\\\nbox:1")


def test_images_are_deduplicated_in_order_of_first_use() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"
        "ARG NODE=node:20\n"
        "FROM ruby:3.3 AS a\n"
        "COPY --from=node:20 / /\n"
        "FROM $NODE\n"
        "FROM scratch\n"
        "FROM a\n"
        "RUN --mount=from=ruby:3.3,target=/r --mount=from=busybox,target=/b true\n"
        "FROM ruby:3.3\n"
        "FROM alpine:3.20\n"
    )
    assert dockerfile.images(dockerfile.parse(text)) == [
        "docker/dockerfile:1",
        "ruby:3.3",
        "node:20",
        "busybox",
        "alpine:3.20",
    ]


# --- One Dockerfile with every kind of image reference ----------------------------------------

ALL_KINDS = (
    "# syntax=docker/dockerfile:1.7\r\n"
    "# check=error=true\r\n"
    "ARG GO=golang:1.22\r\n"
    "ARG ALPINE_VERSION=3.20\r\n"
    "FROM --platform=$BUILDPLATFORM ${GO} AS build\r\n"
    "COPY --from=busybox:1.36 /bin/busybox /usr/local/bin/\r\n"
    "RUN --mount=type=cache,target=/root/.cache/go-build \\\r\n"
    "    --mount=type=bind,from=golangci/golangci-lint:v1.59,source=/usr/bin/golangci-lint,"
    "target=/usr/bin/golangci-lint \\\r\n"
    "    go build -o /out/app .\r\n"
    "COPY <<EOF /src/Dockerfile.example\r\n"
    "# syntax=not/pulled:1\r\n"
    "COPY --from=not-pulled:2 / /\r\n"
    "EOF\r\n"
    "FROM alpine:${ALPINE_VERSION} AS runtime\r\n"
    "COPY --from=build /out/app /usr/local/bin/app\r\n"
    "COPY --from=0 /src/Dockerfile.example /\r\n"
    "RUN --mount=type=cache,from=alpine:3.20,target=/var/cache/apk \\\r\n"
    "    --mount=from=BUILD,source=/out,target=/mnt \\\r\n"
    '    --mount="type=bind,from=node:20-alpine,source=/usr/local/bin/node,target=/node" \\\r\n'
    "    apk add ca-certificates\r\n"
    "FROM runtime\r\n"
    'COPY --from="nginx:1.27" /etc/nginx/mime.types /etc/\r\n'
)


def ecr(image: str) -> str:
    """Where mirror puts a Docker Hub image: official images under library/."""
    return f"{ECR}/{image}" if "/" in image else f"{ECR}/library/{image}"


def test_a_dockerfile_with_every_kind_of_image_reference() -> None:
    uses = dockerfile.parse(ALL_KINDS)
    assert rows(uses) == [
        ("syntax", 1, "docker/dockerfile:1.7", "docker/dockerfile:1.7", "BUILDKIT_SYNTAX"),
        ("from", 5, "golang:1.22", "${GO}", "GO"),
        ("copy", 6, "busybox:1.36", "busybox:1.36", None),
        (
            "mount",
            7,
            "golangci/golangci-lint:v1.59",
            "golangci/golangci-lint:v1.59",
            None,
        ),
        ("from", 14, "alpine:3.20", "alpine:${ALPINE_VERSION}", None),
        ("mount", 17, "alpine:3.20", "alpine:3.20", None),
        ("mount", 17, "node:20-alpine", "node:20-alpine", None),
        ("copy", 22, "nginx:1.27", "nginx:1.27", None),
    ]
    images = dockerfile.images(uses)
    assert images == [
        "docker/dockerfile:1.7",
        "golang:1.22",
        "busybox:1.36",
        "golangci/golangci-lint:v1.59",
        "alpine:3.20",
        "node:20-alpine",
        "nginx:1.27",
    ]
    mapping = {image: ecr(image) for image in images}
    assert dockerfile.rewrite(ALL_KINDS, uses, mapping) == (
        f"# syntax={ECR}/docker/dockerfile:1.7\r\n"
        "# check=error=true\r\n"
        "ARG GO=golang:1.22\r\n"
        "ARG ALPINE_VERSION=3.20\r\n"
        f"FROM --platform=$BUILDPLATFORM {ECR}/library/golang:1.22 AS build\r\n"
        f"COPY --from={ECR}/library/busybox:1.36 /bin/busybox /usr/local/bin/\r\n"
        "RUN --mount=type=cache,target=/root/.cache/go-build \\\r\n"
        f"    --mount=type=bind,from={ECR}/golangci/golangci-lint:v1.59,"
        "source=/usr/bin/golangci-lint,target=/usr/bin/golangci-lint \\\r\n"
        "    go build -o /out/app .\r\n"
        "COPY <<EOF /src/Dockerfile.example\r\n"
        "# syntax=not/pulled:1\r\n"
        "COPY --from=not-pulled:2 / /\r\n"
        "EOF\r\n"
        f"FROM {ECR}/library/alpine:3.20 AS runtime\r\n"
        "COPY --from=build /out/app /usr/local/bin/app\r\n"
        "COPY --from=0 /src/Dockerfile.example /\r\n"
        f"RUN --mount=type=cache,from={ECR}/library/alpine:3.20,target=/var/cache/apk \\\r\n"
        "    --mount=from=BUILD,source=/out,target=/mnt \\\r\n"
        f'    --mount="type=bind,from={ECR}/library/node:20-alpine,'
        'source=/usr/local/bin/node,target=/node" \\\r\n'
        "    apk add ca-certificates\r\n"
        "FROM runtime\r\n"
        f'COPY --from="{ECR}/library/nginx:1.27" /etc/nginx/mime.types /etc/\r\n'
    )
    assert dockerfile.build_args(uses, mapping) == [
        ("BUILDKIT_SYNTAX", f"{ECR}/docker/dockerfile:1.7"),
        ("GO", f"{ECR}/library/golang:1.22"),
    ]


def test_the_rewritten_dockerfile_pulls_only_the_mapped_references() -> None:
    uses = dockerfile.parse(ALL_KINDS)
    mapping = {image: ecr(image) for image in dockerfile.images(uses)}
    rewritten = dockerfile.parse(dockerfile.rewrite(ALL_KINDS, uses, mapping))
    assert dockerfile.images(rewritten) == list(mapping.values())


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
        "FROM ruby:3.3\nFROM alpine:3.20\nFROM ruby:3.3 AS again\nCOPY --from=ruby:3.3 / /\n",
        {},
        {"ruby:3.3": f"{ECR}/library/ruby:3.3"},
        f"FROM {ECR}/library/ruby:3.3\nFROM alpine:3.20\nFROM {ECR}/library/ruby:3.3 AS again\n"
        f"COPY --from={ECR}/library/ruby:3.3 / /\n",
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
        "escape directive file, with an escape in --from",
        "# escape=`\nFROM mcr.microsoft.com/windows/servercore:ltsc2022 `\n  AS build\n"
        "COPY --from=mcr.microsoft.com/windows/nanoserver`:ltsc2022 / /\n",
        {},
        {
            "mcr.microsoft.com/windows/servercore:ltsc2022": f"{ECR}/windows/servercore:ltsc2022",
            "mcr.microsoft.com/windows/nanoserver:ltsc2022": f"{ECR}/windows/nanoserver:ltsc2022",
        },
        f"# escape=`\nFROM {ECR}/windows/servercore:ltsc2022 `\n  AS build\n"
        f"COPY --from={ECR}/windows/nanoserver:ltsc2022 / /\n",
    ),
    (
        "here-document bodies are not touched",
        "COPY <<EOF /Dockerfile\nFROM ruby:3.3\nCOPY --from=ruby:3.3 / /\nEOF\nFROM ruby:3.3\n",
        {},
        {"ruby:3.3": f"{ECR}/library/ruby:3.3"},
        "COPY <<EOF /Dockerfile\nFROM ruby:3.3\nCOPY --from=ruby:3.3 / /\nEOF\n"
        f"FROM {ECR}/library/ruby:3.3\n",
    ),
    (
        "the syntax directive: only its image; the frontend's arguments stay",
        "#syntax = example/frontend:2 --debug\nFROM ruby\n",
        {},
        {"example/frontend:2": f"{ECR}/example/frontend:2"},
        f"#syntax = {ECR}/example/frontend:2 --debug\nFROM ruby\n",
    ),
    (
        "quotes that open or close inside the image are taken in with it",
        "FROM a\n"
        'COPY --from=busy"box" / /\n'
        'COPY --from="busy"box / /\n'
        'COPY --"from=busybox" / /\n'
        'RUN --mount=type=bind,from=busy"box",target=/x true\n',
        {},
        {"busybox": f"{ECR}/library/busybox"},
        "FROM a\n"
        f"COPY --from={ECR}/library/busybox / /\n"
        f"COPY --from={ECR}/library/busybox / /\n"
        f'COPY --"from={ECR}/library/busybox" / /\n'
        f"RUN --mount=type=bind,from={ECR}/library/busybox,target=/x true\n",
    ),
    (
        "a CSV field in quotes inside a flag in quotes",
        "FROM a\nRUN --mount='type=bind,\"from=tool:4\",target=/t' true\n",
        {},
        {"tool:4": f"{ECR}/library/tool:4"},
        f"FROM a\nRUN --mount='type=bind,\"from={ECR}/library/tool:4\",target=/t' true\n",
    ),
    (
        "an ONBUILD trigger that runs in this build",
        "FROM alpine AS base\nONBUILD COPY --from=busybox / /\nFROM base\n",
        {},
        {"busybox": f"{ECR}/library/busybox", "alpine": f"{ECR}/library/alpine"},
        f"FROM {ECR}/library/alpine AS base\nONBUILD COPY --from={ECR}/library/busybox / /\n"
        "FROM base\n",
    ),
    (
        "an empty mapping changes nothing",
        "# syntax=docker/dockerfile:1\r\nFROM ruby:3.3\r\nCOPY --from=busybox / /\r\n",
        {},
        {},
        "# syntax=docker/dockerfile:1\r\nFROM ruby:3.3\r\nCOPY --from=busybox / /\r\n",
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
        "# syntax=example/frontend:2 --debug\nFROM ruby\nCOPY --from=busybox / /\n",
        {},
        {
            "example/frontend:2": f"{ECR}/example/frontend:2",
            "ruby": f"{ECR}/library/ruby",
            "busybox": f"{ECR}/library/busybox",
        },
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


VARIABLE_ADVICE = "FROM $NAME AS name, with ARG NAME before the first FROM"
NO_FROM = "line 1: no FROM instruction: not a Dockerfile (BuildKit builds none without one)"
UNQUOTABLE = "its quotes leave no place to write another image; quote the whole image or nothing"

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
    # COPY --from
    (
        "ARG TOOL=busybox\nFROM alpine\nCOPY --from=$TOOL / /\n",
        {},
        "line 3: COPY --from=$TOOL: BuildKit expands no variables or quotes in --from; "
        f"copy from a stage instead ({VARIABLE_ADVICE})",
    ),
    (
        "FROM alpine\nCOPY --from=${TOOL:-busybox} / /\n",
        {},
        "line 2: COPY --from=${TOOL:-busybox}: BuildKit expands no variables or quotes in "
        f"--from; copy from a stage instead ({VARIABLE_ADVICE})",
    ),
    (
        "FROM alpine\nCOPY --from='\"busybox\"' / /\n",
        {},
        'line 2: COPY --from="busybox": BuildKit expands no variables or quotes in --from; '
        f"copy from a stage instead ({VARIABLE_ADVICE})",
    ),
    ("FROM alpine\nCOPY --from=a --from=b / /\n", {}, "line 2: COPY has --from twice"),
    (
        "FROM alpine\nCOPY --from busybox / /\n",
        {},
        "line 2: COPY --from needs a value: --from=<image>",
    ),
    ("FROM alpine\nCOPY --from=1 / /\n", {}, "line 2: COPY --from=1: there is no stage 1"),
    ("FROM alpine\nCOPY --from=-1 / /\n", {}, "line 2: COPY --from=-1: there is no stage -1"),
    (
        "FROM alpine\nCOPY --from=busybox / /\nRUN --mount=target=/x true\nCOPY --from=3 / /\n",
        {},
        "line 4: COPY --from=3: there is no stage 3",
    ),
    # RUN --mount
    (
        "ARG TOOL=tool:3\nFROM alpine\nRUN --mount=from=$TOOL,target=/t true\n",
        {},
        "line 3: RUN --mount from=$TOOL: BuildKit expands no variables in a mount's from; "
        f"mount a stage instead ({VARIABLE_ADVICE})",
    ),
    (
        "FROM alpine\nRUN --mount=from=0,target=/t true\n",
        {},
        "line 2: RUN --mount from=0: a mount takes a stage name, not an index "
        "(BuildKit would pull an image named '0')",
    ),
    (
        "FROM alpine\nRUN --mount true\n",
        {},
        "line 2: RUN --mount needs a value: --mount=<opts>",
    ),
    ("FROM alpine\nRUN --mount= true\n", {}, "line 2: RUN --mount=: no mount options"),
    (
        'FROM alpine\nRUN --mount=type=bind,from=a\\"b true\n',
        {},
        'line 2: RUN --mount=type=bind,from=a"b: a bare " in a field not in quotes',
    ),
    (
        "FROM alpine\nRUN --mount='type=bind,\"from=tool' true\n",
        {},
        'line 2: RUN --mount=type=bind,"from=tool: a " opens a field and none closes it',
    ),
    (
        "FROM alpine\nRUN --mount='\"from=tool\"x' true\n",
        {},
        'line 2: RUN --mount="from=tool"x: a " inside a field in quotes (write "" for one)',
    ),
    (
        'FROM alpine\nRUN --mount=type=bind,"from=busy"box,target=/x true\n',
        {},
        f"line 2: RUN --mount from=busybox: {UNQUOTABLE}",
    ),
    # ONBUILD triggers that run here are checked like the rest
    (
        "FROM alpine AS base\nONBUILD COPY --from=$X / /\nFROM base\n",
        {},
        "line 2: COPY --from=$X: BuildKit expands no variables or quotes in --from; "
        f"copy from a stage instead ({VARIABLE_ADVICE})",
    ),
    # Not a Dockerfile at all: an empty file, comments, ARGs and RUNs only, some other file
    ("", {}, NO_FROM),
    ("# nothing here\n\n", {}, NO_FROM),
    ("ARG BASE=ruby\nRUN echo hi\n", {}, NO_FROM),
    ("\x7fELF\x02\x01\x01\x00\x00\x00", {}, NO_FROM),
    ("# syntax=docker/dockerfile:1\nfrom_here = 1\n", {}, NO_FROM),
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


# --- End to end: `mirror ensure --dockerfile` on the stand-ins --------------------------------

EVERY_KIND = """\
# syntax={repo}:frontend
ARG BASE={repo}:base
FROM ${{BASE}} AS build
COPY --from={repo}:tool /bin/tool /bin/
RUN --mount=type=cache,target=/root/.cache \\
    --mount=type=bind,from={repo}:lint,target=/lint true
FROM build
COPY --from=build /out /out
"""


def test_ensure_mirrors_and_rewrites_every_kind_of_image(stage: Stage) -> None:
    for tag in ("frontend", "base", "tool", "lint"):
        stage.push(tag, seed=tag)
    stage.config()
    text = EVERY_KIND.format(repo=stage.repo)
    (stage.tmp / "Dockerfile").write_text(text)
    path = str(stage.tmp / "Dockerfile")
    destination = f"{stage.dest.host}/{stage.dest_repo()}"

    refs = stage.mirror("ensure", "--dockerfile", path)
    assert refs.code == 0, refs.stderr
    assert refs.stdout.splitlines() == [
        f"{destination}:{tag}" for tag in ("frontend", "base", "tool", "lint")
    ]
    assert refs.actions() == ["copied"] * 4

    rewritten = stage.mirror("ensure", "--dockerfile", path, "--format", "dockerfile")
    assert rewritten.code == 0, rewritten.stderr
    assert rewritten.stdout == (
        f"# syntax={destination}:frontend\n"
        f"ARG BASE={stage.repo}:base\n"
        f"FROM {destination}:base AS build\n"
        f"COPY --from={destination}:tool /bin/tool /bin/\n"
        "RUN --mount=type=cache,target=/root/.cache \\\n"
        f"    --mount=type=bind,from={destination}:lint,target=/lint true\n"
        "FROM build\n"
        "COPY --from=build /out /out\n"
    )

    args = stage.mirror("ensure", "--dockerfile", path, "--format", "build-args")
    assert args.code == 0, args.stderr
    assert args.stdout == (
        f"--build-arg BUILDKIT_SYNTAX={destination}:frontend --build-arg BASE={destination}:base\n"
    )
