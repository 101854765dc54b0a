"""`ensure --compose` and `ensure --manifest` through the `mirror` command: the files as
users write them (a CI job's Compose file, `helm template` output), their images mirrored
like every other `ensure` input (stale-if-error, pins), each file printed back pointed at ECR
byte for byte, and bad files refused with one line."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from mirror.reference import pin_tag
from tests.stage import Run, Stage
from tests.standins.misbehaving import refusing

# A CI job's test services, as people write them: a shared block merged in, a variable with a
# default, a quoted image, a pin, a service that builds (its image: names what it builds),
# one extending it (builds too), one extending a pulled service with its own image from .env,
# a debug profile, comments. CRLF line endings (a file edited on Windows).
COMPOSE = """\
# Services for the integration tests (docker compose -f ci/compose.yaml up -d)
x-defaults: &defaults
  restart: unless-stopped
  environment:
    TZ: UTC

services:
  db:
    <<: *defaults
    image: "REPO:${PG_VERSION:-16}"   # postgres
    healthcheck:
      test: ["CMD", "pg_isready"]
  cache:
    image: 'REPO:7-alpine@PIN'
  app:
    build:
      context: .
    image: example/app:dev   # what compose builds, not pulled
  worker:
    extends: app
    command: ["worker"]
  proxy:
    extends:
      service: cache
    image: REPO:${PROXY_TAG}
  tools:
    image: ${TOOLS_IMAGE}
    profiles: [debug]
""".replace("\n", "\r\n")

DOTENV = """\
# read by docker compose from beside the Compose file
export PROXY_TAG=proxy
TOOLS_IMAGE="REPO:tools"  # quoted, with a comment
"""

# `helm template` output: `# Source:` comments, `---` with a comment and with trailing
# spaces, an empty document, a document end marker, a Service (no pods), a Deployment with
# an init container, a CronJob, and a List (kubectl get -o yaml) with an ephemeral container
# and an image the Deployment also runs.
MANIFEST = """\
---
# Source: web/templates/service.yaml
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports:
    - port: 80
---TRAILING
# Source: web/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: "REPO:migrate"
      containers:
        - name: web
          image: REPO:web
          ports:
            - containerPort: 8080
--- # Source: web/templates/cronjob.yaml
apiVersion: batch/v1
kind: CronJob
metadata:
  name: report
spec:
  schedule: "17 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
            - name: report
              image: REPO:job
---
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: debug-web}
    spec:
      containers: [{name: web, image: 'REPO:web'}]
      ephemeralContainers:
        - {name: debugger, image: REPO:debug}
...
""".replace("TRAILING", "   ")  # a marker with trailing spaces


def write(stage: Stage, name: str, text: str) -> Path:
    path = stage.tmp / name
    path.write_bytes(text.replace("REPO", stage.repo).encode())
    return path


def raw_run(stage: Stage, *args: str) -> tuple[int, bytes, str]:
    """`mirror ARGS` with stdout as bytes (CRLF as it is printed)."""
    process = stage.popen(*args, text=False)
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stdout, stderr.decode()


@pytest.fixture
def compose_stage(stage: Stage) -> tuple[Stage, Path, str]:
    for tag in ("16", "proxy", "tools"):
        stage.push(tag, seed=tag)
    pin = stage.push("7-alpine", seed="cache")
    stage.config()
    write(stage, ".env", DOTENV)
    return stage, write(stage, "compose.yaml", COMPOSE.replace("PIN", pin)), pin


def test_compose_images_mirrored_and_printed_in_order(
    compose_stage: tuple[Stage, Path, str],
) -> None:
    stage, path, pin = compose_stage
    run = stage.mirror("ensure", "--compose", str(path))
    assert run.code == 0, run.stderr
    ecr = f"{stage.dest.host}/{stage.dest_repo()}"
    assert run.stdout.splitlines() == [
        f"{ecr}:16",
        f"{ecr}:7-alpine@{pin}",
        f"{ecr}:proxy",
        f"{ecr}:tools",
    ]
    assert run.actions() == ["copied"] * 4  # example/app:dev is built: never asked for
    assert stage.dest_digest("16") == stage.source_digest("16")
    assert stage.dest_digest(pin_tag(pin)) == pin
    assert stage.dest_digest("7-alpine") is None  # a pin moves no tag


def test_compose_rewritten_byte_for_byte(compose_stage: tuple[Stage, Path, str]) -> None:
    stage, path, pin = compose_stage
    code, stdout, stderr = raw_run(stage, "ensure", "--compose", str(path), "--format", "compose")
    assert code == 0, stderr
    ecr = f"{stage.dest.host}/{stage.dest_repo()}"
    written = path.read_bytes().decode()
    expected = (
        written.replace(f'"{stage.repo}:${{PG_VERSION:-16}}"', f'"{ecr}:16"')
        .replace(f"'{stage.repo}:7-alpine@{pin}'", f"'{ecr}:7-alpine@{pin}'")
        .replace(f"{stage.repo}:${{PROXY_TAG}}", f"{ecr}:proxy")
        .replace("${TOOLS_IMAGE}", f"{ecr}:tools")
    )
    assert expected.count("\r\n") == written.count("\r\n") > 20
    assert stdout.decode() == expected
    stage.hub.reset_counts()
    again = stage.mirror("ensure", "--compose", str(path), "--format", "compose")
    assert (again.code, again.actions()) == (0, ["up-to-date"] * 4)
    assert stage.hub.counts.manifest_get == 0  # unchanged: no pull


def test_the_environment_wins_over_dotenv_as_docker_compose_has_it(
    compose_stage: tuple[Stage, Path, str],
) -> None:
    stage, path, _ = compose_stage
    stage.push("other", seed="other")
    run = stage.mirror("ensure", "--compose", str(path), PROXY_TAG="other", PG_VERSION="proxy")
    assert run.code == 0, run.stderr
    ecr = f"{stage.dest.host}/{stage.dest_repo()}"
    assert run.stdout.splitlines()[0] == f"{ecr}:proxy"  # PG_VERSION over its default
    assert run.stdout.splitlines()[2] == f"{ecr}:other"  # PROXY_TAG over .env


@pytest.fixture
def manifest_stage(stage: Stage) -> tuple[Stage, Path]:
    for tag in ("migrate", "web", "job", "debug"):
        stage.push(tag, seed=tag)
    stage.config()
    return stage, write(stage, "rendered.yaml", MANIFEST)


def test_manifest_images_of_every_document(manifest_stage: tuple[Stage, Path]) -> None:
    stage, path = manifest_stage
    run = stage.mirror("ensure", "--manifest", str(path))
    assert run.code == 0, run.stderr
    ecr = f"{stage.dest.host}/{stage.dest_repo()}"
    assert run.stdout.splitlines() == [f"{ecr}:{tag}" for tag in ("migrate", "web", "job", "debug")]
    assert run.actions() == ["copied"] * 4
    assert stage.dest_digest("debug") == stage.source_digest("debug")


def test_manifest_rewritten_byte_for_byte(manifest_stage: tuple[Stage, Path]) -> None:
    stage, path = manifest_stage
    run = stage.mirror("ensure", "--manifest", str(path), "--format", "manifest")
    assert run.code == 0, run.stderr
    ecr = f"{stage.dest.host}/{stage.dest_repo()}"
    expected = path.read_text()
    for tag in ("migrate", "web", "job", "debug"):
        expected = expected.replace(f"{stage.repo}:{tag}", f"{ecr}:{tag}")
    assert run.stdout == expected
    assert run.stdout.count(ecr) == 5  # web twice: in the Deployment and in the List's Pod


def test_files_and_images_together_print_refs(
    compose_stage: tuple[Stage, Path, str],
) -> None:
    stage, compose, pin = compose_stage
    stage.push("web", seed="web")
    pod = "kind: Pod\napiVersion: v1\nspec:\n  containers:\n  - {name: web, image: REPO:web}\n"
    manifest = write(stage, "pod.yaml", pod + "  - {name: db, image: 'REPO:16'}\n")
    dockerfile = write(stage, "Dockerfile", "FROM REPO:tools\n")
    run = stage.mirror(
        "ensure", f"{stage.repo}:web", "--dockerfile", str(dockerfile), "--compose",
        str(compose), "--manifest", str(manifest),
    )  # fmt: skip
    assert run.code == 0, run.stderr
    ecr = f"{stage.dest.host}/{stage.dest_repo()}"
    assert run.stdout.splitlines() == [
        f"{ecr}:web",  # the IMAGE, then the Dockerfile's, the Compose file's, the manifest's
        f"{ecr}:tools",
        f"{ecr}:16",
        f"{ecr}:7-alpine@{pin}",
        f"{ecr}:proxy",
    ]
    assert sorted(run.actions()) == ["copied"] * 5  # each image once


@pytest.mark.parametrize("kind", ["compose", "manifest"])
def test_a_source_that_is_down_serves_ecrs_copy_in_the_file(stage: Stage, kind: str) -> None:
    digest = stage.push("16", seed="old")
    stage.config()
    if kind == "compose":
        path = write(stage, "compose.yaml", "services:\n  db:\n    image: REPO:16  # pg\n")
    else:
        path = write(stage, "pod.yaml", "kind: Pod\napiVersion: v1\nspec:\n  containers:\n"
                     "  - name: db\n    image: REPO:16  # pg\n")  # fmt: skip
    first = stage.mirror("ensure", f"--{kind}", str(path))
    assert (first.code, first.actions()) == (0, ["copied"]), first.stderr
    stage.push("16", seed="new")  # upstream moved the tag; then the source goes down
    with refusing() as down:
        stage.config(source={"registry": down, "tls_verify": False})
        run = stage.mirror("ensure", f"--{kind}", str(path), "--format", kind)
    ecr = f"{stage.dest.host}/{stage.dest_repo()}"
    assert (run.code, run.actions()) == (0, ["stale"]), run.stderr
    assert run.stdout == path.read_text().replace(f"{stage.repo}:16", f"{ecr}:16")
    assert f"{down}: connection refused" in run.error
    assert stage.dest_digest("16") == digest


# --- bad files: one line, exit 2, nothing asked of any registry ----------------------------------


def one_line(stage: Stage, *args: str) -> str:
    run = stage.mirror(*args)
    assert run.code == 2, run.stderr
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr
    lines = run.error.splitlines()
    assert len(lines) == 1, run.stderr
    assert stage.hub.counts.manifest_head == 0
    return lines[0]


BAD_COMPOSE_FILES = [
    (
        "services:\n  db:\n    image: a\n    image: b\n",
        "line 4: services.db.image: the key appears twice, on lines 3 and 4",
    ),
    (
        "services:\n  db:\n    image: 1.5\n",
        "line 3: services.db.image: expected text, found a number (1.5): write it in quotes "
        "if it is text",
    ),
    (
        "services:\n  db:\n    image: [postgres\n",
        "line 4, column 1: YAML syntax error: expected ',' or ']', but got '<stream end>'",
    ),
    (
        "services:\n  db:\n    image: postgres:${PG_VERSION}\n",
        "line 3: services.db.image: variable PG_VERSION is not set (in the environment or "
        ".env) and has no default (docker compose would put an empty string in its place): "
        "set PG_VERSION, or write ${PG_VERSION:-default}",
    ),
    (
        "services:\n  db:\n    image: postgres:${PG:?set PG to the version}\n",
        "line 3: services.db.image: required variable PG is missing a value: set PG to the version",
    ),
    (
        "services:\n  db:\n    extends: {file: base.yaml, service: db}\n    image: pg:16\n",
        "line 3: services.db.extends: service db extends db of another file, which mirror "
        "does not read: whether its image: is pulled or built depends on that file; give "
        "the service its own build: (if it builds) or mirror the image by name",
    ),
    ("version: '3'\n", "no services: key in any document: not a Compose file"),
    (
        "services:\n  db:\n    image: Postgres:16\n",
        "line 3: services.db.image: 'Postgres:16': bad image name 'Postgres' (path parts "
        "are lowercase letters and digits, joined by '.', '_', '__' or '-')",
    ),
]
BAD_MANIFESTS = [
    (
        "apiVersion: v1\nmetadata: {name: x}\n",
        "line 1: the document: no kind: not a Kubernetes object",
    ),
    (
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n",
        "line 5: spec.containers[0].image: no image: the container runs nothing",
    ),
    (
        "---\n# Source: web/templates/pod.yaml\napiVersion: v1\nkind: Pod\nspec:\n"
        "  containers:\n  - name: a\n    image: {{ .Values.image }}\n",
        "line 8: spec.containers[0].image: an unrendered Helm template: render the chart "
        "first (helm template)",
    ),
    (
        "apiVersion: v1\nkind: Service\n---\napiVersion: v1\nkind: ConfigMap\n---\n"
        "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n"
        "      containers:\n      - name: web\n        image: 5\n",
        "document 3, line 14: spec.template.spec.containers[0].image: expected text, found "
        "a number (5): write it in quotes if it is text",
    ),
    (
        "kind: Pod\napiVersion: v1\nspec:\n  containers:\n  - name: a\n    image: a\n"
        "    image: b\n",
        "line 7: spec.containers[0].image: the key appears twice, on lines 6 and 7",
    ),
    (
        "kind: Pod\napiVersion: v1\nspec: {containers: [{name: a, image: scratch}]}\n",
        "line 3: spec.containers[0].image: 'scratch': scratch is Docker's empty base, not an "
        "image to mirror",
    ),
]


@pytest.mark.parametrize(
    ("option", "text", "message"),
    [("--compose", *bad) for bad in BAD_COMPOSE_FILES]
    + [("--manifest", *bad) for bad in BAD_MANIFESTS],
)
def test_a_bad_file_is_one_line(stage: Stage, option: str, text: str, message: str) -> None:
    stage.config()
    path = write(stage, "file.yaml", text)
    assert one_line(stage, "ensure", option, str(path)) == f"mirror: {path}: {message}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A=1\nthis is not a variable\n", "line 2: not KEY=VALUE: 'this is not a variable'"),
        ('TAG="16\n', 'line 1: TAG: a " opens the value and none closes it on this line'),
    ],
)
def test_a_bad_dotenv_file_is_one_line_naming_it(stage: Stage, text: str, message: str) -> None:
    stage.config()
    path = write(stage, "compose.yaml", "services:\n  db:\n    image: pg:${TAG:-16}\n")
    env = write(stage, ".env", text)
    assert one_line(stage, "ensure", "--compose", str(path)) == f"mirror: {env}: {message}"


@pytest.mark.parametrize(
    ("option", "name", "what"),
    [
        ("--compose", "compose.yaml", "a Compose file"),
        ("--manifest", "rendered.yaml", "a manifest"),
        ("--compose", ".env", "a .env file"),
    ],
)
def test_files_that_are_not_regular_are_refused_unopened(
    stage: Stage, option: str, name: str, what: str
) -> None:
    stage.config()
    device = stage.tmp / "driverless"
    os.mknod(device, stat.S_IFCHR | 0o600, os.makedev(250, 77))  # opening it would fail
    fifo = stage.tmp / "fifo"
    os.mkfifo(fifo)
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(stage.tmp / "socket"))
    compose = write(stage, "services.yaml", "services: {db: {image: pg}}\n")  # for .env
    path = stage.tmp / name
    with listening:
        for target in (fifo, device, stage.tmp / "socket", Path("/dev/zero")):
            path.unlink(missing_ok=True)
            path.symlink_to(target)
            argv = ("ensure", option, str(compose if name == ".env" else path))
            assert one_line(stage, *argv) == f"mirror: {path}: not a regular file ({what} is one)"


@pytest.mark.parametrize(
    ("option", "name", "size", "message"),
    [
        ("--compose", "compose.yaml", 1 << 20, "over 1 MiB: not read (a Compose file is a few kB)"),
        (
            "--manifest",
            "rendered.yaml",
            16 << 20,
            "over 16 MiB: not read (helm template of a big chart prints about 1 MB)",
        ),
    ],
)
def test_files_over_their_limit_are_not_read(
    stage: Stage, option: str, name: str, size: int, message: str
) -> None:
    stage.config()
    path = stage.tmp / name
    with path.open("wb") as handle:
        handle.write(b"# padding\n")
        handle.truncate(size + 1)  # sparse: no need to write it all
    assert one_line(stage, "ensure", option, str(path)) == f"mirror: {path}: {message}"


@pytest.mark.parametrize("option", ["--compose", "--manifest"])
def test_text_that_is_not_utf8_is_one_line(stage: Stage, option: str) -> None:
    stage.config()
    path = stage.tmp / "file.yaml"
    path.write_bytes(b"# caf\xe9\nservices: {db: {image: pg}}\n")
    assert one_line(stage, "ensure", option, str(path)) == (
        f"mirror: {path}: line 1: byte 0xe9 is not UTF-8 (YAML files are UTF-8 text)"
    )
    path.write_bytes("services: {db: {image: pg}}\n".encode("utf-16"))
    assert one_line(stage, "ensure", option, str(path)) == (
        f"mirror: {path}: UTF-16 text; mirror reads YAML files as UTF-8"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--compose", "a.yaml", "--compose", "b.yaml"],
            "--compose given 2 times: give one (the result is one Compose file); name a second "
            "one's images in another ensure",
        ),
        (["--format", "compose"], "--format compose needs --compose"),
        (["--format", "manifest", "--compose", "a.yaml"], "--format manifest needs --manifest"),
        (
            ["--format", "compose", "--compose", "a.yaml", "--manifest", "b.yaml"],
            "--format compose prints a Compose file: --manifest cannot come with it (their "
            "images would be mirrored, not printed); name them in another ensure, or use "
            "--format refs",
        ),
        (
            ["ruby:3", "--format", "dockerfile", "--dockerfile", "D", "--compose", "a.yaml"],
            "--format dockerfile prints a Dockerfile: IMAGE arguments and --compose cannot "
            "come with it (their images would be mirrored, not printed); name them in another "
            "ensure, or use --format refs",
        ),
        (
            ["--build-arg", "A=1", "--compose", "a.yaml"],
            "--build-arg needs --dockerfile: build args are for its ARGs",
        ),
        ([], "name at least one IMAGE, or a --dockerfile, --compose or --manifest"),
    ],
)
def test_combinations_that_are_refused(stage: Stage, args: list[str], message: str) -> None:
    stage.config()
    assert one_line(stage, "ensure", *args) == f"mirror: {message}"


def test_files_that_pull_nothing_print_as_they_are(stage: Stage) -> None:
    stage.config()
    path = write(stage, "compose.yaml", "services:\n  app:\n    build: .\n    image: me/app\n")
    run: Run = stage.mirror("ensure", "--compose", str(path), "--format", "compose")
    assert (run.code, run.stdout) == (0, path.read_text()), run.stderr
    refs = stage.mirror("ensure", "--compose", str(path))
    assert (refs.code, refs.stdout) == (0, "")


ECR_HOST = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"  # an ECR host a file already names


@pytest.mark.parametrize("kind", ["compose", "manifest"])
def test_ensure_on_its_own_output_is_a_no_op(
    compose_stage: tuple[Stage, Path, str], manifest_stage: tuple[Stage, Path], kind: str
) -> None:
    stage, path = (compose_stage[0], compose_stage[1]) if kind == "compose" else manifest_stage
    first = stage.mirror("ensure", f"--{kind}", str(path), "--format", kind)
    assert first.code == 0, first.stderr
    pointed = write(stage, f"ecr.{kind}.yaml", first.stdout + f"# {ECR_HOST}\n")
    refs = stage.mirror("ensure", f"--{kind}", str(pointed))
    assert refs.code == 0, refs.stderr
    stage.hub.reset_counts()
    stage.dest.reset_counts()
    again = stage.mirror("ensure", f"--{kind}", str(pointed), "--format", kind)
    elsewhere = f"{ECR_HOST}/dockerhub/library/pg:16"
    listed = stage.mirror("ensure", *refs.stdout.split(), elsewhere)
    assert (again.code, again.stdout) == (0, pointed.read_text()), again.stderr
    assert (listed.code, listed.stdout) == (0, f"{refs.stdout}{elsewhere}\n")
    assert stage.hub.counts.requests == [] and stage.dest.counts.requests == []


def test_a_compose_service_on_ecr_is_left_as_it_is(stage: Stage) -> None:
    stage.push("16", seed="16")
    stage.config()
    ecr = f"{stage.dest.host}/{stage.dest_repo()}"
    text = f"services:\n  app:\n    image: {ECR_HOST}/dockerhub/library/postgres:16\n"
    path = write(stage, "compose.yaml", text + "  db:\n    image: REPO:16\n")
    run = stage.mirror("ensure", "--compose", str(path), "--format", "compose")
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    assert run.stdout == path.read_text().replace(f"{stage.repo}:16", f"{ecr}:16")


# What Compose builds or never pulls: a service whose image another service builds (here
# through an anchor the building service writes), pull_policy never and build.
NOT_PULLED = """\
services:
  app:
    build: .
    image: &app REPO:app
  app-tests:
    image: *app
  app-again:
    image: "REPO:${APP_TAG:-app}"
  local:
    image: REPO:local
    pull_policy: never
  rebuilt:
    image: REPO:rebuilt
    pull_policy: ${POLICY:-build}
  db:
    image: REPO:16
    pull_policy: missing
"""


IMAGE_VOLUMES = """\
services:
  app:
    build: .
    volumes:
      - ./data:/data
      - type: image
        source: "REPO:models"   # mounted from an image
        target: /models
        image: {subpath: weights}
      - {type: bind, source: ./cache, target: /cache}
"""


def compose_one_copied(stage: Stage, text: str, tag: str) -> tuple[Run, Path]:
    """`ensure --compose --format compose` on `text` (REPO: the source repository) whose one
    pulled image is REPO:`tag`: that image copied, the file printed with it pointed at ECR."""
    stage.push(tag, seed=tag)
    stage.config()
    path = write(stage, "compose.yaml", text)
    run = stage.mirror("ensure", "--compose", str(path), "--format", "compose")
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    ecr = f"{stage.dest.host}/{stage.dest_repo()}"
    assert run.stdout == path.read_text().replace(f"{stage.repo}:{tag}", f"{ecr}:{tag}")
    return run, path


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        pytest.param(NOT_PULLED, "16", id="only-what-compose-pulls"),
        pytest.param(IMAGE_VOLUMES, "models", id="image-volumes"),
    ],
)
def test_compose_pulls_these_and_only_these(stage: Stage, text: str, tag: str) -> None:
    compose_one_copied(stage, text, tag)
    assert stage.hub.counts.manifest_get == 1  # that one only: nothing built is asked for
    assert stage.dest_digest(tag) == stage.source_digest(tag)


INCLUDES_AND_EXTENDS = """\
include:
  - other/compose.yaml
services:
  db:
    image: REPO:16
  web:
    extends:
      file: common.yaml
      service: webapp
"""


def test_compose_parts_in_other_files_are_named_not_silently_skipped(stage: Stage) -> None:
    """`include:` and a service extending another file's service bring images mirror does not
    read: the images it can read are mirrored, and one line each says what was left."""
    run, path = compose_one_copied(stage, INCLUDES_AND_EXTENDS, "16")
    notes = [line for line in run.stderr.splitlines() if str(path) in line]
    assert len(notes) == 2, run.stderr
    assert notes[0].endswith(
        f"{path}: line 2: include: is not followed: the images of the files it includes are "
        "not mirrored; run ensure --compose on each of them too"
    )
    assert notes[1].endswith(
        f"{path}: line 8: service web extends webapp of another file, which mirror does not "
        "read: the image it pulls, if any, is named there; run ensure --compose on that file too"
    )
    only = write(stage, "only.yaml", "include:\n  - a.yaml\n  - b.yaml\n")
    nothing = stage.mirror("ensure", "--compose", str(only), "--format", "compose")
    assert (nothing.code, nothing.stdout) == (0, only.read_text()), nothing.stderr
    assert f"{only}: line 2: include: is not followed" in nothing.stderr
