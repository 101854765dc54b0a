"""Names never merge: two different source images never share an ECR repository and tag, in
`ensure` or `sync`. Derived names carry the registry host for every source but
`source.registry` (made ECR-legal: `127.0.0.1:5000` is `127.0.0.1_5000`)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mirror import aws, config
from mirror.errors import ConfigError
from mirror.plan import plan_names
from mirror.reference import host_part, parse_repository
from tests.stage import Stage
from tests.standins.images import make_image
from tests.standins.registry import Registry


def loaded(tmp_path: Path, **document: Any) -> config.Config:
    return config.parse({"ecr": {"repository_prefix": "hub"}, **document}, tmp_path / "m.yaml")


@pytest.mark.parametrize(
    ("name", "repository"),
    [
        ("ruby", "hub/library/ruby"),  # Docker Hub's names as they were
        ("docker.io/org/app", "hub/org/app"),
        ("INDEX.DOCKER.IO/org/app", "hub/org/app"),
        ("ghcr.io/org/app", "hub/ghcr.io/org/app"),
        ("Ghcr.IO/org/app", "hub/ghcr.io/org/app"),  # host names are case-insensitive
        ("quay.io/coreos/etcd", "hub/quay.io/coreos/etcd"),
        ("127.0.0.1:5000/org/app", "hub/127.0.0.1_5000/org/app"),
        ("localhost:5000/x", "hub/localhost_5000/x"),
        ("localhost/x", "hub/localhost/x"),
        ("registry.example.com:0443/x", "hub/registry.example.com_443/x"),
        ("my-registry:5000/team/app", "hub/my-registry_5000/team/app"),
    ],
)
def test_derived_names_carry_the_host_of_every_other_registry(
    tmp_path: Path, name: str, repository: str
) -> None:
    names = loaded(tmp_path)
    image = names.image_for(parse_repository(name))
    assert names.destination_repository(image) == repository
    assert aws.repository_name_rule().problem(repository) is None


def test_names_on_source_registry_are_unchanged(tmp_path: Path) -> None:
    names = loaded(tmp_path, source={"registry": "127.0.0.1:5000"})
    for name, repository in (
        ("ruby", "hub/library/ruby"),
        ("docker.io/org/app", "hub/org/app"),  # every Docker Hub spelling goes there
        ("127.0.0.1:5000/org/app", "hub/org/app"),
        ("127.0.0.1:5001/org/app", "hub/127.0.0.1_5001/org/app"),
    ):
        image = names.image_for(parse_repository(name, default_registry="127.0.0.1:5000"))
        assert names.destination_repository(image) == repository, name


HOSTS = ("docker.io", "ghcr.io", "quay.io", "127.0.0.1:5000", "127.0.0.1:5001", "localhost")
PATHS = ("org/app", "library/ruby", "ghcr.io/org/app", "localhost/app", "a_1/b", "127.0.0.1_5000/x")


def test_no_two_sources_derive_one_name(tmp_path: Path) -> None:
    """Every host with every path (hosts written into paths too): a derived name belongs to one
    source, or the name is refused and must be given a repository."""
    names = loaded(tmp_path)
    owners: dict[str, str] = {}
    for host, path in itertools.product(HOSTS, PATHS):
        written = f"{host}/{path}"
        try:
            repository = parse_repository(written)
        except ValueError:
            continue
        if names.derived_problem(repository):
            continue
        derived = names.destination_repository(names.image_for(repository))
        owner = owners.setdefault(derived, str(repository))
        assert owner == str(repository), f"{written} and {owner} both derive {derived}"
    assert len(owners) > 20


def test_a_path_that_reads_as_a_host_needs_its_own_repository(tmp_path: Path) -> None:
    names = loaded(tmp_path)
    with pytest.raises(ConfigError) as caught:
        plan_names(names, ["docker.io/localhost/app:1"])
    assert str(caught.value) == (
        "'docker.io/localhost/app:1': its path 'localhost/app' starts with 'localhost', which is "
        "also how another registry's host is written in derived names: give it an explicit "
        "repository (under images, in the config)"
    )
    listed = loaded(
        tmp_path,
        images=[{"source": "docker.io/localhost/app", "tags": ["1"], "repository": "x/app"}],
    )
    plan, _ = plan_names(listed, ["docker.io/localhost/app:1"])
    assert plan.tasks[0].repositories == ("x/app",)


def test_two_registries_org_app_in_one_ensure_are_two_repositories(tmp_path: Path) -> None:
    plan, wanted = plan_names(loaded(tmp_path), ["org/app:1.0", "ghcr.io/org/app:1.0"])
    repositories = [task.repositories for task in plan.tasks]
    assert repositories == [("hub/org/app",), ("hub/ghcr.io/org/app",)]
    assert wanted["org/app:1.0"].task is not wanted["ghcr.io/org/app:1.0"].task


def test_one_image_in_two_spellings_is_one_task(tmp_path: Path) -> None:
    plan, wanted = plan_names(loaded(tmp_path), ["org/app:1", "docker.io/org/app:1"])
    assert len(plan.tasks) == 1
    assert wanted["org/app:1"].task is wanted["docker.io/org/app:1"].task


def test_names_that_would_share_a_destination_are_refused_naming_both(tmp_path: Path) -> None:
    listed = loaded(
        tmp_path,
        images=[{"source": "ghcr.io/org/app", "tags": ["2"], "repository": "hub/org/app"}],
    )
    # ghcr.io's image keeps its explicit repository; Docker Hub's org/app derives the same one
    with pytest.raises(ConfigError) as caught:
        plan_names(listed, ["ghcr.io/org/app:1", "org/app:1"])
    assert str(caught.value) == (
        "'ghcr.io/org/app:1' and 'org/app:1' are two images that would share hub/org/app:1 in "
        "ECR: list one of them under images with a repository of its own"
    )
    # a tag the config lists for another image is that image's, in a later call too
    with pytest.raises(ConfigError) as caught:
        plan_names(listed, ["org/app:2"])
    assert str(caught.value) == (
        "'org/app:2': hub/org/app:2 in ECR is the destination of images[0] (ghcr.io/org/app), "
        "another image: list 'org/app:2' under images with a repository of its own"
    )
    plan, _ = plan_names(listed, ["org/app:3"])  # a tag nobody else has is fine
    assert plan.tasks[0].repositories == ("hub/org/app",)


def test_a_tag_rule_keeps_its_whole_repository_from_other_names(tmp_path: Path) -> None:
    listed = loaded(
        tmp_path,
        images=[{"source": "ghcr.io/org/app", "tags": {"newest": 3}, "repository": "hub/org/app"}],
    )
    with pytest.raises(ConfigError, match="is the destination of images\\[0\\]"):
        plan_names(listed, ["org/app:9"])
    assert plan_names(listed, ["ghcr.io/org/app:9"])[0].tasks[0].repositories == ("hub/org/app",)


# --- end to end ---------------------------------------------------------------------------------


@pytest.fixture
def other_registry(tmp_path: Path) -> Iterator[Registry]:
    """A second source registry, with other images under the same paths as the stage's."""
    with Registry(tmp_path / "other-registry") as registry:
        yield registry


def test_two_registries_org_app_never_share_an_ecr_tag(
    stage: Stage, other_registry: Registry
) -> None:
    other = other_registry.host
    other_repo = f"{host_part(other)}/{stage.repo}"
    digests = {}
    for tag in ("1.0", "2.0", "3.0"):
        digests[("hub", tag)] = stage.push(tag, seed=f"hub-{tag}")
        digests[("other", tag)] = make_image(
            other, stage.repo, tag, workdir=stage.tmp, seed=f"other-{tag}"
        )
    stage.config()
    destination = f"{stage.dest.host}/{stage.dest_repo()}"

    one_call = stage.mirror("ensure", f"{stage.repo}:1.0", f"{other}/{stage.repo}:1.0")
    assert one_call.code == 0, one_call.stderr
    assert one_call.stdout.splitlines() == [
        f"{destination}:1.0",
        f"{stage.dest.host}/{stage.dest_repo(other_repo)}:1.0",
    ]
    assert stage.dest_digest("1.0") == digests[("hub", "1.0")]
    assert stage.dest_digest("1.0", repo=other_repo) == digests[("other", "1.0")]

    # two projects, one after the other: the second never moves the first one's tag
    first = stage.mirror("ensure", f"{other}/{stage.repo}:2.0")
    second = stage.mirror("ensure", f"{stage.repo}:2.0")
    assert (first.code, second.code) == (0, 0), first.stderr + second.stderr
    assert first.stdout != second.stdout
    assert stage.dest_digest("2.0", repo=other_repo) == digests[("other", "2.0")]
    assert stage.dest_digest("2.0") == digests[("hub", "2.0")]

    # sync: a config listing both (refused before as one destination) mirrors both
    stage.config([stage.image("3.0"), {"source": f"{other}/{stage.repo}", "tags": ["3.0"]}])
    synced = stage.mirror("sync")
    assert (synced.code, synced.actions()) == (0, ["copied", "copied"]), synced.stderr
    assert stage.dest_digest("3.0") == digests[("hub", "3.0")]
    assert stage.dest_digest("3.0", repo=other_repo) == digests[("other", "3.0")]


def test_an_explicit_repository_keeps_an_image_where_it_was(
    stage: Stage, other_registry: Registry
) -> None:
    """The migration README describes: the old name, given as `repository:`."""
    other = other_registry.host
    digest = make_image(other, stage.repo, "1", workdir=stage.tmp, seed="kept")
    stage.config(
        [{"source": f"{other}/{stage.repo}", "tags": ["1"], "repository": stage.dest_repo()}]
    )
    run = stage.mirror("ensure", f"{other}/{stage.repo}:1")
    assert run.stdout == f"{stage.dest.host}/{stage.dest_repo()}:1\n", run.stderr
    assert stage.dest_digest("1") == digest
    clash = stage.mirror("ensure", f"{stage.repo}:1")  # Docker Hub's name derives that one
    assert (clash.code, clash.stdout) == (2, "")
    assert clash.error == (
        f"mirror: '{stage.repo}:1': {stage.dest_repo()}:1 in ECR is the destination of images[0] "
        f"({other}/{stage.repo}), another image: list '{stage.repo}:1' under images with a "
        "repository of its own"
    )
