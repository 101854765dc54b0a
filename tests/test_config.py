"""Config parsing: every user-facing error's exact one-line text, and what good configs mean."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mirror import aws, config
from mirror.errors import ConfigError
from mirror.reference import Repository, parse_repository

GOOD = """
source:
  registry: docker.io
  tls_verify: true
  credentials:
    username_env: DOCKERHUB_USERNAME
    password_env: DOCKERHUB_TOKEN
ecr:
  region: us-east-1
  registry_id: "123456789012"
  repository_prefix: dockerhub
  create_repositories: true
  endpoint: null
  tls_verify: true
defaults:
  platforms: all
images:
  - source: ruby
    tags: ["2.7.1-slim", "3.3-slim"]
  - source: quay.io/coreos/etcd
    tags: ["v3.5.8"]
    repository: infra/etcd
"""


def load_text(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "mirror.yaml"
    path.write_text(textwrap.dedent(text))
    return config.load(path)


def test_the_documented_example_parses(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, GOOD)
    ruby, etcd = loaded.images
    assert ruby.source == Repository("docker.io", "library/ruby")
    assert ruby.tags == (config.TagEntry("2.7.1-slim"), config.TagEntry("3.3-slim"))
    assert loaded.destination_repository(ruby) == "dockerhub/library/ruby"
    assert etcd.source == Repository("quay.io", "coreos/etcd")
    assert loaded.destination_repository(etcd) == "infra/etcd"
    assert loaded.source.credentials == config.Credentials("DOCKERHUB_USERNAME", "DOCKERHUB_TOKEN")
    assert loaded.ecr.registry_id == "123456789012"


@pytest.mark.parametrize("text", ["", "\n\n", "# mirror.yaml\n# images: [ruby]\n", "---\n", "~\n"])
def test_an_empty_file_is_refused(tmp_path: Path, text: str) -> None:
    # A cron job on an empty config would mirror nothing and exit 0, night after night.
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    assert str(caught.value) == (
        f"{tmp_path / 'mirror.yaml'}: the config file is empty (no keys, only comments or blank "
        "lines)"
    )


def test_empty_images_are_valid(tmp_path: Path) -> None:
    # A config used only by `mirror ensure`.
    assert load_text(tmp_path, "images: []\n").images == ()
    assert load_text(tmp_path, "ecr: {region: us-east-1}\n").images == ()


def test_names_resolve_on_the_configured_source_registry(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        """
        source: {registry: "mirror.gcr.io"}
        images:
          - {source: ruby, tags: [a]}
          - {source: bitnami/redis, tags: [a]}
          - {source: "localhost:5000/xy", tags: [a]}
          - {source: docker.io/alpine, tags: [a]}
          - {source: INDEX.DOCKER.IO/library/node, tags: [a]}
        """,
    )
    assert [str(image.source) for image in loaded.images] == [
        "mirror.gcr.io/library/ruby",
        "mirror.gcr.io/bitnami/redis",
        "localhost:5000/xy",
        "mirror.gcr.io/library/alpine",
        "mirror.gcr.io/library/node",
    ]
    assert loaded.destination_repository(loaded.images[0]) == "library/ruby"


def test_ecr_names_follow_botocores_rule_not_a_hand_copy(tmp_path: Path) -> None:
    rule = aws.repository_name_rule()
    assert (rule.min_length, rule.max_length) == (2, 256)
    # The old hand-written rule refused `__` and `--`, which ECR takes.
    loaded = load_text(
        tmp_path,
        """
        ecr: {repository_prefix: my__hub--mirror}
        images:
          - {source: ruby, tags: [a], repository: infra__x/a--b}
          - {source: "quay.io/a__b/c--d", tags: [a]}
        """,
    )
    assert [loaded.destination_repository(image) for image in loaded.images] == [
        "infra__x/a--b",
        "my__hub--mirror/quay.io/a__b/c--d",
    ]
    assert rule.problem("x" * 256) is None
    assert rule.problem("x" * 257) == f"257 characters; {rule}"


def test_ensure_uses_the_listed_repository(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, GOOD)
    etcd = loaded.image_for(Repository("quay.io", "coreos/etcd"))
    node = loaded.image_for(Repository("docker.io", "library/node"))
    assert loaded.destination_repository(etcd) == "infra/etcd"
    assert loaded.destination_repository(node) == "dockerhub/library/node"
    # `ensure docker.io/ruby` and `ensure index.docker.io/library/ruby` find the listed ruby
    for spelling in ("docker.io/ruby", "INDEX.DOCKER.IO/library/ruby", "registry-1.docker.io/ruby"):
        assert loaded.image_for(parse_repository(spelling)) is loaded.images[0]


# ECR's rule as the installed botocore's service model states it (RepositoryName).
ECR_RULE = str(aws.repository_name_rule())

ERRORS = [
    ("sourse: {}", "sourse: unknown key (did you mean 'source'?)"),
    ("colour: red", "colour: unknown key (expected one of: source, ecr, defaults, images)"),
    ("- a\n- b", "the file: expected a mapping, got a list"),
    ("source: docker.io", "source: expected a mapping, got 'docker.io'"),
    ("source: {registy: x}", "source.registy: unknown key (did you mean 'registry'?)"),
    (
        "source: {registry: 'bad host!'}",
        "source.registry: bad registry host 'bad host!' (expected host or host:port)",
    ),
    ("source: {tls_verify: 'no'}", "source.tls_verify: expected true or false, got 'no'"),
    (
        "source: {credentials: {username_env: U}}",
        "source.credentials.password_env: required (the name of an environment variable)",
    ),
    (
        "source: {credentials: {username_env: U, password_env: 'my secret'}}",
        "source.credentials.password_env: expected the name of an environment "
        "variable (capitals, digits and '_'), like "
        "DOCKERHUB_TOKEN; got text that is not a name (not shown: it may be a secret)",
    ),
    (
        "ecr: {registry_id: 123456789012}",
        'ecr.registry_id: write the account ID in quotes, as a string ("123456789012"): '
        "a number loses leading zeros",
    ),
    (
        "ecr: {registry_id: '12345'}",
        "ecr.registry_id: expected a 12-digit account ID, got '12345'",
    ),
    ("ecr: {regoin: us-east-1}", "ecr.regoin: unknown key (did you mean 'region'?)"),
    (
        "ecr: {repository_prefix: Docker_Hub}",
        f"ecr.repository_prefix: bad ECR repository prefix 'Docker_Hub' ({ECR_RULE})",
    ),
    (
        "ecr: {create_repositories: 1}",
        "ecr.create_repositories: expected true or false, got 1 (a number)",
    ),
    (
        "defaults: {platforms: linux/s390x}",
        "defaults.platforms: expected 'all' or a list of platforms like [linux/amd64], "
        "got 'linux/s390x'",
    ),
    (
        "defaults: {platforms: [linux]}",
        "defaults.platforms[0]: expected os/arch or os/arch/variant, got 'linux'",
    ),
    (
        "defaults: {platforms: [linux/arm64, linux/arm64]}",
        "defaults.platforms: a platform is listed twice",
    ),
    (
        "images: [{source: ruby, tags: [a@sha256:abc]}]",
        "images[0].tags[0]: bad digest 'sha256:abc' (sha256 takes 64 lowercase hex digits, got 3)",
    ),
    (
        "images: [{source: ruby, tags: {matches: x}}]",
        "images[0].tags.matches: unknown key (did you mean 'match'?)",
    ),
    (
        "images: [{source: ruby, tags: {}}]",
        "images[0].tags: a tag rule needs match, exclude, semver or newest",
    ),
    (
        "images: [{source: ruby, tags: {match: '7.('}}]",
        "images[0].tags.match: bad regular expression '7.(': missing ): 7.( (tag rules use RE2 "
        "syntax, which matches in linear time: no backreferences or lookarounds; \\z, not \\Z)",
    ),
    (
        "images: [{source: ruby, tags: {newest: 0}}]",
        "images[0].tags.newest: expected a whole number of 1 or more, got 0 (a number)",
    ),
    ("ecr: []", "ecr: expected a mapping or a non-empty list of targets, got a list"),
    (
        "ecr: [{region: us-east-1}, {regoin: y}]",
        "ecr[1].regoin: unknown key (did you mean 'region'?)",
    ),
    (
        "ecr: [{region: us-east-1, repository_prefix: hub},"
        " {region: us-east-1, repository_prefix: hub}]",
        "ecr[1]: the same registry and repository_prefix as ecr[0]: every image would be copied "
        "twice into the same repositories",
    ),
    (
        "ecr: [{region: us-east-1}, {region: eu-west-1}, {region: us-east-1}]",
        "ecr[2]: the same registry and repository_prefix as ecr[0]: every image would be copied "
        "twice into the same repositories",
    ),
    (
        "source: {credentials: {ghcr.io: {username_env: U}}}",
        'source.credentials["ghcr.io"].password_env: required (the name of an environment '
        "variable)",
    ),
    (
        "source: {credentials: {usernme_env: U}}",
        "source.credentials.usernme_env: unknown key (did you mean 'username_env'?)",
    ),
    ("images: {source: ruby}", "images: expected a list of images, got a mapping"),
    ("images: [ruby]", "images[0]: expected a mapping, got 'ruby'"),
    ("images: [{tags: [a]}]", "images[0].source: required"),
    ("images: [{source: ruby}]", "images[0].tags: required"),
    ("images: [{source: ruby, tag: [a]}]", "images[0].tag: unknown key (did you mean 'tags'?)"),
    (
        "images: [{source: ruby, tags: '3.3'}]",
        "images[0].tags: expected a non-empty list of tags or a rule "
        "{match, exclude, semver, newest}, "
        "got '3.3'",
    ),
    (
        "images: [{source: ruby, tags: []}]",
        "images[0].tags: expected a non-empty list of tags or a rule "
        "{match, exclude, semver, newest}, "
        "got a list",
    ),
    (
        "images: [{source: ruby, tags: [3.3]}]",
        'images[0].tags[0]: YAML read 3.3 as a number, not a string: write it in quotes: "3.3"',
    ),
    (
        "images: [{source: ruby, tags: ['-latest']}]",
        "images[0].tags[0]: bad tag '-latest' (a tag is 1 to 128 letters, digits, '_', '.' or "
        "'-', and does not start with '.' or '-')",
    ),
    ("images: [{source: ruby, tags: [a, a]}]", "images[0].tags: tag 'a' is listed twice"),
    ("images: [{source: '-ruby', tags: [a]}]", "images[0].source: bad image name '-ruby'"),
    (
        "images: [{source: Ruby, tags: [a]}]",
        "images[0].source: bad image name 'Ruby' (path parts are lowercase letters and digits, "
        "joined by '.', '_', '__' or '-')",
    ),
    (
        "images: [{source: 'ruby:3.3', tags: [a]}]",
        "images[0].source: 'ruby:3.3' names a tag or digest; give the bare name and list tags "
        "under images[0].tags",
    ),
    (
        "images: [{source: ruby, tags: [a], repository: Infra/Etcd}]",
        f"images[0].repository: bad ECR repository name 'Infra/Etcd' ({ECR_RULE})",
    ),
    (
        "images: [{source: ruby, tags: [a]}, {source: docker.io/library/ruby, tags: [b, a]}]",
        "images[1].tags[1]: docker.io/library/ruby:a is already listed at images[0].tags[0] "
        "('ruby' and 'docker.io/library/ruby' are one image)",
    ),
    (
        "images: [{source: ruby, tags: [a]}, {source: quay.io/r/ruby, tags: [a], "
        "repository: library/ruby}]",
        "images[1]: library/ruby:a is already the destination of images[0]",
    ),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[m.split(":")[0] for _, m in ERRORS])
def test_config_error_messages(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text + "\n")
    assert str(caught.value) == f"{tmp_path / 'mirror.yaml'}: {message}"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path / "nope.yaml")
    assert str(caught.value) == (
        f"{tmp_path / 'nope.yaml'}: no such config file (name one with -c or $MIRROR_CONFIG)"
    )


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, "images:\n  - source: ruby\n    tags: [a\n")
    assert str(caught.value).startswith(
        f"{tmp_path / 'mirror.yaml'}: line 4, column 1: YAML syntax error"
    )


def test_tag_rules_order_by_version_not_text() -> None:
    tags = ["1.2.0", "1.9.9", "1.10.0", "1.10.0-rc1", "latest", "2.0.0-alpine", "0.9"]
    rule = config.TagRule(match=r"\d+\.\d+\.\d+", newest=3)
    assert rule.select(tags) == ["1.10.0", "1.9.9", "1.2.0"]
    assert config.TagRule(match=r"1\..*", exclude=r".*-rc\d+").select(tags) == [
        "1.10.0",
        "1.9.9",
        "1.2.0",
    ]
    assert config.TagRule(match="nothing").select(tags) == []


def test_pins_platforms_targets_and_per_host_credentials(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        f"""
        source:
          credentials:
            username_env: HUB_USER
            password_env: HUB_TOKEN
            ghcr.io: {{secrets_manager: ghcr-pull}}
        ecr:
          - {{region: us-east-1, repository_prefix: hub}}
          - {{region: eu-west-1, registry_id: "111122223333"}}
        defaults: {{platforms: [linux/arm64]}}
        images:
          - source: redis
            tags: ["7.2@sha256:{"a" * 64}", "7.0"]
          - source: node
            tags: {{match: '20[.].*', newest: 2}}
            platforms: all
        """,
    )
    redis, node = loaded.images
    assert redis.tags == (config.TagEntry("7.2", "sha256:" + "a" * 64), config.TagEntry("7.0"))
    assert redis.platforms == ("linux/arm64",) and node.platforms == ()
    assert node.rule == config.TagRule(match="20[.].*", newest=2)
    assert [loaded.destination_repository(redis, t) for t in loaded.targets] == [
        "hub/library/redis",
        "library/redis",
    ]
    assert loaded.source.credential_hosts() == {
        "ghcr.io": config.Credentials(secrets_manager="ghcr-pull"),
        "docker.io": config.Credentials("HUB_USER", "HUB_TOKEN"),
    }


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIRROR_CONFIG", raising=False)
    assert config.config_path(None) == Path("mirror.yaml")
    monkeypatch.setenv("MIRROR_CONFIG", "/etc/mirror.yaml")
    assert config.config_path(None) == Path("/etc/mirror.yaml")
    assert config.config_path("x.yaml") == Path("x.yaml")


# --- bad input exactly as users write it ---------------------------------------------------------
# Each case: (id, the YAML, the one line it gives after "<path>: "). Before these fixes several
# were tracebacks (impossible date, 5,000 digits), silent changes (3.10 -> 3.1, a second `ecr:`
# dropping the first) or HTTP errors on every image (a short digest, port 99999).

HEX = "0123456789abcdef" * 4
WIDE = "".join(chr(0xFF10 + int(digit)) for digit in "123456789012")  # fullwidth digits
# YAML as it is read: text that is not a string, keys given twice, what PyYAML raised on.
BAD_YAML = [
    (
        "impossible date",
        "images: [{source: ruby, tags: [2024-13-45]}]",
        "images[0].tags[0]: YAML read 2024-13-45 as a date, not a string: write it in quotes: "
        '"2024-13-45"',
    ),
    (
        "possible date",
        "images: [{source: ruby, tags: [2024-01-15]}]",
        "images[0].tags[0]: YAML read 2024-01-15 as a date, not a string: write it in quotes: "
        '"2024-01-15"',
    ),
    (
        "date as a source",
        "images: [{source: 2024-01-15, tags: [a]}]",
        "images[0].source: YAML read 2024-01-15 as a date, not a string: write it in quotes: "
        '"2024-01-15"',
    ),
    (
        "float loses a digit",
        "images: [{source: ruby, tags: [3.10]}]",
        "images[0].tags[0]: YAML read 3.10 as a number (3.1), not a string: write it in quotes: "
        '"3.10"',
    ),
    (
        "octal",
        "images: [{source: ruby, tags: [012]}]",
        "images[0].tags[0]: YAML read 012 as a number (10), not a string: write it in quotes: "
        '"012"',
    ),
    (
        "sexagesimal",
        "images: [{source: ruby, tags: [1:30]}]",
        "images[0].tags[0]: YAML read 1:30 as a number (90), not a string: write it in quotes: "
        '"1:30"',
    ),
    (
        "underscores",
        "images: [{source: ruby, tags: [1_000]}]",
        "images[0].tags[0]: YAML read 1_000 as a number (1000), not a string: write it in "
        'quotes: "1_000"',
    ),
    (
        "infinity",
        "images: [{source: ruby, tags: [.inf]}]",
        "images[0].tags[0]: YAML read .inf as a number (inf), not a string: write it in quotes: "
        '".inf"',
    ),
    (
        "yes",
        "images: [{source: ruby, tags: [yes]}]",
        "images[0].tags[0]: YAML read a boolean (true) here, not a string: write it in quotes "
        "(yes, no, on and off are booleans too)",
    ),
    (
        "off",
        "images: [{source: ruby, tags: [off]}]",
        "images[0].tags[0]: YAML read a boolean (false) here, not a string: write it in quotes "
        "(yes, no, on and off are booleans too)",
    ),
    (
        "null",
        "images: [{source: ruby, tags: [null]}]",
        "images[0].tags[0]: expected a non-empty string, got nothing",
    ),
    (
        "5,000 digits as a tag",
        "images: [{source: ruby, tags: [" + "1" * 5000 + "]}]",
        "images[0].tags[0]: YAML read " + "1" * 40 + "... (5000 characters) as a number, not a "
        "string: write it in quotes",
    ),
    (
        "5,000 digits as newest",
        "images: [{source: ruby, tags: {newest: " + "9" * 5000 + "}}]",
        "images[0].tags.newest: expected a whole number of 1 or more, got "
        + "9" * 40
        + "... (5000 characters) (a number)",
    ),
    (
        "5,000 digits as an account",
        "ecr: {registry_id: " + "1" * 5000 + "}",
        "ecr.registry_id: YAML read " + "1" * 40 + "... (5000 characters) as a number, not a "
        "string: write it in quotes",
    ),
    (
        "5,000 digits as a key",
        "? " + "1" * 5000 + "\n: x",
        "1" * 40 + "... (5000 characters) (a number): unknown key (expected one of: source, ecr, "
        "defaults, images)",
    ),
    (
        "octal account",
        "ecr: {registry_id: 012345670123}",
        'ecr.registry_id: write the account ID in quotes, as a string ("012345670123"): a number '
        "loses leading zeros",
    ),
    (
        "boolean account",
        "ecr: {registry_id: on}",
        "ecr.registry_id: YAML read a boolean (true) here, not a string: write it in quotes "
        "(yes, no, on and off are booleans too)",
    ),
    (
        "wide digits account",
        f"ecr: {{registry_id: '{WIDE}'}}",
        f"ecr.registry_id: expected a 12-digit account ID, got '{WIDE}'",
    ),
    (
        "regex as a number",
        "images: [{source: ruby, tags: {match: 3.10}}]",
        "images[0].tags.match: YAML read 3.10 as a number (3.1), not a string: write it in "
        'quotes: "3.10"',
    ),
    (
        "!!bool maybe",
        "ecr: {create_repositories: !!bool maybe}",
        "ecr.create_repositories: expected true or false, got maybe (a boolean)",
    ),
    (
        "date as a repository tag value",
        "images: [{source: ruby, tags: [a], repository_settings: {tags: {day: 2024-01-15}}}]",
        "images[0].repository_settings.tags.day: expected a string, got 2024-01-15 (a date) "
        "(write it in quotes)",
    ),
    (
        "date in a lifecycle policy",
        "ecr: {repository_settings: {lifecycle_policy: {rules: [{rulePriority: 1, "
        "selection: 2024-01-15, action: 1}]}}}",
        "ecr.repository_settings.lifecycle_policy: holds a value JSON cannot express (a date?)",
    ),
    ("defaults as a list", "defaults: []", "defaults: expected a mapping, got a list"),
    (
        "second ecr",
        "ecr:\n  region: us-east-1\n  repository_prefix: hub\nimages: []\n"
        "ecr:\n  region: eu-west-1",
        "ecr: the key appears twice, on lines 1 and 5",
    ),
    (
        "second source in an image",
        "images:\n  - source: ruby\n    tags: [a]\n    source: node",
        "images[0].source: the key appears twice, on lines 2 and 4",
    ),
    (
        "host key twice",
        "source:\n  credentials:\n    ghcr.io: {username_env: A, password_env: B}\n"
        "    ghcr.io: {username_env: C, password_env: D}",
        'source.credentials["ghcr.io"]: the key appears twice, on lines 3 and 4',
    ),
    (
        "key twice on one line",
        "ecr: {region: us-east-1, region: eu-west-1}",
        "ecr.region: the key appears twice, on line 1",
    ),
    (
        "quoted and plain key",
        "images: [{source: ruby, tags: [a], 'tags': [b]}]",
        "images[0].tags: the key appears twice, on line 1",
    ),
    (
        "a boolean key",
        "yes: 1",
        "true (a boolean): unknown key (expected one of: source, ecr, defaults, images)",
    ),
    ("NUL character", "a: \x00", "character '\\x00' at position 3: not allowed in YAML"),
    ("nested too deeply", "[" * 3000, "YAML nested too deeply"),
    (
        "regex lookahead",
        "images: [{source: ruby, tags: {exclude: '(?!7).*'}}]",
        "images[0].tags.exclude: bad regular expression '(?!7).*': invalid perl operator: (?! "
        "(tag rules use RE2 syntax, which matches in linear time: no backreferences or "
        "lookarounds; \\z, not \\Z)",
    ),
    (
        "regex backreference",
        "images: [{source: ruby, tags: {match: '(a)\\1'}}]",
        "images[0].tags.match: bad regular expression '(a)\\\\1': invalid escape sequence: \\1 "
        "(tag rules use RE2 syntax, which matches in linear time: no backreferences or "
        "lookarounds; \\z, not \\Z)",
    ),
    (
        "regex repeat too large",
        "images: [{source: ruby, tags: {match: 'a{1001}'}}]",
        "images[0].tags.match: bad regular expression 'a{1001}': invalid repetition size: {1001}"
        " (tag rules use RE2 syntax, which matches in linear time: no backreferences or "
        "lookarounds; \\z, not \\Z)",
    ),
    (
        "two documents",
        "images: []\n---\nimages: []",
        "line 2, column 1: YAML syntax error: but found another document",
    ),
    (
        "lifecycle policy from a device",
        "ecr: {repository_settings: {lifecycle_policy: /dev/zero}}",
        "ecr.repository_settings.lifecycle_policy: '/dev/zero' is not a regular file",
    ),
]
# Names: hosts and ports, digests, one image in two spellings, ECR's rule for names.
BAD_NAMES = [
    (
        "Docker Hub credentials twice",
        "source: {credentials: {docker.io: {username_env: A, password_env: B}, "
        "index.docker.io: {username_env: C, password_env: D}}}",
        'source.credentials["index.docker.io"]: the same registry as '
        'source.credentials["docker.io"] (docker.io)',
    ),
    (
        "source.registry port too high",
        "source: {registry: 'registry:99999'}",
        "source.registry: bad registry host 'registry:99999' (port 99999 is not 1 to 65535)",
    ),
    (
        "source.registry port 0",
        "source: {registry: 'registry:0'}",
        "source.registry: bad registry host 'registry:0' (port 0 is not 1 to 65535)",
    ),
    (
        "host name too long",
        f"source: {{registry: {'a' * 251}.io}}",
        f"source.registry: bad registry host '{'a' * 40}... (254 characters)' (longer than 253 "
        "characters)",
    ),
    (
        "endpoint port",
        "ecr: {endpoint: 'localhost:65536'}",
        "ecr.endpoint: bad registry host 'localhost:65536' (port 65536 is not 1 to 65535)",
    ),
    (
        "credential host port",
        "source: {credentials: {'ghcr.io:70000': {username_env: A, password_env: B}}}",
        "source.credentials[\"ghcr.io:70000\"]: bad registry host 'ghcr.io:70000' (port 70000 is "
        "not 1 to 65535)",
    ),
    (
        "image host port",
        "images: [{source: 'host:99999/x', tags: [a]}]",
        "images[0].source: bad registry host 'host:99999' (port 99999 is not 1 to 65535) in "
        "image name 'host:99999/x'",
    ),
    (
        "image host port 0",
        "images: [{source: 'host:0/xy', tags: [a]}]",
        "images[0].source: bad registry host 'host:0' (port 0 is not 1 to 65535) in image name "
        "'host:0/xy'",
    ),
    (
        "digest too short",
        f"images: [{{source: ruby, tags: ['a@sha256:{HEX[:63]}']}}]",
        f"images[0].tags[0]: bad digest 'sha256:{HEX[:63]}' (sha256 takes 64 lowercase hex "
        "digits, got 63)",
    ),
    (
        "digest uppercase",
        f"images: [{{source: ruby, tags: ['a@sha256:{HEX.upper()}']}}]",
        f"images[0].tags[0]: bad digest 'sha256:{HEX.upper()}' (sha256 takes 64 lowercase hex "
        "digits, got 'A')",
    ),
    (
        "digest md5",
        f"images: [{{source: ruby, tags: ['a@md5:{HEX[:32]}']}}]",
        f"images[0].tags[0]: bad digest 'md5:{HEX[:32]}' (registries take sha256, sha384 or "
        "sha512, not 'md5')",
    ),
    (
        "digest sha512 short",
        f"images: [{{source: ruby, tags: ['a@sha512:{HEX}']}}]",
        f"images[0].tags[0]: bad digest 'sha512:{HEX}' (sha512 takes 128 lowercase hex digits, "
        "got 64)",
    ),
    (
        "digest without hex",
        "images: [{source: ruby, tags: ['a@sha256']}]",
        "images[0].tags[0]: bad digest 'sha256' (expected sha256: and 64 lowercase hex digits)",
    ),
    (
        "same image in two spellings",
        "images: [{source: alpine, tags: ['3.20']}, "
        "{source: docker.io/library/alpine, tags: ['3.20']}]",
        "images[1].tags[0]: docker.io/library/alpine:3.20 is already listed at images[0].tags[0] "
        "('alpine' and 'docker.io/library/alpine' are one image)",
    ),
    (
        "same image, pinned, other host spelling",
        "images: [{source: alpine, tags: ['3.20']}, "
        f"{{source: Index.Docker.IO/alpine, tags: ['3.19', '3.20@sha256:{HEX}']}}]",
        "images[1].tags[1]: docker.io/library/alpine:3.20 is already listed at images[0].tags[0] "
        "('alpine' and 'Index.Docker.IO/alpine' are one image)",
    ),
    (
        "same image written the same way",
        "images: [{source: alpine, tags: ['3.20']}, {source: alpine, tags: ['3.20'], "
        "platforms: [linux/arm64]}]",
        "images[1].tags[0]: docker.io/library/alpine:3.20 is already listed at images[0].tags[0]",
    ),
    (
        "ECR name of one character",
        "images: [{source: ruby, tags: [a], repository: a}]",
        f"images[0].repository: bad ECR repository name 'a' (1 character; {ECR_RULE})",
    ),
    (
        "derived ECR name of one character",
        "source: {registry: 'localhost:5000'}\nimages: [{source: 'localhost:5000/x', tags: [a]}]",
        f"images[0].source: bad ECR repository name 'x' from the source path (1 character; "
        f"{ECR_RULE})",
    ),
    (
        "derived ECR name too long with the host",
        f"ecr: {{repository_prefix: hub}}\nimages: [{{source: 'quay.io/{'q' * 246}', tags: [a]}}]",
        f"images[0].source: bad ECR repository name 'hub/quay.io/{'q' * 246}' from "
        f"ecr.repository_prefix + the host and path (258 characters; {ECR_RULE})",
    ),
    (
        "a derived name that reads as another registry's",
        "images: [{source: docker.io/localhost/app, tags: [a]}]",
        "images[0].source: its path 'localhost/app' starts with 'localhost', which is also how "
        "another registry's host is written in derived names: give it an explicit repository",
    ),
    (
        "a tag rule in another source's repository",
        "images: [{source: ghcr.io/org/app, tags: {newest: 2}, repository: hub/org/app},"
        " {source: org/app, tags: ['1'], repository: hub/org/app}]",
        "images[1]: hub/org/app is also the repository of images[0] (ghcr.io/org/app), and a "
        "tag rule may choose any tag: give one of them another repository",
    ),
    (
        "derived ECR name too long",
        f"ecr: {{repository_prefix: {'p' * 250}}}\nimages: [{{source: ruby, tags: [a]}}]",
        f"images[0].source: bad ECR repository name '{'p' * 250}/library/ruby' from "
        f"ecr.repository_prefix + the source path (263 characters; {ECR_RULE})",
    ),
    (
        "derived ECR name too long in a second target",
        f"ecr: [{{region: us-east-1}}, {{region: eu-west-1, repository_prefix: {'p' * 250}}}]\n"
        "images: [{source: ruby, tags: [a]}]",
        f"images[0].source: bad ECR repository name '{'p' * 250}/library/ruby' from "
        f"ecr[1].repository_prefix + the source path (263 characters; {ECR_RULE})",
    ),
    (
        "a host key that is a number",
        "source: {credentials: {1.5: {username_env: A, password_env: B}}}",
        "source.credentials.1.5 (a number): unknown key (expected one of: username_env, "
        "password_env, secrets_manager)",
    ),
]
# AWS regions, and credentials that must never be shown.
BAD_AWS = [
    (
        "region with a space",
        "ecr: {region: 'us-east-1 '}",
        "ecr.region: 'us-east-1 ' is not an AWS region name (did you mean 'us-east-1'?)",
    ),
    (
        "region without dashes",
        "ecr: {region: useast1}",
        "ecr.region: 'useast1' is not an AWS region name (did you mean 'us-east-1'?)",
    ),
    (
        "region in capitals",
        "ecr: [{region: us-east-1}, {region: EU-WEST-1}]",
        "ecr[1].region: 'EU-WEST-1' is not an AWS region name (did you mean 'eu-west-1'?)",
    ),
    (
        "not a region",
        "ecr: {region: virginia}",
        "ecr.region: 'virginia' is not an AWS region name (expected one like us-east-1)",
    ),
    (
        "a token as password_env",
        "source: {credentials: {username_env: U, password_env: dckr_pat_2b3e36beeb386dfdaacb9b46}}",
        "source.credentials.password_env: expected the name of an environment "
        "variable (capitals, digits and '_'), like "
        "DOCKERHUB_TOKEN; got what looks like an access token (not shown)",
    ),
    (
        "a password as password_env",
        "source: {credentials: {username_env: U, password_env: 'hunter2!'}}",
        "source.credentials.password_env: expected the name of an environment "
        "variable (capitals, digits and '_'), like "
        "DOCKERHUB_TOKEN; got text that is not a name (not shown: it may be a secret)",
    ),
    (
        "a PIN as password_env",
        "source: {credentials: {username_env: U, password_env: 123456}}",
        "source.credentials.password_env: expected the name of an environment "
        "variable (capitals, digits and '_'), like "
        "DOCKERHUB_TOKEN; got a number (not shown: it may be a secret)",
    ),
]
BAD_INPUT = BAD_YAML + BAD_NAMES + BAD_AWS


@pytest.mark.parametrize(
    ("text", "message"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_messages(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mirror.yaml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert str(caught.value) == f"{path}: {message}"


def test_secrets_never_appear_in_messages(tmp_path: Path) -> None:
    for secret in ("dckr_pat_2b3e36beeb386dfdaacb9b46", "hunter2!", "s3cr3t value", "123456"):
        for key in ("username_env", "password_env"):
            other = "password_env" if key == "username_env" else "username_env"
            path = tmp_path / "mirror.yaml"
            path.write_text(f"source: {{credentials: {{{other}: X, {key}: {secret!r}}}}}\n")
            with pytest.raises(ConfigError) as caught:
                config.load(path)
            assert secret not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "images: [{source: ruby, tags: ['2024-01-15', '3.10', 'yes', '012']}]",
        "images: [{source: ruby, tags: [2024-1-5, 1e3, v1.10]}]",  # strings to YAML 1.1 too
        "ecr: {create_repositories: yes, tls_verify: on}",  # booleans where booleans belong
        "images: [{source: ruby, tags: {newest: 0x3}}]",
        # a merge key, then a key it also brings: an override, not a duplicate
        "images:\n  - &ruby {source: ruby, tags: [a]}\n  - {<<: *ruby, source: node}",
    ],
)
def test_quoted_and_meant_values_still_load(tmp_path: Path, text: str) -> None:
    load_text(tmp_path, text)


def test_merged_keys_are_overridden_not_duplicated(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path, "images:\n  - &ruby {source: ruby, tags: [a]}\n  - {<<: *ruby, source: node}\n"
    )
    assert [str(image.source) for image in loaded.images] == [
        "docker.io/library/ruby",
        "docker.io/library/node",
    ]
