"""Input as users really write it, found by trying to break mirror: one line and exit 2 where
it is wrong, the right thing where it is right, and never a secret or a lost file."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import boto3
import pytest

from mirror import aws, cli, config, dockerfile
from mirror.errors import ConfigError, SetupError, hide_passwords
from mirror.http import check_proxies
from mirror.plan import plan_names
from tests.stage import Stage

PLATFORMS = ("linux/amd64", "linux/arm64")


# --- secrets never shown -------------------------------------------------------------------------


def test_a_failing_credential_process_is_one_line_without_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = tmp_path / "aws-config"
    settings.write_text(
        "[profile p]\ncredential_process = /bin/sh -c 'echo LEAKED-SECRET >&2; exit 1'\n"
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(settings))
    monkeypatch.setenv("AWS_PROFILE", "p")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # boto3 caches the first one it made
    with pytest.raises(Exception) as caught:
        aws.Ecr(region="us-east-1")
    assert getattr(caught.value, "exit_code", None) == 2
    assert "LEAKED-SECRET" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_bad_endpoint_variable_is_a_setup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", "not a url")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # boto3 caches the first one it made
    with pytest.raises(SetupError, match="cannot set up the AWS ecr client: "):
        aws.Ecr(region="us-east-1")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "socks5://u:Pr0xyPw@h:1080",
            "$HTTPS_PROXY: 'socks5://u:***@h:1080' is a socks5 proxy: mirror's own requests "
            "use http:// and https:// proxies only",
        ),
        (
            "http://u:Pr0xyPw@h:99999",
            "$HTTPS_PROXY: 'http://u:***@h:99999' is not a proxy URL (Port out of range 0-65535)",
        ),
        ("http://h:notaport", "$HTTPS_PROXY: 'http://h:notaport' is not a proxy URL"),
    ],
)
def test_proxy_values_mirror_cannot_use_are_refused_up_front(value: str, message: str) -> None:
    with pytest.raises(SetupError) as caught:
        check_proxies({"HTTPS_PROXY": value})
    assert str(caught.value).startswith(message)
    assert "Pr0xyPw" not in str(caught.value)


def test_no_message_shows_a_password_in_a_url() -> None:
    text = "Failed to parse: http://u:Pr0xyPw@127.0.0.1:99999 and https://a:b@c/d"
    assert (
        hide_passwords(text)
        == "Failed to parse: http://u:***@127.0.0.1:99999 and https://a:***@c/d"
    )


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "source: {credentials: dckr_pat_SECRETVALUE123}",
            "source.credentials: expected a mapping, got text (not shown: it may be a secret)",
        ),
        (
            "source: {credentials: {ghcr.io: ghp_SECRET}}",
            'source.credentials["ghcr.io"]: expected a mapping, got text (not shown: it may be a '
            "secret)",
        ),
        (
            'source: {credentials: {secrets_manager: \'{"password":"SmSecret42"}\'}}',
            "source.credentials.secrets_manager: expected a Secrets Manager secret's name or ARN, "
            "got text (not shown: it may be a secret)",
        ),
        (
            "source: {credentials: {username_env: U, password_env: wJalrXUtnFEMIK7MDENGbPxRfiCY}}",
            "source.credentials.password_env: expected the name of an environment variable "
            "(capitals, digits and '_'), like DOCKERHUB_TOKEN; got text that is not a name (not "
            "shown: it may be a secret)",
        ),
    ],
)
def test_values_under_credentials_are_never_shown(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    path = tmp_path / "mirror.yaml"
    path.write_text(yaml_text + "\nimages: []\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert str(caught.value) == f"{path}: {message}"


# --- files of the user's never replaced ----------------------------------------------------------


def test_a_report_path_naming_the_config_is_refused_and_the_config_kept(stage: Stage) -> None:
    path = stage.config([stage.image("a")])
    before = path.read_bytes()
    for option in ("--report", "--junit"):
        run = stage.mirror("sync", option, str(path), report=False)
        assert run.code == 2
        assert run.error == (
            f"mirror: {option} {path}: exists and is not a mirror "
            f"{'report' if option == '--report' else 'JUnit file'}; name another path (mirror "
            "replaces only its own files)"
        )
        assert path.read_bytes() == before
    same = stage.tmp / "out.xml"
    run = stage.mirror("sync", "--report", str(same), "--junit", str(same), report=False)
    assert (run.code, run.error) == (
        2,
        f"mirror: --report and --junit name the same file, {same}",
    )


def test_an_earlier_report_is_replaced(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    report = stage.tmp / "r.json"
    report.write_text(json.dumps({"images": [], "summary": {}}))
    assert stage.mirror("sync", "--report", str(report), report=False).code == 0
    assert json.loads(report.read_text())["summary"] == {"copied": 1}


# --- Dockerfiles as they are -------------------------------------------------------------------


def test_a_dockerfile_that_is_not_utf8_keeps_every_byte(stage: Stage) -> None:
    stage.push("1", seed="one")
    stage.config()
    path = stage.tmp / "Dockerfile"
    path.write_bytes(b"# caf\xe9 \xa9 1999\r\nFROM " + stage.repo.encode() + b":1\r\n")
    done = stage.popen("ensure", "--dockerfile", str(path), "--format", "dockerfile", text=False)
    stdout, stderr = done.communicate(timeout=120)
    assert done.returncode == 0, stderr
    destination = f"{stage.dest.host}/{stage.dest_repo()}:1".encode()
    assert stdout == b"# caf\xe9 \xa9 1999\r\nFROM " + destination + b"\r\n"


@pytest.mark.parametrize("given", ["set", "unset"])
def test_a_build_arg_by_name_takes_the_environments_value_as_docker_build_does(
    stage: Stage, given: str
) -> None:
    stage.push("2", seed="two")
    stage.config()
    path = stage.tmp / "Dockerfile"
    path.write_text(f"ARG BASE={stage.repo}:1\nFROM $BASE\n")
    argv = ("ensure", "--dockerfile", str(path), "--build-arg", "BASE")
    run = stage.mirror(*argv, BASE=f"{stage.repo}:2") if given == "set" else stage.mirror(*argv)
    if given == "unset":  # no such variable: the ARG keeps its default, which the source lacks
        assert (run.code, run.actions()) == (1, ["failed"]), run.stderr
        assert run.report is not None and run.report["images"][0]["source"].endswith(":1")
        return
    assert (run.code, run.actions()) == (0, ["copied"]), run.stderr
    assert run.stdout == f"{stage.dest.host}/{stage.dest_repo()}:2\n"


def test_a_utf16_dockerfile_is_one_line(stage: Stage) -> None:
    stage.config()
    path = stage.tmp / "Dockerfile"
    path.write_bytes("FROM alpine:1\n".encode("utf-16"))
    run = stage.mirror("ensure", "--dockerfile", str(path))
    assert (run.code, run.error) == (
        2,
        f"mirror: {path}: UTF-16 text; BuildKit reads a Dockerfile as UTF-8",
    )


def test_build_args_leave_out_an_arg_another_image_uses_as_a_part() -> None:
    uses = dockerfile.parse("ARG BASE=alpine\nFROM $BASE AS a\nFROM $BASE:1\n")
    mapping = {use.image: f"ecr/{use.image}" for use in uses}
    assert dockerfile.build_args(uses, mapping) == []
    assert dockerfile.not_by_build_args(uses) == ["alpine", "alpine:1"]


def test_deeply_nested_variables_are_one_error() -> None:
    text = "ARG A=x\nFROM " + "${A:-" * 2000 + "y" + "}" * 2000 + "\n"
    with pytest.raises(dockerfile.DockerfileError, match="nested too deeply"):
        dockerfile.parse(text)


# --- pins --------------------------------------------------------------------------------------


def test_a_pin_is_copied_whole_whatever_platforms_says(stage: Stage) -> None:
    digest = stage.push("3.20", seed="p", platforms=PLATFORMS)
    stage.config(defaults={"platforms": ["linux/arm64"]})
    run = stage.mirror("ensure", f"{stage.repo}:3.20@{digest}")
    assert run.code == 0, run.stderr
    assert run.stdout == f"{stage.dest.host}/{stage.dest_repo()}:3.20@{digest}\n"
    assert stage.dest_digest("pin-sha256-" + digest.removeprefix("sha256:")) == digest
    assert stage.dest_digest(digest) == digest  # the pinned reference can be pulled


def test_an_unpinned_ensure_never_undoes_a_config_pin(stage: Stage) -> None:
    old = stage.push("1.0", seed="old")
    stage.config([stage.image(f"1.0@{old}")])
    assert stage.mirror("sync").code == 0
    stage.push("1.0", seed="new")  # upstream moves the tag
    run = stage.mirror("ensure", f"{stage.repo}:1.0")
    assert run.code == 0, run.stderr
    assert stage.dest_digest("1.0") == old


# --- names and tags --------------------------------------------------------------------------


def test_ensure_checks_ecr_names_and_knows_scratch(tmp_path: Path) -> None:
    loaded = config.parse({"ecr": {"repository_prefix": "p" * 250}}, tmp_path / "m.yaml")
    with pytest.raises(ConfigError) as caught:
        plan_names(loaded, ["localhost:5000/x:1"])
    assert str(caught.value).startswith(
        "'localhost:5000/x:1': its ECR repository: bad ECR repository name 'ppp"
    )
    assert "(267 characters; " in str(caught.value)
    with pytest.raises(ConfigError, match="scratch is Docker's empty base"):
        plan_names(loaded, ["scratch"])
    plain = config.parse({"images": []}, tmp_path / "m.yaml")
    referrers = "alpine:sha256-" + "c" * 64
    with pytest.raises(ConfigError) as caught:
        plan_names(plain, [referrers])
    assert str(caught.value).startswith(f"{referrers!r}: 'sha256-{'c' * 64}' is a referrers tag")
    signature = "alpine:sha256-" + "c" * 64 + ".sig"  # cosign's signature: copied as asked
    assert plan_names(plain, [signature])[1][signature].tag == "sha256-" + "c" * 64 + ".sig"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "images: [{source: ruby, tags: ['sha256-" + "a" * 64 + "']}]",
            "images[0].tags[0]: 'sha256-" + "a" * 64 + "' is a referrers tag (OCI's referrers "
            "tag schema: the signatures and attestations of the image sha256:aaaaaaaaaaaa...), not "
            "an image to mirror by name (mirror's pin tags are pin-sha256-<hex>); to mirror that "
            "image, pin it: TAG@sha256:" + "a" * 64,
        ),
        (
            "images: [{source: ruby, tags: ['sha512-" + "b" * 64 + "']}]",
            "images[0].tags[0]: 'sha512-" + "b" * 64 + "' is a referrers tag (OCI's referrers "
            "tag schema: the signatures and attestations of the image sha512:bbbbbbbbbbbb...), not "
            "an image to mirror by name (mirror's pin tags are pin-sha512-<hex>); to mirror that "
            "image, pin it: TAG@<its digest>",
        ),
        (  # a config an earlier mirror took: its pin tag listed, pinned to its own digest
            "images: [{source: ruby, tags: ['sha256-" + "a" * 64 + "@sha256:" + "a" * 64 + "']}]",
            "images[0].tags[0]: 'sha256-" + "a" * 64 + "' is a referrers tag (OCI's referrers "
            "tag schema: the signatures and attestations of the image sha256:aaaaaaaaaaaa...), not "
            "an image to mirror by name (mirror's pin tags are pin-sha256-<hex>); to mirror that "
            "image, pin it: TAG@sha256:" + "a" * 64,
        ),
        (
            "images: [{source: ruby, tags: ['pin-sha256-" + "a" * 64 + "']}]",
            "images[0].tags[0]: 'pin-sha256-" + "a" * 64 + "' is the form of mirror's pin tags, "
            "which mirror writes itself for a pin: pin the image instead, "
            "TAG@sha256:aaaaaaaaaaaa... (its pin tag is added)",
        ),
        (  # a semver range as skopeo's docs write it, unquoted: YAML reads '>' as block text
            "images:\n  - source: alpine\n    tags:\n      semver: >=3.18 <4",
            "line 4, column 16: YAML syntax error: expected chomping or indentation indicators, "
            "but found '=' (a value starting with '>' must be in quotes: semver: \">=3.18 <4\")",
        ),
        (
            "images: [{source: alpine, tags: {semver: >=3.18 <4, newest: 2}}]",
            "line 1, column 42: YAML syntax error: found character '>' that cannot start any "
            "token (a value starting with '>' must be in quotes: semver: \">=3.18 <4\")",
        ),
        (
            "images: [{source: alpine, tags: {semver: '>=3.18, <4 ||'}}]",
            "images[0].tags.semver: bad version range '>=3.18, <4 ||': an empty alternative "
            "around '||' (it would match every version)",
        ),
        (
            "source: {credentials: {username_env: U, password_env: P, docker.io: "
            "{username_env: V, password_env: Q}}}\nimages: []",
            'source.credentials["docker.io"]: the same registry as the default '
            "source.credentials (docker.io); give its credentials once",
        ),
        (
            "source: {credentials: {GHCR.IO: {username_env: U, password_env: P}, ghcr.io: "
            "{username_env: V, password_env: Q}}}\nimages: []",
            'source.credentials["ghcr.io"]: the same registry as source.credentials["GHCR.IO"] '
            "(ghcr.io)",
        ),
    ],
)
def test_config_mistakes_found_by_trying(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "mirror.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert str(caught.value) == f"{path}: {message}"


def test_an_alias_bomb_in_a_lifecycle_policy_is_refused_at_once(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{n}: &a{n} [*a{n - 1}, *a{n - 1}, *a{n - 1}, *a{n - 1}]" for n in range(1, 40)]
    document = (
        "ecr:\n  repository_settings:\n    lifecycle_policy:\n"
        + "".join(f"      {line}\n" for line in lines)
        + "      rules: [{rulePriority: 1, selection: *a39, action: {type: expire}}]\n"
    )  # 4 ** 39 strings once expanded: it must never be
    path = tmp_path / "mirror.yaml"
    path.write_text(document)
    with pytest.raises(ConfigError, match="more than 30720 characters as JSON"):
        config.load(path)


def test_one_line_for_a_bad_option() -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["sync", "--jobs", "0"])
    assert caught.value.code == 2


def test_an_empty_prefix_is_no_prefix(tmp_path: Path) -> None:
    loaded = config.parse(
        {"ecr": {"repository_prefix": ""}, "images": [{"source": "ruby", "tags": ["3"]}]},
        tmp_path / "m.yaml",
    )
    assert loaded.destination_repository(loaded.images[0]) == "library/ruby"


def test_a_lock_file_that_is_a_fifo_is_refused_at_once(stage: Stage) -> None:
    stage.config([stage.image("a")])
    fifo = stage.tmp / "sync.lock"
    os.mkfifo(fifo)
    run = stage.mirror("sync", "--lock-file", str(fifo), timeout=20)
    assert (run.code, run.error) == (2, f"mirror: --lock-file {fifo}: not a regular file")


def test_the_lock_file_may_not_be_the_report(stage: Stage) -> None:
    stage.config([stage.image("a")])
    path = stage.tmp / "both"
    run = stage.mirror("sync", "--report", str(path), "--lock-file", str(path), report=False)
    assert (run.code, run.error) == (
        2,
        f"mirror: --lock-file {path}: also named by --report",
    )


def test_a_report_keeps_the_mode_of_the_file_it_replaces(stage: Stage) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    report = stage.tmp / "r.json"
    report.write_text("")  # an empty file is taken as one of mirror's
    report.chmod(0o644)
    assert stage.mirror("sync", "--report", str(report), report=False).code == 0
    assert report.stat().st_mode & 0o777 == 0o644
    assert json.loads(report.read_text())["summary"] == {"copied": 1}


@pytest.mark.parametrize("command", ["ensure", "validate", "repos"])
def test_a_closed_stdout_is_one_line_not_a_traceback(stage: Stage, command: str) -> None:
    stage.push("a", seed="a")
    stage.config([stage.image("a")])
    args = ("ensure", f"{stage.repo}:a") if command == "ensure" else (command,)
    closed = stage.popen(*args, stdout=subprocess.DEVNULL)
    _, stderr = closed.communicate(timeout=60)
    assert closed.returncode == 0, stderr
    with open("/dev/full", "w") as no_space:
        full = stage.popen(*args, stdout=no_space)
        _, stderr = full.communicate(timeout=60)
    assert full.returncode == 1
    assert stderr.strip().endswith(
        "mirror: cannot write the result to stdout: No space left on device"
    )
    assert "Traceback" not in stderr
