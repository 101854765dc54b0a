"""Property tests: whatever a user writes, config.load answers with a Config or one ConfigError.

Hand-written tables cover the faults we know of; these feed arbitrary YAML-ish documents (built
from the config's own keys and from values that YAML 1.1 reads surprisingly), arbitrary text,
and arbitrary loaded values into the parser, and hunt for the rest of the kind: a traceback
(ValueError, TypeError, RecursionError...) instead of a message, or a message of several lines.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirror import config
from mirror.errors import ConfigError
from mirror.yamlfile import Unread, WrittenFloat, WrittenInt

# Deterministic in CI (no flaky failures); raise max_examples locally to hunt further.
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

KEYS = [
    *("source", "ecr", "defaults", "images", "registry", "tls_verify", "credentials"),
    *("username_env", "password_env", "secrets_manager", "region", "registry_id"),
    *("repository_prefix", "create_repositories", "endpoint", "repository_settings"),
    *("platforms", "tags", "repository", "match", "exclude", "newest", "scan_on_push"),
    *("tag_mutability", "encryption", "type", "kms_key", "lifecycle_policy", "rules"),
    *("ghcr.io", "docker.io", "index.docker.io", "localhost", "'host:99999'", "<<", "? [a]"),
]
SCALARS = [
    *("ruby", "docker.io/alpine", "INDEX.DOCKER.IO/library/alpine", "'host:99999/x'"),
    *("'host:0/x'", "quay.io/a__b/c--d", "'localhost:5000/x'", "Ruby", "-x", "a//b"),
    *("2024-13-45", "2024-01-15", "2024-01-15 10:00:00", "3.10", "012", "0x1F", "1:30"),
    *("1_000", ".inf", ".nan", "-0", "yes", "no", "on", "Off", "null", "~", "''", "true"),
    *("!!bool maybe", "!!timestamp x", "!!int abc", "!!float x", "!!binary aGk=", "!!set {a}"),
    *("!!str 5", "!!omap [{a: 1}]", "!!python/object:os.system x", "&a x", "*a", "="),
    "1" * 5000,
    "0x" + "f" * 5000,
    *("all", "linux/amd64", "linux", "MUTABLE", "IMMUTABLE", "KMS", "AES256", "us-east-1"),
    *("useast1", "'us-east-1 '", "'123456789012'", "123456789012", "'a@sha256:abc'"),
    *("'3.3@sha256:" + "a" * 64 + "'", "dckr_pat_abcdefghij", "'my secret'", "'7.('"),
    *("'a{99999999999}'", "/dev/zero", "'a\\0b'", '"\\x00"', "-", "?", ":", "[", "{", "#"),
]


def _flow(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """YAML in flow style: nested lists and mappings of the vocabulary above."""
    items = st.lists(values, max_size=4)
    pairs = st.lists(st.tuples(st.sampled_from(KEYS), values), max_size=4)
    return st.one_of(
        items.map(lambda parts: "[" + ", ".join(parts) + "]"),
        pairs.map(lambda parts: "{" + ", ".join(f"{k}: {v}" for k, v in parts) + "}"),
    )


DOCUMENTS = st.recursive(
    st.one_of(st.sampled_from(SCALARS), st.text(max_size=12)), _flow, max_leaves=30
)
TOP = st.lists(st.tuples(st.sampled_from(KEYS), DOCUMENTS), min_size=1, max_size=6).map(
    lambda pairs: "".join(f"{key}: {value}\n" for key, value in pairs)
)


def _load(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "mirror.yaml"
        try:
            path.write_text(text, encoding="utf-8")
        except UnicodeEncodeError:  # a lone surrogate cannot be in a file at all
            return
        try:
            config.load(path)
        except ConfigError as error:
            assert "\n" not in str(error), str(error)


@FUZZ
@given(TOP)
def test_yaml_documents_give_a_config_or_one_line(text: str) -> None:
    _load(text)


@FUZZ
@given(st.text(max_size=200))
def test_any_text_gives_a_config_or_one_line(text: str) -> None:
    _load(text)


@FUZZ
@given(
    st.text(alphabet=st.sampled_from(list("ab:-[]{},'\"!&*?|>#~@`%\n \t0123456789.")), max_size=80)
)
def test_yaml_punctuation_gives_a_config_or_one_line(text: str) -> None:
    _load(text)


LOADED = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=10),
        st.sampled_from([s.strip("'") for s in SCALARS]),
        st.builds(WrittenInt, st.integers(), st.text(max_size=5)),
        st.builds(WrittenFloat, st.floats(), st.text(max_size=5)),
        st.builds(Unread, st.text(max_size=5), st.sampled_from(["a date", "a number"])),
        st.binary(max_size=4),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=5)), children, max_size=4
        ),
    ),
    max_leaves=25,
)


@FUZZ
@given(st.dictionaries(st.sampled_from(["source", "ecr", "defaults", "images"]), LOADED))
def test_any_loaded_values_give_a_config_or_one_config_error(data: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        try:
            config.parse(data, Path(directory) / "mirror.yaml")
        except ConfigError as error:
            assert "\n" not in str(error), str(error)
