"""mirror.composefile: the images a Docker Compose file pulls, read as `docker compose` reads
them, and the file rewritten with only those values changed."""

from __future__ import annotations

import pytest

from mirror import composefile
from mirror.composefile import ComposeError, ImageUse

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dockerhub"

Row = tuple[str, int, str, str, str]


def rows(uses: list[ImageUse]) -> list[Row]:
    """(path, line, image, raw, style) per use."""
    return [(use.path, use.line, use.image, use.raw, use.style) for use in uses]


def to_ecr(uses: list[ImageUse]) -> dict[str, str]:
    return {image: f"{ECR}/{image}" for image in composefile.images(uses)}


# A CI file as teams write them: comments, an extension field with an anchor, merge keys,
# every quoting style, a flow mapping over two lines, profiles, a service that builds, a
# service extending it, and an image shared through an alias.
CI_COMPOSE = """\
# Services for the integration tests (docker compose -f ci.yaml up -d)
x-postgres: &postgres
  image: "postgres:${PG_VERSION:-16}"   # major version only
  environment:
    POSTGRES_PASSWORD: test
  healthcheck: {test: ["CMD", "pg_isready"], interval: 2s}

services:
  db:
    <<: *postgres
  db-replica:
    <<: *postgres
    profiles: [replica]
  cache: {image: 'redis:7-alpine',
          ports: ["6379:6379"]}
  app:
    build:
      context: .
      dockerfile: Dockerfile
    image: registry.example.com/team/app:${GIT_SHA:-dev}   # what the build is tagged
  app-worker:
    extends: app
    command: ["worker"]
    image: registry.example.com/team/worker:dev
  search:
    image: &elastic docker.elastic.co/elasticsearch/elasticsearch:8.14.1
  search-2:
    image: *elastic
  mailhog:
    image: mailhog/mailhog@sha256:8d76a3d4ffa32a3661311944007a415332c4bb855657f4f6c57996405c009bea
  localstack:
    image: localhost:5000/localstack/localstack:3
"""


def test_ci_compose_file_images() -> None:
    uses = composefile.parse(CI_COMPOSE, {})
    assert rows(uses) == [
        ("services.db.image", 3, "postgres:16", '"postgres:${PG_VERSION:-16}"', "double"),
        ("services.db-replica.image", 3, "postgres:16", '"postgres:${PG_VERSION:-16}"', "double"),
        ("services.cache.image", 14, "redis:7-alpine", "'redis:7-alpine'", "single"),
        (
            "services.search.image",
            26,
            "docker.elastic.co/elasticsearch/elasticsearch:8.14.1",
            "docker.elastic.co/elasticsearch/elasticsearch:8.14.1",
            "plain",
        ),
        (
            "services.search-2.image",
            26,
            "docker.elastic.co/elasticsearch/elasticsearch:8.14.1",
            "docker.elastic.co/elasticsearch/elasticsearch:8.14.1",
            "plain",
        ),
        (
            "services.mailhog.image",
            30,
            "mailhog/mailhog@sha256:8d76a3d4ffa32a3661311944007a415332c4bb855657f4f6c57996405c009bea",
            "mailhog/mailhog@sha256:8d76a3d4ffa32a3661311944007a415332c4bb855657f4f6c57996405c009bea",
            "plain",
        ),
        (
            "services.localstack.image",
            32,
            "localhost:5000/localstack/localstack:3",
            "localhost:5000/localstack/localstack:3",
            "plain",
        ),
    ]
    assert composefile.images(uses) == [
        "postgres:16",
        "redis:7-alpine",
        "docker.elastic.co/elasticsearch/elasticsearch:8.14.1",
        "mailhog/mailhog@sha256:8d76a3d4ffa32a3661311944007a415332c4bb855657f4f6c57996405c009bea",
        "localhost:5000/localstack/localstack:3",
    ]


def test_ci_compose_file_rewritten_byte_for_byte() -> None:
    uses = composefile.parse(CI_COMPOSE, {})
    digest = "sha256:8d76a3d4ffa32a3661311944007a415332c4bb855657f4f6c57996405c009bea"
    assert composefile.rewrite(CI_COMPOSE, uses, to_ecr(uses)) == (
        CI_COMPOSE.replace(
            '"postgres:${PG_VERSION:-16}"', f'"{ECR}/postgres:16"'
        )  # one value: both services
        .replace("'redis:7-alpine'", f"'{ECR}/redis:7-alpine'")
        .replace(
            "&elastic docker.elastic.co/", f"&elastic {ECR}/docker.elastic.co/"
        )  # the alias follows
        .replace(f"image: mailhog/mailhog@{digest}", f"image: {ECR}/mailhog/mailhog@{digest}")
        .replace("image: localhost:5000/", f"image: {ECR}/localhost:5000/")
    )


def test_only_mapped_images_change() -> None:
    uses = composefile.parse(CI_COMPOSE, {})
    result = composefile.rewrite(CI_COMPOSE, uses, {"redis:7-alpine": f"{ECR}/redis:7-alpine"})
    assert result == CI_COMPOSE.replace("'redis:7-alpine'", f"'{ECR}/redis:7-alpine'")


def test_crlf_bom_and_comments_stay() -> None:
    text = (
        "\ufeff# Windows editor\r\n"
        "services:\r\n"
        "  web:\r\n"
        "    image: nginx:1.27   # front\r\n"
        "    ports:\r\n"
        '      - "8080:80"\r\n'
    )
    uses = composefile.parse(text)
    assert rows(uses) == [("services.web.image", 4, "nginx:1.27", "nginx:1.27", "plain")]
    assert composefile.rewrite(text, uses, to_ecr(uses)) == text.replace(
        "image: nginx:1.27", f"image: {ECR}/nginx:1.27"
    )


def test_block_scalar_becomes_double_quoted_and_keeps_its_line_breaks() -> None:
    text = "services:\r\n  web:\r\n    image: >-\r\n      nginx:1.27\r\n    ports: [80]\r\n"
    uses = composefile.parse(text)
    assert rows(uses) == [
        ("services.web.image", 3, "nginx:1.27", ">-\r\n      nginx:1.27\r\n", "block")
    ]
    assert composefile.rewrite(text, uses, to_ecr(uses)) == (
        f'services:\r\n  web:\r\n    image: "{ECR}/nginx:1.27"\r\n    ports: [80]\r\n'
    )


def test_merge_key_lists_and_written_keys_win() -> None:
    text = """\
x-base: &base
  image: alpine:3.19
  restart: always
x-newer: &newer
  image: alpine:3.20
services:
  first-listed-wins:
    <<: [*newer, *base]
  written-wins:
    <<: *base
    image: alpine:edge
"""
    assert rows(composefile.parse(text)) == [
        ("services.first-listed-wins.image", 5, "alpine:3.20", "alpine:3.20", "plain"),
        ("services.written-wins.image", 11, "alpine:edge", "alpine:edge", "plain"),
    ]


def test_a_merged_build_makes_the_service_build() -> None:
    text = """\
x-built: &built
  build: ./app
services:
  app:
    <<: *built
    image: myorg/app:dev
"""
    assert composefile.parse(text) == []


def test_services_that_build_are_left_out_also_through_extends() -> None:
    text = """\
services:
  base:
    build: .
    image: myorg/base
  child:
    extends:
      service: base
    image: myorg/child
  grandchild:
    extends: child
    image: myorg/grandchild
  plain:
    extends: {service: db}
  db:
    image: postgres:16-alpine
"""
    assert rows(composefile.parse(text)) == [
        ("services.db.image", 15, "postgres:16-alpine", "postgres:16-alpine", "plain"),
    ]


def test_later_documents_override_earlier_ones() -> None:
    text = """\
services:
  web:
    image: nginx:1.25
  db:
    image: postgres:15
  worker:
    image: myorg/worker
---
services:
  web:
    image: nginx:1.27
  worker:
    build: ./worker
  db:
    image: !reset null
"""
    assert rows(composefile.parse(text)) == [
        ("services.web.image", 11, "nginx:1.27", "nginx:1.27", "plain"),
    ]


def test_override_tag_and_reset_service() -> None:
    text = """\
services:
  web:
    image: !override nginx:1.27
  gone:
    image: redis:7
---
services:
  gone: !reset {}
"""
    assert rows(composefile.parse(text)) == [
        ("services.web.image", 3, "nginx:1.27", "nginx:1.27", "plain"),
    ]


def test_empty_documents_and_include_only_files() -> None:
    notes: list[str] = []
    assert composefile.parse("include:\n  - other/compose.yaml\n", notes=notes) == []
    assert notes == [
        "line 2: include: is not followed: the images of the files it includes are not "
        "mirrored; run ensure --compose on each of them too"
    ]
    text = "---\n# nothing here\n---\nservices:\n  web:\n    image: nginx\n"
    assert rows(composefile.parse(text)) == [("services.web.image", 6, "nginx", "nginx", "plain")]


# --- variables ---------------------------------------------------------------------------------

VARIABLE_CASES: list[tuple[str, dict[str, str], str]] = [
    ("postgres:${PG}", {"PG": "16"}, "postgres:16"),
    ("postgres:$PG", {"PG": "16"}, "postgres:16"),
    ("$REGISTRY/app:1", {"REGISTRY": "ghcr.io/org"}, "ghcr.io/org/app:1"),
    ("postgres:${PG:-16}", {}, "postgres:16"),
    ("postgres:${PG:-16}", {"PG": ""}, "postgres:16"),
    ("postgres:${PG-16}", {"PG": "15"}, "postgres:15"),
    ("postgres:16${SUFFIX-}", {}, "postgres:16"),
    ("postgres:16${VARIANT:+-$VARIANT}", {"VARIANT": "alpine"}, "postgres:16-alpine"),
    ("postgres:16${VARIANT:+-$VARIANT}", {}, "postgres:16"),
    ("postgres:16${VARIANT+-alpine}", {"VARIANT": ""}, "postgres:16-alpine"),
    ("${IMAGE:-postgres:${PG:-16}}", {"PG": "15"}, "postgres:15"),
    ("postgres:${PG:?set PG}", {"PG": "16"}, "postgres:16"),
    ("${REG:-docker.io}/library/ruby:3.3", {}, "docker.io/library/ruby:3.3"),
    ("ruby:3.3$$", {}, "ruby:3.3$"),  # $$ is a $ (a reference check refuses it later)
    ("ruby:3.3$", {}, "ruby:3.3$"),
]


@pytest.mark.parametrize(("written", "variables", "image"), VARIABLE_CASES)
def test_variables_as_compose_fills_them_in(
    written: str, variables: dict[str, str], image: str
) -> None:
    text = f"services:\n  svc:\n    image: '{written}'\n"
    uses = composefile.parse(text, variables)
    assert [use.image for use in uses] == [image]
    assert composefile.rewrite(text, uses, {image: f"{ECR}/x:1"}) == (
        f"services:\n  svc:\n    image: '{ECR}/x:1'\n"
    )


def test_environment_wins_over_dotenv() -> None:
    variables = composefile.variables({"PG": "15", "HOME": "/root"}, "PG=16\nREDIS=7\n")
    assert variables == {"PG": "15", "REDIS": "7", "HOME": "/root"}
    assert composefile.variables({"A": "1"}) == {"A": "1"}
    text = "services:\n  db:\n    image: postgres:${PG:-14}\n  cache:\n    image: redis:$REDIS\n"
    assert composefile.images(composefile.parse(text, variables)) == ["postgres:15", "redis:7"]


DOTENV = (
    "\ufeff# versions for CI\r\n"
    "export PG=16\r\n"
    'REDIS_TAG = "7-alpine"   # quoted, spaces around =\r\n'
    "NGINX: 1.27\r\n"
    "EMPTY=\r\n"
    "SINGLE='${NOT_EXPANDED}'\r\n"
    'DOUBLE="${PG}-bookworm\\tend"\r\n'
    "INHERITED\r\n"
    "NOT_INHERITED\r\n"
    "COMMENTED=abc #note\r\n"
    "HASH=abc#def\r\n"
    "DEFAULTED=${MISSING:-fallback}\r\n"
    'DOLLAR="cost \\$5"\r\n'
    "   \r\n"
    "LATER=${PG}.1\r\n"
)


def test_dotenv_as_compose_reads_it() -> None:
    assert composefile.dotenv(DOTENV, {"INHERITED": "from-env"}) == {
        "PG": "16",
        "REDIS_TAG": "7-alpine",
        "NGINX": "1.27",
        "EMPTY": "",
        "SINGLE": "${NOT_EXPANDED}",
        "DOUBLE": "16-bookworm\tend",
        "INHERITED": "from-env",
        "COMMENTED": "abc",
        "HASH": "abc#def",
        "DEFAULTED": "fallback",
        "DOLLAR": "cost $5",
        "LATER": "16.1",
    }
    # The environment is looked at before the lines above (compose-go's lookup order).
    assert composefile.dotenv("A=1\nB=${A}\n", {"A": "env"}) == {"A": "1", "B": "env"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('A="two\nlines"\n', '.env line 1: A: a " opens the value and none closes it on this line'),
        ("A='x' y\n", ".env line 1: A: text after the closing ': 'y'"),
        ("not a line\n", ".env line 1: not KEY=VALUE: 'not a line'"),
        (
            "OK=1\nA=${UNSET}\n",
            ".env line 2: A: variable UNSET is not set (in the environment or .env) and has no "
            "default (docker compose would put an empty string in its place): set UNSET, or "
            "write ${UNSET:-default}",
        ),
        ("A=${X:?need X}\n", ".env line 1: A: required variable X is missing a value: need X"),
    ],
)
def test_dotenv_errors(text: str, message: str) -> None:
    with pytest.raises(ComposeError) as caught:
        composefile.dotenv(text, {})
    assert str(caught.value) == message


# --- errors --------------------------------------------------------------------------------------

ERROR_CASES: list[tuple[str, str, str]] = [
    (
        "not a Compose file",
        "version: '3.8'\nvolumes: {}\n",
        "no services: key in any document: not a Compose file",
    ),
    (
        "services as a list",
        "services:\n  - web\n",
        "line 2: services: expected a mapping, found a list",
    ),
    (
        "a service with nothing",
        "services:\n  web:\n",
        "line 2: services.web: expected a mapping, found nothing",
    ),
    (
        "an image YAML reads as a number",
        "services:\n  web:\n    image: 1.5\n",
        "line 3: services.web.image: expected text, found a number (1.5): write it in quotes "
        "if it is text",
    ),
    (
        "an empty image",
        "services:\n  web:\n    image:\n",
        "line 3: services.web.image: expected text, found nothing",
    ),
    (
        "an image given twice",
        "services:\n  web:\n    image: nginx:1.25\n    image: nginx:1.27\n",
        "line 4: services.web.image: the key appears twice, on lines 3 and 4",
    ),
    (
        "a variable without a value",
        "services:\n  db:\n    image: postgres:${PG_VERSION}\n",
        "line 3: services.db.image: variable PG_VERSION is not set (in the environment or .env) "
        "and has no default (docker compose would put an empty string in its place): set "
        "PG_VERSION, or write ${PG_VERSION:-default}",
    ),
    (
        "a bare $VAR without a value",
        "services:\n  db:\n    image: $IMAGE\n",
        "line 3: services.db.image: variable IMAGE is not set (in the environment or .env) and "
        "has no default (docker compose would put an empty string in its place): set IMAGE, or "
        "write ${IMAGE:-default}",
    ),
    (
        "a required variable",
        "services:\n  db:\n    image: postgres:${PG:?set PG to the major version}\n",
        "line 3: services.db.image: required variable PG is missing a value: set PG to the "
        "major version",
    ),
    (
        "no closing brace",
        "services:\n  db:\n    image: postgres:${PG\n",
        "line 3: services.db.image: invalid variable reference in 'postgres:${PG': no closing }",
    ),
    (
        "an empty reference",
        "services:\n  db:\n    image: postgres:${}\n",
        "line 3: services.db.image: invalid variable reference ${}",
    ),
    (
        "a bad operator",
        "services:\n  db:\n    image: 'postgres:${PG/1/2}'\n",
        "line 3: services.db.image: invalid variable reference ${PG/1/2}",
    ),
    (
        "empty once filled in",
        "services:\n  db:\n    image: ${IMG:-}\n",
        "line 3: services.db.image: '${IMG:-}' is empty once its variables are filled in",
    ),
    (
        "an extends cycle",
        "services:\n  a:\n    extends: b\n    image: x\n  b:\n    extends: a\n",
        "line 6: services.b.extends: extends makes a cycle: a -> b -> a",
    ),
    (
        "extends a missing service",
        "services:\n  a:\n    extends: base\n    image: x\n",
        "line 3: services.a.extends: extends base, which is no service of this file",
    ),
    (
        "extends another file",
        "services:\n  web:\n    extends:\n      file: common.yml\n      service: webapp\n"
        "    image: nginx\n",
        "line 4: services.web.extends: service web extends webapp of another file, which mirror "
        "does not read: whether its image: is pulled or built depends on that file; give the "
        "service its own build: (if it builds) or mirror the image by name",
    ),
    (
        "extends without service",
        "services:\n  a:\n    extends: {file: x.yml}\n    image: x\n",
        "line 3: services.a.extends: no service: key (the service to extend)",
    ),
    (
        "a YAML syntax error",
        "services:\n  web:\n    image: nginx\n   ports: [80]\n",
        "line 4, column 4: YAML syntax error: expected <block end>, but found "
        "'<block mapping start>'",
    ),
    (
        "a tab",
        "services:\n\tweb:\n",
        "line 2, column 1: YAML syntax error: found character '\\t' that cannot start any token",
    ),
    (
        "the second document",
        "services:\n  a:\n    image: x\n---\nservices:\n  b:\n    image: [1]\n",
        "document 2, line 7: services.b.image: expected text, found a list",
    ),
    (
        "a key with a space",
        'services:\n  "my app":\n    image: 1\n',
        'line 3: services["my app"].image: expected text, found a number (1): write it in '
        "quotes if it is text",
    ),
    (
        "a merge of itself",
        "services:\n  web: &w\n    <<: *w\n",
        "line 2: services.web: a merge key (<<) that merges the mapping into itself",
    ),
]


@pytest.mark.parametrize(
    ("name", "text", "message"), ERROR_CASES, ids=[case[0] for case in ERROR_CASES]
)
def test_errors_are_one_line_naming_document_line_and_key(
    name: str, text: str, message: str
) -> None:
    with pytest.raises(ComposeError) as caught:
        composefile.parse(text, {})
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_rewrite_refuses_what_cannot_be_written() -> None:
    text = "services:\n  web:\n    image: nginx\n"
    uses = composefile.parse(text)
    with pytest.raises(ValueError, match="cannot write"):
        composefile.rewrite(text, uses, {"nginx": "has space"})
    with pytest.raises(ValueError, match="is not where it was found"):
        composefile.rewrite("services:\n  web:\n    image: redis\n", uses, {"nginx": "x"})
    # a plain value that YAML would read as something else is caught by reading back
    with pytest.raises(ValueError, match="would not read back"):
        composefile.rewrite(text, uses, {"nginx": "123"})


def test_a_service_extending_another_file_is_noted_only_without_an_image_of_its_own() -> None:
    text = (
        "services:\n"
        "  web:\n    extends: {file: common.yaml, service: webapp}\n"
        "  worker:\n    extends: {file: common.yaml, service: webapp}\n    build: .\n"
        "  db:\n    extends: {service: base}\n"
        "  base:\n    image: postgres:16\n"
    )
    notes: list[str] = []
    found = composefile.parse(text, notes=notes)
    assert [use.image for use in found] == ["postgres:16"]
    assert notes == [
        "line 3: service web extends webapp of another file, which mirror does not read: the "
        "image it pulls, if any, is named there; run ensure --compose on that file too"
    ]


def test_a_service_overridden_whole_in_a_later_document_keeps_nothing_of_the_earlier() -> None:
    """`web: !override {...}` replaces the service: its earlier build: no longer builds the
    image the later document names, which is then pulled."""
    text = (
        "services:\n  web:\n    build: .\n    image: app:dev\n"
        "---\n"
        "services:\n  web: !override\n    image: nginx:1.27\n"
    )
    assert [use.image for use in composefile.parse(text)] == ["nginx:1.27"]
    merged = text.replace("web: !override", "web:")
    assert composefile.parse(merged) == []  # merged: it still builds, so nothing is pulled
