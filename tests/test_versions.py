"""Version order and `semver:` ranges over tags as real registries serve them (no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror import config, versions
from mirror.errors import ConfigError
from mirror.repo_settings import ENCRYPTION_TYPES

SIG = "sha256-" + "a" * 64
# As Docker Hub lists them (cut down): words, versions of every shape, alpine's edge
# snapshots by date, cosign's signature and attestation tags, a referrers-schema tag.
ALPINE = [
    "2.6", "3", "3.1", "3.18", "3.18.9", "3.19", "3.19.4", "3.20", "3.20.3", "edge", "latest",
    "20240923", "20240807", "20240606", f"{SIG}.sig", f"{SIG}.att", SIG,
]  # fmt: skip
NODE = [
    "22", "22.9", "22.9.0", "22-alpine", "22.9.0-alpine3.20", "22-bookworm-slim", "23.0.0",
    "23-alpine", "20.17.0", "18.20.4-bullseye", "lts", "lts-slim", "iron", "current", "latest",
    "slim", "alpine", "bookworm",
]  # fmt: skip
PYTHON = [
    "3.13.0rc2", "3.13.0rc2-slim", "3.13-rc", "3.13-rc-slim", "3.14.0a1", "3.12.6", "3.12",
    "3.12-slim", "3.12.6-alpine3.20", "3-slim", "slim", "latest", "bookworm", "3.11.10-bookworm",
    "windowsservercore-ltsc2022", "3.12.6-windowsservercore-ltsc2022",
]  # fmt: skip
RUBY = [
    "3.4.0-preview1", "3.4.0-preview1-alpine", "3.4-rc", "3.3.5", "3.3", "3.3-slim",
    "3.3.5-slim-bookworm", "3.3-alpine3.20", "3", "slim", "latest", "alpine",
]  # fmt: skip
BITNAMI = [
    "7.4.0-debian-12-r9", "7.4.0-debian-12-r10", "7.4.1-debian-12-r0", "7.2.5-debian-12-r4",
    "7.4", "7.4.1", "7", "latest", f"{SIG}.sig",
]  # fmt: skip


@pytest.mark.parametrize(
    ("tags", "rule", "chosen"),
    [
        # The example: words and cosign's tags never outrank a version.
        (["3.18", "3.19", "3.20", "latest", "edge", f"{SIG}.sig", f"{SIG}.att"],
         {"newest": 2}, ["3.20", "3.19"]),
        (ALPINE, {"newest": 3}, ["3.20.3", "3.20", "3.19.4"]),  # dates below every version
        (ALPINE, {"match": r"3\.\d+", "newest": 3}, ["3.20", "3.19", "3.18"]),
        (ALPINE, {"semver": ">=3.18 <4"}, ["3.20.3", "3.20", "3.19.4", "3.19", "3.18.9", "3.18"]),
        (ALPINE, {"match": "2024.*", "newest": 2}, ["20240923", "20240807"]),  # dates by date
        (ALPINE, {"match": "edge|latest"}, ["latest", "edge"]),  # chosen by name, no newest
        (ALPINE, {"match": "edge|latest", "newest": 1}, []),  # words have no version
        (NODE, {"match": r"\d+\.\d+\.\d+", "newest": 2}, ["23.0.0", "22.9.0"]),
        (NODE, {"semver": "^22", "newest": 1}, ["22.9.0"]),  # a plain release above variants
        (NODE, {"semver": "^22", "match": r".*-alpine.*", "newest": 2},
         ["22.9.0-alpine3.20", "22-alpine"]),
        (PYTHON, {"match": r"3\.\d+\.\d+(rc\d+)?", "newest": 2}, ["3.13.0rc2", "3.12.6"]),
        (PYTHON, {"semver": ">=3.12"}, ["3.12.6", "3.12.6-windowsservercore-ltsc2022",
                                        "3.12.6-alpine3.20", "3.12", "3.12-slim"]),  # no rc
        (PYTHON, {"semver": ">=3.13.0-rc.0 <3.14", "match": r"[\d.]+(rc\d+)?"}, ["3.13.0rc2"]),
        (RUBY, {"semver": "~3.3", "match": r"[\d.]+"}, ["3.3.5", "3.3"]),
        (RUBY, {"match": r"\d+\.\d+\.\d+(-preview\d+)?", "newest": 1}, ["3.4.0-preview1"]),
        (BITNAMI, {"match": r"7\.4\.\d+-debian-12-r\d+", "newest": 2},
         ["7.4.1-debian-12-r0", "7.4.0-debian-12-r10"]),  # r10 > r9
        (BITNAMI, {"match": ".*"}, [
            "7.4.1", "7.4.1-debian-12-r0", "7.4", "7.4.0-debian-12-r10", "7.4.0-debian-12-r9",
            "7.2.5-debian-12-r4", "7", "latest"]),  # never the signature
    ],
)  # fmt: skip
def test_tag_rules_on_tag_lists_as_registries_serve_them(
    tags: list[str], rule: dict[str, object], chosen: list[str]
) -> None:
    assert config.TagRule(**rule).select(tags) == chosen  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("higher", "lower"),
    [
        ("1.10.0", "1.9.9"),
        ("3.20.1", "3.20"),
        ("3.20", "3"),
        ("v2", "1.99"),  # an optional v
        ("3.14.0", "3.14.0rc1"),  # a pre-release below its release
        ("3.14.0rc1", "3.13.9"),  # ... above the releases before it
        ("3.14.0rc2", "3.14.0rc1"),
        ("3.14.0rc1", "3.14.0b2"),  # rc > beta > alpha, as SemVer orders them
        ("3.14.0b2", "3.14.0a5"),
        ("1.25.3-rc.10", "1.25.3-rc.9"),
        ("3.12", "3.12-slim"),  # a plain release above its variants
        ("3.12-slim", "3.11"),
        ("3.12.6-alpine3.20", "3.12.6-alpine3.9"),  # digit runs in a variant as numbers
        ("21.0.4_9-jdk", "21.0.4_7-jdk"),
        ("1.0.0", "20240923"),  # a date below every version
        ("20240923", "20240807"),
        ("2024-09-23", "20240807"),
        ("0.0.1", "latest"),  # a word below everything
    ],
)
def test_version_order(higher: str, lower: str) -> None:
    assert versions.sort_key(higher) > versions.sort_key(lower)


@pytest.mark.parametrize(
    ("tag", "semver"),
    [
        ("3.20", "3.20.0"),
        ("v1.2.3", "1.2.3"),
        ("1.2.3.4", "1.2.3"),  # the first three numbers
        ("3.12-slim", "3.12.0"),  # a variant is no pre-release
        ("3.14.0rc1", "3.14.0-rc.1"),
        ("1.25.3-rc.1", "1.25.3-rc.1"),
        ("17beta1", "17.0.0-beta.1"),
        ("3.14.0a5-alpine", "3.14.0-alpha.5"),
        ("3.13-rc-slim", "3.13.0-rc"),
        ("8.0-M02", "8.0.0-milestone.2"),
        ("1.0.0-dev", "1.0.0-dev"),
        ("24-ea-15-jdk", "24.0.0-ea.15"),  # early access build 15, variant -jdk
        ("1.22-alpine", "1.22.0"),  # alpine is no alpha
        ("7.2.4-debian-12-r5", "7.2.4"),
        ("20240923", None),  # a date
        ("latest", None),
        ("edge", None),
        ("alpine3.20", None),
        ("3f2a1bc", None),  # a git hash
        ("1a2b3c", None),
        ("3.20.", None),
        (f"{SIG}", None),
        (f"{SIG}.sig", None),
    ],
)
def test_what_a_tag_says_to_a_range(tag: str, semver: str | None) -> None:
    version = versions.parse(tag)
    assert (version.semver() if version else None) == semver


@pytest.mark.parametrize(
    "tag",
    [SIG, f"{SIG}.sig", f"{SIG}.att", f"{SIG}.sbom", "sha512-" + "b" * 64, "sha384-" + "c" * 64],
)
def test_referrer_shaped_tags(tag: str) -> None:
    assert versions.is_referrer_tag(tag)
    assert config.TagRule(match=".*").select([tag, "1.0"]) == ["1.0"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (">=3.18, <4", None),  # a comma reads as a space, as in skopeo's Masterminds/semver
        (">= 3.17", None),  # skopeo's own example
        ("3.12 - 3.13 || >=3.17", None),
        ("^3.18", None),
        ("~3.18", None),
        ("3.x", None),
        ("latest", "images[0].tags.semver: bad version range 'latest': not a version range: "
         "write comparators such as '>=3.18 <4', '^3.18', '~3.18', '3.x' or '3.12 - 3.13', and "
         "'||' between alternatives"),
        (">=3.18 <4 ||", "images[0].tags.semver: bad version range '>=3.18 <4 ||': an empty "
         "alternative around '||' (it would match every version)"),
        ("1" * 300, "images[0].tags.semver: bad version range '" + "1" * 40 + "... (300 "
         "characters)': longer than 256 characters"),
    ],
)  # fmt: skip
def test_semver_ranges_in_the_config(tmp_path: Path, text: str, message: str | None) -> None:
    data = {"images": [{"source": "alpine", "tags": {"semver": text}}]}
    if message is None:
        assert config.parse(data, tmp_path / "m.yaml").images[0].rule == config.TagRule(semver=text)
        return
    with pytest.raises(ConfigError) as caught:
        config.parse(data, tmp_path / "m.yaml")
    assert str(caught.value) == message


def test_a_yaml_number_as_range_is_refused_with_the_quote_advice(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("images: [{source: alpine, tags: {semver: 3.10}}]\n")
    with pytest.raises(ConfigError, match=r"semver: YAML read 3.10 as a number"):
        config.load(path)


@given(st.text(max_size=200))
def test_any_text_reads_as_a_version_or_a_word(text: str) -> None:
    version = versions.parse(text)
    key = versions.sort_key(text)
    assert (version is None) == (key[0] == 0)
    if version is not None and not version.date:
        assert versions.in_range(text, "*") == (version.pre is None)


@given(st.lists(st.from_regex(r"v?[0-9]{1,3}(\.[0-9]{1,3}){0,3}(-?(rc|a|b)[0-9])?(-[a-z]+)?")))
def test_the_order_is_total_and_stable(tags: list[str]) -> None:
    once = sorted(tags, key=versions.sort_key)
    assert sorted(reversed(tags), key=versions.sort_key) == once


def test_readme_documents_every_rule_key_and_encryption_type() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rules = readme.split("### Tag rules\n", 1)[1].split("\n### ", 1)[0]
    written = rules.split("`tags: {", 1)[1].split("}`", 1)[0]
    assert [part.split(":")[0].strip() for part in written.split(",")] == list(config._RULE_KEYS)
    for kind in ENCRYPTION_TYPES:
        assert f"{{type: {kind}" in readme, kind
