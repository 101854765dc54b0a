"""The steps of a run without processes: plan, check, schedule, transfer and the pipeline, with
fake registries and a fake copier; the console's lines, the report, proxies and the lock."""

from __future__ import annotations

import fcntl
import io
import json
import os
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mirror import lock, report
from mirror.config import parse
from mirror.console import Console, image_line, one_line, status_line
from mirror.errors import ConfigError, CopyError, LockHeld, MirrorError, RateLimited
from mirror.http import Response, proxy_for
from mirror.model import (
    Action,
    Attached,
    Copied,
    Outcome,
    Plan,
    Progress,
    Retry,
    Settings,
    Task,
    Unresolved,
)
from mirror.oci import Descriptor, Manifest, RateLimit, TagList
from mirror.pipeline import Pipeline
from mirror.plan import Shard, plan
from mirror.pulls import Pulls
from mirror.reference import ImageRef, Repository
from mirror.referrers import Listing
from mirror.schedule import Ledger
from mirror.state import Looks, Refusals

# --- fakes ---------------------------------------------------------------------------------------


class FakeRegistry:
    """A registry as a dict of `path:reference` -> digest; optional failure for HEADs."""

    def __init__(
        self,
        host: str,
        digests: dict[str, str],
        *,
        fail: Callable[[str], MirrorError | None] = lambda ref: None,
        limit: RateLimit | None = None,
    ):
        self.host = host
        self.api = host
        self.tls_verify = True
        self.digests = digests
        self.fail = fail
        self.limit = limit
        self.heads: list[str] = []

    def head_manifest(self, path: str, reference: str) -> Descriptor:
        self.heads.append(f"{path}:{reference}")
        error = self.fail(f"{path}:{reference}")
        if error:
            raise error
        digest = self.digests.get(f"{path}:{reference}")
        return Descriptor(found=digest is not None, digest=digest, rate_limit=self.limit)

    def describe_manifest(self, path: str, reference: str, *, get: bool = True) -> Descriptor:
        return self.head_manifest(path, reference)

    def read_manifest(self, path: str, reference: str) -> Descriptor:
        return self.head_manifest(path, reference)

    def get_manifest(self, path: str, reference: str) -> dict[str, Any] | None:
        return None

    def get_blob(self, path: str, digest: str) -> bytes | None:
        return None

    def pull_manifest(self, path: str, reference: str) -> Manifest | None:
        digest = self.digests.get(f"{path}:{reference}")
        if reference in self.digests.values():  # by digest
            digest = reference
        return None if digest is None else Manifest("application/json", digest.encode(), self.limit)

    def put_manifest(self, path: str, reference: str, body: bytes, media_type: str) -> str:
        self.digests[f"{path}:{reference}"] = body.decode()
        return body.decode()

    def check_login(self, path: str) -> None:
        pass

    def list_tags(self, path: str) -> TagList:
        return TagList(())

    def blob(self, path: str, digest: str) -> AbstractContextManager[Response]:
        raise AssertionError("blobs are skopeo's, through the relay: no fake copier reads one")

    def head_blob(self, path: str, digest: str) -> Response:
        raise AssertionError("blobs are skopeo's, through the relay: no fake copier reads one")

    def list_referrers(self, path: str, digest: str) -> Listing | None:
        return None  # neither the source nor the target has the referrers API

    def has_blob(self, path: str, digest: str) -> bool:
        raise AssertionError("no referrer in these tests: no blob is asked for")

    def push_blob(self, path: str, digest: str, pieces: Iterable[bytes], *, size: int) -> None:
        raise AssertionError("no referrer in these tests: no blob is written")


@dataclass
class FakeTarget:
    """A target whose repositories all exist, none with immutable tags."""

    host: str
    registry: FakeRegistry

    def ensure_repository(self, repository: str) -> None:
        pass

    def is_immutable(self, repository: str, tag: str) -> bool:
        return False

    def cannot_write(self, repository: str) -> str | None:
        return None


class FakeCopier:
    """Copies by looking the digest up in the source registries; `errors` fail copies in turn,
    after the manifest was pulled (through the relay: once per run, as `Pulls` keeps it)."""

    def __init__(
        self,
        registries: dict[str, FakeRegistry],
        budgets: Ledger,
        errors: list[Exception] | None = None,
    ):
        self.registries = registries
        self.budgets = budgets
        self.errors = errors or []
        self.copies: list[str] = []
        self.pulled: set[str] = set()
        self.deadlines: list[float | None] = []  # each pull's source deadline
        self.lock = threading.Lock()

    def pull(
        self,
        source: Repository,
        digest: str,
        destination: str,
        *,
        dest_tls_verify: bool,
        deadline: float | None = None,
    ) -> Copied:
        self.deadlines.append(deadline)
        registry = self.registries[source.registry]
        assert digest in registry.digests.values(), f"{source}@{digest}: no such manifest"
        with self.lock:
            first = f"{source}@{digest}" not in self.pulled
            self.pulled.add(f"{source}@{digest}")
        if first:  # a GET spends a pull, as on Docker Hub
            if registry.limit is not None:
                registry.limit = RateLimit(registry.limit.limit, registry.limit.remaining - 1)
            self.budgets.pulled(source.registry, registry.limit)
        return self.copy(
            f"{source}@{digest}", destination, src_tls_verify=True, dest_tls_verify=dest_tls_verify
        )

    def copy(
        self, source: str, destination: str, *, src_tls_verify: bool, dest_tls_verify: bool
    ) -> Copied:
        with self.lock:
            self.copies.append(source)
            if self.errors:
                raise self.errors.pop(0)
        host, _, path_reference = source.partition("/")
        registry = self.registries[host]
        _, at, pinned = path_reference.partition("@")
        digest = pinned if at else registry.digests[path_reference]
        assert digest in registry.digests.values(), f"{source}: no such manifest"
        dest_host, _, dest_path = destination.partition("/")
        self.registries[dest_host].digests[dest_path] = digest
        return Copied(digest)


class Events:
    """The sink: outcomes in the order they settled."""

    def __init__(self) -> None:
        self.settled_in_order: list[Outcome] = []
        self.progress_seen: list[Progress] = []
        self.attached_in_order: list[Attached] = []

    def settled(self, outcome: Outcome) -> None:
        self.settled_in_order.append(outcome)

    def progress(self, progress: Progress) -> None:
        self.progress_seen.append(progress)

    def attached(self, attached: Attached) -> None:
        self.attached_in_order.append(attached)


def task(tag: str, *, host: str = "src", order: int = 0, digest: str | None = None) -> Task:
    source = ImageRef(Repository(host, "library/ruby"), tag, digest)
    return Task(source, tag, ("hub/library/ruby",), order=(order, 0))


def run(
    tasks: list[Task],
    registries: dict[str, FakeRegistry],
    *,
    errors: list[Exception] | None = None,
    stop: threading.Event | None = None,
    max_pulls: int | None = None,
    **settings: Any,
) -> tuple[list[Outcome], Events, FakeCopier, Ledger]:
    budgets = Ledger(max_pulls)
    copier = FakeCopier(registries, budgets, errors)
    events = Events()
    pipeline = Pipeline(
        sources=lambda host: budgets.meter(registries[host]),
        pulls=Pulls(lambda host: budgets.meter(registries[host])),
        refusals=Refusals(None),
        looks=Looks(None),
        targets=[FakeTarget("ecr", registries["ecr"])],
        copier=copier,
        ledger=budgets,
        settings=Settings(**{"jobs": 2, "retry": Retry(backoff=0.0), **settings}),
        stop=stop or threading.Event(),
        sink=events,
    )

    result = pipeline.run(Plan(tuple(tasks)))
    return result.outcomes, events, copier, budgets


def world(
    source: dict[str, str], ecr: dict[str, str] | None = None, **kw: Any
) -> dict[str, FakeRegistry]:
    return {"src": FakeRegistry("src", source, **kw), "ecr": FakeRegistry("ecr", ecr or {})}


# --- the pipeline --------------------------------------------------------------------------------


def test_copies_what_differs_and_skips_what_matches() -> None:
    registries = world(
        {"library/ruby:a": "sha256:1", "library/ruby:b": "sha256:2"},
        {"hub/library/ruby:a": "sha256:1"},
        limit=RateLimit(10, 9),
    )
    outcomes, _, copier, budgets = run([task("a"), task("b", order=1)], registries)
    assert [(o.action, o.source_digest, o.destination_digest) for o in outcomes] == [
        (Action.UP_TO_DATE, "sha256:1", "sha256:1"),
        (Action.COPIED, "sha256:2", "sha256:2"),
    ]
    assert copier.copies == ["src/library/ruby@sha256:2"]  # by the digest the check saw
    (budget,) = budgets.snapshot()
    assert (budget.host, budget.start, budget.spent) == ("src", RateLimit(10, 9), 1)


def test_dry_run_copies_nothing_and_says_what_it_would_copy() -> None:
    registries = world({"library/ruby:a": "sha256:1"}, {"hub/library/ruby:a": "sha256:0"})
    outcomes, _, copier, _ = run([task("a")], registries, dry_run=True)
    assert [(o.action, o.source_digest, o.destination_digest) for o in outcomes] == [
        (Action.WOULD_COPY, "sha256:1", "sha256:0")
    ]
    assert copier.copies == []


def test_a_missing_tag_fails_only_that_image() -> None:
    outcomes, _, _, _ = run(
        [task("gone"), task("a", order=1)], world({"library/ruby:a": "sha256:1"})
    )
    assert [o.action for o in outcomes] == [Action.FAILED, Action.COPIED]
    assert outcomes[0].error == "src/library/ruby:gone: tag not found on the source"


def test_transient_copy_errors_are_retried_then_fail() -> None:
    registries = world({"library/ruby:a": "sha256:1"})
    reset = CopyError("connection reset", transient=True)
    outcomes, _, copier, _ = run([task("a")], registries, errors=[reset])
    assert [o.action for o in outcomes] == [Action.COPIED]
    assert len(copier.copies) == 2
    outcomes, _, _, budgets = run(
        [task("a")], world({"library/ruby:a": "sha256:1"}), errors=[reset] * 3
    )
    assert (outcomes[0].action, outcomes[0].error) == (
        Action.FAILED,
        "connection reset (after 3 attempts)",
    )
    assert budgets.snapshot()[0].spent == 1  # the manifest was pulled once, for every attempt


def test_permanent_copy_errors_fail_at_once() -> None:
    outcomes, _, copier, _ = run(
        [task("a")], world({"library/ruby:a": "sha256:1"}), errors=[CopyError("denied")]
    )
    assert outcomes[0].error == "denied"
    assert len(copier.copies) == 1


def test_a_429_defers_only_that_sources_images() -> None:
    registries = world({}, fail=lambda ref: RateLimited("src"))
    registries["other"] = FakeRegistry("other", {"library/ruby:b": "sha256:2"})
    outcomes, _, copier, budgets = run([task("a"), task("b", host="other", order=1)], registries)
    assert [o.action for o in outcomes] == [Action.DEFERRED, Action.COPIED]
    assert (
        outcomes[0].error == "src: pull rate limit reached (429 TOOMANYREQUESTS); run again later"
    )
    assert copier.copies == ["other/library/ruby@sha256:2"]
    assert budgets.blocked("src") and not budgets.blocked("other")


def test_a_spent_budget_defers_in_config_order() -> None:
    source = {f"library/ruby:{t}": f"sha256:{t}" for t in "abc"}
    registries = world(source, limit=RateLimit(100, 2))
    tasks = [task(t, order=n) for n, t in enumerate("abc")]
    outcomes, _, _, _ = run(tasks, registries, jobs=1)
    assert [o.action for o in outcomes] == [Action.COPIED, Action.COPIED, Action.DEFERRED]
    assert outcomes[2].error == "src: pull budget: needs 1, 0 left of 100; run again later"


def test_jobs_1_copies_in_the_calling_thread_one_after_another() -> None:
    source = {f"library/ruby:{t}": f"sha256:{t}" for t in "ab"}
    threads: list[str] = []
    running: list[int] = []
    events = Events()

    class Watched(FakeCopier):
        def copy(
            self, source: str, destination: str, *, src_tls_verify: bool, dest_tls_verify: bool
        ) -> Copied:
            threads.append(threading.current_thread().name)
            running.append(events.progress_seen[-1].running)  # what the status line shows now
            return super().copy(
                source, destination, src_tls_verify=src_tls_verify, dest_tls_verify=dest_tls_verify
            )

    registries = world(source)
    budgets = Ledger()
    pipeline = Pipeline(
        sources=lambda host: budgets.meter(registries[host]),
        pulls=Pulls(lambda host: budgets.meter(registries[host])),
        refusals=Refusals(None),
        looks=Looks(None),
        targets=[FakeTarget("ecr", registries["ecr"])],
        copier=Watched(registries, budgets),
        ledger=budgets,
        settings=Settings(jobs=1, retry=Retry(backoff=0.0)),
        stop=threading.Event(),
        sink=events,
    )
    result = pipeline.run(Plan((task("a"), task("b", order=1))))
    assert [o.action for o in result.outcomes] == [Action.COPIED, Action.COPIED]
    assert threads == [threading.current_thread().name] * 2
    assert running == [1, 1]  # each copy is counted running while it runs


def test_max_pulls_caps_every_source_together() -> None:
    registries = world({"library/ruby:a": "sha256:1"})
    registries["other"] = FakeRegistry("other", {"library/ruby:b": "sha256:2"})
    outcomes, _, _, _ = run(
        [task("a"), task("b", host="other", order=1)], registries, max_pulls=1, jobs=1
    )
    assert [o.action for o in outcomes] == [Action.COPIED, Action.DEFERRED]
    assert outcomes[1].error == "--max-pulls 1 reached; run again later"


def test_alias_tags_of_one_image_cost_one_pull() -> None:
    source = {f"library/ruby:{t}": "sha256:same" for t in "abc"}
    registries = world(source)
    outcomes, _, copier, _ = run([task(t, order=n) for n, t in enumerate("abc")], registries)
    assert [o.action for o in outcomes] == [Action.COPIED] * 3
    assert copier.copies == ["src/library/ruby@sha256:same"]  # b and c: a manifest PUT in ECR


def test_a_stop_defers_everything_not_started() -> None:
    stop = threading.Event()
    stop.set()
    outcomes, _, copier, _ = run([task("a")], world({"library/ruby:a": "sha256:1"}), stop=stop)
    assert [(o.action, o.error) for o in outcomes] == [
        (Action.DEFERRED, "interrupted before it was done")
    ]
    assert copier.copies == []


def test_outcomes_go_to_the_sink_as_they_settle_and_the_result_keeps_config_order() -> None:
    registries = world({"library/ruby:b": "sha256:2"}, {"hub/library/ruby:b": "sha256:2"})
    outcomes, events, _, _ = run([task("gone"), task("b", order=1)], registries)
    assert [o.tag for o in outcomes] == ["gone", "b"]
    assert sorted(o.tag or "" for o in events.settled_in_order) == ["b", "gone"]
    assert events.progress_seen[-1].done == 2 and events.progress_seen[-1].total == 2


def test_a_pin_already_in_place_asks_the_source_nothing() -> None:
    pinned = task("a", digest="sha256:" + "1" * 64)
    registries = world({}, {"hub/library/ruby:a": "sha256:" + "1" * 64})
    outcomes, _, _, _ = run([pinned], registries)
    assert [o.action for o in outcomes] == [Action.UP_TO_DATE]
    assert registries["src"].heads == []


# --- plan ----------------------------------------------------------------------------------------


def test_plan_resolves_rules_and_turns_unreadable_lists_into_outcomes(tmp_path: Path) -> None:
    config = parse(
        {
            "images": [
                {"source": "ruby", "tags": {"newest": 2}},
                {"source": "node", "tags": {"match": "20.*"}},
                {"source": "redis", "tags": ["7"]},
                {"source": "nginx", "tags": {"newest": 1}},
            ]
        },
        tmp_path / "mirror.yaml",
    )
    made = plan(
        config,
        {
            0: TagList(("3.2", "3.10", "3.9"), warning="cut short"),
            1: Unresolved("tag rule: gone"),
            3: Unresolved("tag rule: 429", Action.DEFERRED),
        },
        hosts=["ecr.example"],
    )
    assert [(t.tag, t.order) for t in made.tasks] == [
        ("3.10", (0, 0)),
        ("3.9", (0, 1)),
        ("7", (2, 0)),
    ]
    assert [(o.action, o.error, o.destination, o.order) for o in made.outcomes] == [
        (Action.FAILED, "tag rule: gone", "ecr.example/library/node", (1, 0)),
        (Action.DEFERRED, "tag rule: 429", "ecr.example/library/nginx", (3, 0)),
    ]
    assert made.warnings == ("images[0] (docker.io/library/ruby): cut short",)
    assert made.notes == (
        "images[0] (docker.io/library/ruby): tag rule chose 2 of 3 tags: 3.10, 3.9",
    )
    unreached = plan(config, {}, hosts=["ecr.example"])
    assert {o.error for o in unreached.outcomes} == {
        "its tag rule was not resolved: the run stopped first"
    }


def test_shards_are_disjoint_and_cover_everything(tmp_path: Path) -> None:
    config = parse(
        {"images": [{"source": "ruby", "tags": [str(n) for n in range(30)]}]}, tmp_path / "m.yaml"
    )
    shards = [plan(config, {}, hosts=["h"], shard=Shard(k, 3)).tasks for k in (1, 2, 3)]
    tags = [t.tag for shard in shards for t in shard]
    assert sorted(tags, key=int) == [str(n) for n in range(30)]
    assert all(shards)


# --- the console and the report ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text", "plain text"),
        ("two\nlines", "two\\nlines"),
        ("cr\rtab\t", "cr\\rtab\\t"),
        ("esc\x1b[2J", "esc\\x1b[2J"),
        ("bidi\u202eevil", "bidi\\u202eevil"),
        ("ünïcode ok", "ünïcode ok"),
    ],
)
def test_outside_text_is_one_line(text: str, shown: str) -> None:
    assert one_line(text) == shown


def test_status_line() -> None:
    progress = Progress(400, {Action.COPIED: 12, Action.UP_TO_DATE: 25, Action.FAILED: 1}, 3, 41)
    assert status_line(progress) == (
        "[38/400] 12 copied · 25 up to date · 1 failed · 3 running · 41 pulls left"
    )
    assert status_line(Progress(2, {})) == "[0/2] 0 copied · 0 up to date"


def _outcome(action: Action, **kw: Any) -> Outcome:
    fields: dict[str, Any] = {
        "source": "docker.io/library/ruby:3.3",
        "destination": "ecr/library/ruby:3.3",
        "repository": "library/ruby",
        "tag": "3.3",
        "action": action,
        **kw,
    }
    return Outcome(**fields)


def test_image_lines_show_the_digest_that_matters() -> None:
    copied = _outcome(
        Action.COPIED,
        source_digest="sha256:" + "a" * 64,
        destination_digest="sha256:" + "b" * 64,
        seconds=1.25,
    )
    assert image_line(copied) == (
        "copied      docker.io/library/ruby:3.3 -> ecr/library/ruby:3.3  sha256:bbbbbbbbbbbb  1.2s"
    )
    would = _outcome(Action.WOULD_COPY, source_digest="sha256:" + "a" * 64)
    assert "sha256:aaaaaaaaaaaa" in image_line(would)
    failed = _outcome(Action.FAILED, error="boom\nforged")
    assert image_line(failed).endswith("0.0s  boom\\nforged")


def test_console_json_lines_and_quiet() -> None:
    out, err = io.StringIO(), io.StringIO()
    console = Console(out=out, err=err, json_lines=True, quiet=True)
    console.settled(_outcome(Action.COPIED))
    console.settled(_outcome(Action.FAILED, error="x"))
    console.info("hidden by --quiet")
    console.warning("shown")
    console.close()
    assert console.closed(5)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["action"], line["error"]) for line in lines] == [("failed", "x")]
    assert [json.loads(line)["message"] for line in err.getvalue().splitlines()] == [
        "mirror: shown"
    ]


def test_report_document_and_junit_keep_the_order_given() -> None:
    outcomes = [
        _outcome(Action.FAILED, error="bad\x00byte", order=(0, 0)),
        _outcome(Action.COPIED, destination_digest="sha256:1", order=(1, 0)),
    ]
    done = report.Report(outcomes, error=None, exit_code=1, seconds=2.0)
    document = report.document(done)
    assert [image["action"] for image in document["images"]] == ["failed", "copied"]
    assert document["summary"] == {"copied": 1, "failed": 1}
    assert 'message="bad\\x00byte"' in report.junit(done)


def test_a_report_path_is_checked_before_anything(tmp_path: Path) -> None:
    assert report.usable(tmp_path / "r.json", "--report") == (tmp_path / "r.json").resolve()
    with pytest.raises(ConfigError, match="is a directory"):
        report.usable(tmp_path, "--report")
    with pytest.raises(ConfigError, match="does not exist"):
        report.usable(tmp_path / "no" / "r.json", "--report")
    with pytest.raises(ConfigError, match="not a regular file"):
        report.usable(Path("/dev/null"), "--report")
    assert list(tmp_path.iterdir()) == []  # the check leaves nothing behind


# --- proxies: Go's rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "environ", "proxy"),
    [
        ("https://registry-1.docker.io/v2/", {"HTTPS_PROXY": "http://p:3128"}, "http://p:3128"),
        ("https://registry-1.docker.io/v2/", {"https_proxy": "p:3128"}, "http://p:3128"),
        (
            "https://r.io/v2/",
            {"HTTPS_PROXY": "http://a:1", "https_proxy": "http://b:1"},
            "http://a:1",
        ),
        ("https://r.io/v2/", {"HTTP_PROXY": "http://p:1"}, None),
        ("http://r.io/v2/", {"HTTP_PROXY": "http://p:1"}, "http://p:1"),
        ("http://127.0.0.1:5000/v2/", {"HTTP_PROXY": "http://p:1"}, None),
        ("http://localhost:5000/v2/", {"HTTP_PROXY": "http://p:1"}, None),
        ("http://[::1]:5000/v2/", {"HTTP_PROXY": "http://p:1"}, None),
        ("https://r.io/v2/", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None),
        ("https://r.io/v2/", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "r.io"}, None),
        ("https://a.r.io/v2/", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "r.io"}, None),
        ("https://r.io/v2/", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".r.io"}, "http://p:1"),
        ("https://a.r.io/v2/", {"HTTPS_PROXY": "http://p:1", "no_proxy": "*.r.io"}, None),
        ("https://xr.io/v2/", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "r.io"}, "http://p:1"),
        ("https://r.io/v2/", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "r.io:8443"}, "http://p:1"),
        ("https://r.io:8443/v2/", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "r.io:8443"}, None),
        ("https://10.1.2.3/v2/", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, None),
        (
            "https://10.1.2.3/v2/",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.1.2.4"},
            "http://p:1",
        ),
        ("https://R.IO/v2/", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": " r.io , x"}, None),
    ],
)
def test_proxy_is_chosen_as_go_chooses_it(
    url: str, environ: dict[str, str], proxy: str | None
) -> None:
    assert proxy_for(url, environ) == proxy


# --- the lock ------------------------------------------------------------------------------------


def test_lock_is_created_whole_and_names_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "sync.lock"
    with lock.held(path):
        assert path.read_bytes() == lock.MARK
        holder = rf"another mirror run \(PID {os.getpid()}\) holds"
        with pytest.raises(LockHeld, match=holder), lock.held(path):
            pass
    assert path.read_bytes() == lock.MARK


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"images: []\n", "exists and is not a mirror lock file"),
        (b"123 and more", "exists and is not"),
    ],
)
def test_a_file_that_is_not_a_lock_is_refused_untouched(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "mirror.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message), lock.held(path):
        pass
    assert path.read_bytes() == content


def test_holder_pid_comes_from_the_kernel(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    path.write_bytes(b"")
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        assert lock.holder_pid(descriptor) == os.getpid()
    finally:
        os.close(descriptor)
