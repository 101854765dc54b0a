"""Outside text, read the way an attacker writes it: each parser and pattern gives the right
answer on hostile input, and what is quoted is short. (How long they take on the worst cases is
measured in bench/hostile.py, not here.)"""

from __future__ import annotations

import base64

import pytest

import mirror.http
from mirror import dockerfile, errors
from mirror.config import TagRule
from mirror.errors import RegistryError, hide_passwords, quoted, remember_login, remember_secret
from mirror.http import Http, is_inner, same_origin
from mirror.registry import _next_page, _read_token, parse_challenge
from tests.standins.misbehaving import Answer, Scripted

MB = 1 << 20


@pytest.fixture(autouse=True)
def own_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets remembered here stay here (the set is process-wide)."""
    monkeypatch.setattr(errors, "_SECRETS", errors._Secrets())


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://user:pw@host/x", "http://user:***@host/x"),
        ("proxy https://a:b@c:3128 failed", "proxy https://a:***@c:3128 failed"),
        ("no password: ftp://x@y and http://u:p", "no password: ftp://x@y and http://u:p"),
        ("://:@", "://:***@"),
        ("a://b://c:d@e", "a://b://c:***@e"),
    ],
)
def test_passwords_in_urls_are_hidden(text: str, shown: str) -> None:
    assert hide_passwords(text) == shown


@pytest.mark.parametrize(
    "hostile",
    ["a" * MB, "://" * (MB // 3), "://:" * (MB // 4), "://" + "a" * MB, "x:" * (MB // 2)],
)
def test_hiding_passwords_in_hostile_text_changes_nothing_else(hostile: str) -> None:
    assert hide_passwords(hostile) == hostile.replace("://:@", "://:***@")


def test_every_form_of_a_remembered_login_is_hidden() -> None:
    remember_login("someone", "pa$$word-42")
    basic = base64.b64encode(b"someone:pa$$word-42").decode()
    text = f'sent "Authorization: Basic {basic}", pa$$word-42 and someone:pa$$word-42'
    assert hide_passwords(text) == 'sent "Authorization: Basic ***", *** and ***'
    assert "pa$$word" not in hide_passwords('{"p": "pa$$word-42"}')


def test_a_remembered_token_is_hidden_and_short_values_are_not_remembered() -> None:
    remember_secret("eyJhbGciOi.token.value", "abc")
    assert hide_passwords("Bearer eyJhbGciOi.token.value") == "Bearer ***"
    assert hide_passwords("abc") == "abc"  # shorter than _Secrets.SHORTEST: ordinary text


def test_quoted_cuts_long_text_and_hides_first() -> None:
    remember_secret("hunter2-secret")
    text = "x" * 290 + "hunter2-secret" + "y" * 5000
    shown = quoted(text)
    assert shown.startswith("x" * 290 + "***")
    assert shown.endswith(f"... ({len(text):,} characters)")
    assert len(shown) < errors.QUOTED + 40
    assert quoted("short") == "short"


@pytest.mark.parametrize(
    ("header", "realm", "service"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/ruby:pull"',
            "https://auth.docker.io/token",
            "registry.docker.io",
        ),
        (
            'Basic realm="https://1.dkr.ecr.x.amazonaws.com/",service="ecr.amazonaws.com"',
            "https://1.dkr.ecr.x.amazonaws.com/",
            "ecr.amazonaws.com",
        ),
        ("Bearer realm=https://a/t, service=s", "https://a/t", "s"),
        ('Bearer REALM="https://a/t\\"x"', 'https://a/t"x', ""),
        ("Bearer " + "a" * MB, "", ""),
        ("Bearer " + "a=" * (MB // 2), "", ""),
        ('Bearer realm="' + "x" * MB, "x" * MB, ""),
        ("Bearer " + ", " * MB, "", ""),
    ],
)
def test_challenges_parse_as_rfc_7235_says(header: str, realm: str, service: str) -> None:
    challenge = parse_challenge(header)
    assert (challenge.realm, challenge.service) == (realm, service)


@pytest.mark.parametrize(
    ("link", "following"),
    [
        ('</v2/x/tags/list?last=b&n=2>; rel="next"', "/v2/x/tags/list?last=b&n=2"),
        ("<https://h/v2/x/tags/list?last=b>;rel=next", "/v2/x/tags/list?last=b"),
        ('</v2/p>; rel="prev", </v2/n>; rel="next"', "/v2/n"),
        ('<https://elsewhere/other>; rel="next"', None),
        ("<" * MB, None),
        ("<>" * (MB // 2), None),
        ("<a>;" * (MB // 4), None),
        ('</v2/x>; rel="nextish"', None),
    ],
)
def test_link_headers_parse_in_one_scan(link: str, following: str | None) -> None:
    assert _next_page(link) == following


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("https://h/v2/", "https://h:443/v2/x", True),
        ("https://H/v2/", "https://h/v2/", True),
        ("https://h/v2/", "http://h/v2/", False),
        ("https://h/v2/", "http://h:443/v2/", False),
        ("http://h:5000/", "http://h:5001/", False),
        ("https://h/", "https://g/", False),
        ("https://h:bad/", "https://h:bad/", False),
    ],
)
def test_same_origin_is_scheme_host_and_effective_port(first: str, second: str, same: bool) -> None:
    assert same_origin(first, second) is same


@pytest.mark.parametrize(
    ("address", "inner"),
    [
        ("127.0.0.2", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("::1", True),
        ("fe80::1%eth0", True),
        ("fd00::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", True),
        ("8.8.8.8", False),
        ("2a00:1450::1", False),
        ("not-an-address", False),
    ],
)
def test_inner_addresses(address: str, inner: bool) -> None:
    assert is_inner(address) is inner


def test_a_tag_rule_with_nested_quantifiers_is_matched_whole_and_at_once() -> None:
    rule = TagRule(match=r"(\d+\.?)+", exclude=r"(a|a)*b")
    assert rule.select(["1" * 40 + "x", "1.2.3", "a" * 100]) == ["1.2.3"]


DOUBLING = "ARG A0=xx\n" + "".join(f"ARG A{n + 1}=${{A{n}}}${{A{n}}}\n" for n in range(40))


@pytest.mark.parametrize(
    ("text", "images"),
    [
        ("# syntax=docker/dockerfile:1" + " " * MB + "\nFROM a\n", ["docker/dockerfile:1", "a"]),
        ("# syntax=" + " \t" * (MB // 2) + "x\nFROM a\n", ["x", "a"]),
        ("FROM a\nRUN " + '"' * MB + "\n", ["a"]),
        ("FROM a\nRUN " + "'" * MB + "\n", ["a"]),
        ("FROM a\nRUN " + "\\ " * (MB // 2) + "\n", ["a"]),
        ('ARG X="' + '\\"' * (MB // 2) + "\nFROM a\n", ["a"]),
        ("FROM a\n" + "RUN x\n" * (MB // 6), ["a"]),
        ("FROM a\nRUN --mount=" + "from=x," * (MB // 8) + " true\n", ["a", "x"]),
        (DOUBLING + "FROM a:${A3}\n", ["a:" + "xx" * 8]),
    ],
)
def test_hostile_dockerfiles_parse_as_buildkit_reads_them(text: str, images: list[str]) -> None:
    assert dockerfile.images(dockerfile.parse(text)) == images


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (DOUBLING + "FROM a:${A40}\n", "line 42: expands to more than 4,096 characters"),
        (
            "FROM a\nCOPY --from=" + '"' * (MB // 2) + "img" + '"' * (MB // 2) + " / /\n",
            "line 2: COPY --from=img: its quotes leave no place to write another image",
        ),
        ("ARG V=" + "a" * 5000 + "\nFROM x${V##*b}\n", "line 2: expands to more than 4,096"),
        ("[" * MB, "line 1: no FROM instruction"),
        ("FROM $" + "A" * MB + "\n", "line 1: unknown variable $AAAAAAAAAA"),
    ],
)
def test_hostile_dockerfiles_fail_with_a_short_message(text: str, message: str) -> None:
    with pytest.raises(dockerfile.DockerfileError) as caught:
        dockerfile.parse(text)
    assert str(caught.value).startswith(message)
    assert len(str(caught.value)) < 500


def test_the_socket_check_refuses_an_inner_address_a_name_hides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As if 127.0.0.1 were a public registry and the redirect named a host that resolves to
    127.0.0.2: the name passes the check of what is written, the connected socket does not."""
    monkeypatch.setattr(mirror.http, "is_inner", lambda address: address != "127.0.0.1")
    monkeypatch.setattr(mirror.http, "_named_inner", lambda host: False)
    with Scripted(lambda method, path: Answer.json(200, {}), address="127.0.0.2") as inside:
        location = f"http://{inside.host}/v2/"
        with Scripted(lambda method, path: Answer(302, {"Location": location})) as registry:
            with pytest.raises(RegistryError) as refused:
                Http(environ={}).request("GET", f"http://{registry.host}/v2/")
            allowed = Http(environ={}).request("GET", f"http://{inside.host}/v2/")
    assert str(refused.value) == (
        f"{registry.host}: a redirect to {inside.host}, which is at 127.0.0.2, a loopback, "
        "private or link-local address, refused: the registry is not on one"
    )
    assert inside.asked == [inside.asked[0]]  # only the direct request: nothing was sent
    assert allowed.status == 200


def test_a_registry_cannot_blank_out_words_with_a_short_token() -> None:
    assert _read_token(b'{"token": "failed"}', "odd") == ("failed", 60.0)
    assert hide_passwords("failed") == "failed"
    _read_token(b'{"token": "eyJhbGciOiJSUzI1NiJ9.long"}', "odd")
    assert hide_passwords("Bearer eyJhbGciOiJSUzI1NiJ9.long") == "Bearer ***"
