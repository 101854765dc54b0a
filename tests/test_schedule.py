"""The schedule step alone (mirror/schedule.py), with fake ports: the ledger and what enters it
(Metered sources), the estimate of a copy's pulls, admission with reservations, the end's
re-read, and back-pressure."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from mirror.errors import MirrorError, RateLimited, RegistryError
from mirror.http import Response
from mirror.model import Job, Pending, Place, Task
from mirror.oci import OCI_INDEX, OCI_MANIFEST, Descriptor, Manifest, RateLimit, TagList
from mirror.reference import ImageRef, Repository
from mirror.referrers import Listing
from mirror.schedule import (
    Admission,
    Backpressure,
    Ledger,
    estimate,
    jobs,
    pulls_after,
    reread,
)

HUB = "docker.io"
LIMITED = f"{HUB}: pull rate limit reached (429 TOOMANYREQUESTS); run again later"


@dataclass
class FakeSource:
    """A source registry (ports.Source) that answers with what it is given, or raises 429."""

    host: str = HUB
    rate_limit: RateLimit | None = field(default_factory=lambda: RateLimit(100, 40))
    limited: bool = False
    heads: int = 0
    digestless: bool = False  # HEAD gives no digest: describe_manifest GETs it
    fail_get: bool = False
    gets: int = 0

    def _answer(self) -> None:
        if self.limited:
            raise RateLimited(self.host)

    def head_manifest(self, path: str, reference: str) -> Descriptor:
        self._answer()
        self.heads += 1
        return Descriptor(found=True, digest="sha256:a", rate_limit=self.rate_limit)

    def describe_manifest(self, path: str, reference: str, *, get: bool = True) -> Descriptor:
        self._answer()
        if get and self.digestless:
            return self.read_manifest(path, reference)
        digest = None if self.digestless else "sha256:a"
        return Descriptor(found=True, digest=digest, rate_limit=self.rate_limit)

    def read_manifest(self, path: str, reference: str) -> Descriptor:
        self._answer()
        self.gets += 1
        if self.fail_get:
            raise RegistryError(f"{self.host}: 503")
        return Descriptor(
            found=True, digest="sha256:a", rate_limit=self.rate_limit, fetched=True, body=b"{}"
        )

    def pull_manifest(self, path: str, reference: str) -> Manifest | None:
        self._answer()
        return None if reference == "gone" else Manifest(OCI_MANIFEST, b"{}", self.rate_limit)

    @contextlib.contextmanager
    def blob(self, path: str, digest: str) -> Iterator[Response]:
        self._answer()
        yield Response(200, {}, b"")

    def head_blob(self, path: str, digest: str) -> Response:
        self._answer()
        return Response(200, {}, b"")

    def list_tags(self, path: str) -> TagList:
        self._answer()
        return TagList(("a",))

    def list_referrers(self, path: str, digest: str) -> Listing | None:
        self._answer()
        return None

    def check_login(self, path: str) -> None:
        self._answer()


def pending(
    tag: str,
    *,
    order: int = 0,
    digest: str = "sha256:a",
    host: str = HUB,
    source: Descriptor | None = None,
    platforms: tuple[str, ...] = (),
) -> Pending:
    image = ImageRef(Repository(host, "library/ruby"), tag)
    task = Task(image, tag, ("mirror/library/ruby",), platforms, order=(order, 0))
    head = source or Descriptor(found=True, digest=digest, media_type=OCI_MANIFEST)
    return Pending(task, 0, f"ecr/mirror/library/ruby:{tag}", digest, None, head)


# --- the ledger ---------------------------------------------------------------------------------


def test_the_ledger_keeps_the_first_and_the_latest_figures_and_the_pulls_spent() -> None:
    ledger = Ledger()
    ledger.see(HUB, RateLimit(100, 40))
    ledger.pulled(HUB, RateLimit(100, 39))
    ledger.see(HUB, None)  # no limit sent: nothing changes
    (budget,) = ledger.snapshot()
    assert (budget.start, budget.last, budget.spent) == (RateLimit(100, 40), RateLimit(100, 39), 1)
    assert ledger.pulls_left() == 39


def test_shortfall_counts_reservations_and_max_pulls_and_a_429_blocks_the_host() -> None:
    ledger = Ledger(max_pulls=3)
    ledger.see(HUB, RateLimit(100, 2))
    assert ledger.shortfall(HUB, 2) is None
    assert ledger.reserve(("a", 0), HUB, 1) is None
    assert ledger.shortfall(HUB, 2) == (
        f"{HUB}: pull budget: needs 2, 1 left of 100; run again later"
    )
    assert ledger.reserve(("b", 0), HUB, 1) is None
    assert ledger.shortfall("quay.io", 2) == "--max-pulls 3: needs 2, 1 left; run again later"
    ledger.release(("a", 0))
    ledger.release(("b", 0))
    assert ledger.shortfall("quay.io", 2) is None
    ledger.limited(HUB, LIMITED)
    ledger.limited(HUB, "a later reason")  # the first one stays
    assert ledger.blocked(HUB) == LIMITED
    assert ledger.shortfall(HUB, 1) == LIMITED
    assert ledger.shortfall(HUB, 0) is None  # filled from a target: no pull, never short


def test_a_copy_that_learns_it_needs_more_counts_the_others_promises() -> None:
    """An index of indexes tells its real size only once read: the copy asks for the rest
    beside what the other copies running hold (--jobs 2 --max-pulls 10 spent 11 when only
    the spent pulls were counted)."""
    ledger = Ledger(max_pulls=10)
    assert ledger.reserve(("a", 0), HUB, 5) is None  # an index counted from its size
    assert ledger.reserve(("b", 0), HUB, 1) is None  # another image, running beside it
    ledger.pulled(HUB, None)  # a's top index
    assert ledger.extend(("a", 0), HUB, 9) == "--max-pulls 10: needs 9, 8 left; run again later"
    assert ledger.reserved() == {HUB: 6}  # refused: a keeps what it held
    assert ledger.extend(("a", 0), HUB, 8) is None  # 1 spent + 8 + b's 1
    assert ledger.reserved() == {HUB: 9}
    ledger.release(("a", 0))
    ledger.release(("b", 0))
    assert ledger.reserved() == {}


def test_a_claim_leaves_the_pulls_reserved_for_the_copies_running() -> None:
    """A referrer's or a signature's GET, promised while copies run (the verify gate's in a
    job), never takes the pulls those copies were admitted with."""
    ledger = Ledger()
    ledger.see(HUB, RateLimit(100, 1))
    assert ledger.reserve(("a", 0), HUB, 1) is None  # one copy running, one pull promised
    assert ledger.claim(HUB) == f"{HUB}: pull budget: needs 1, 0 left of 100; run again later"
    ledger.release(("a", 0))  # the copy ended
    assert ledger.claim(HUB) is None
    ledger.unclaim(HUB)


# --- what enters it: metered sources ------------------------------------------------------------


def test_a_metered_source_enters_each_answer() -> None:
    ledger = Ledger()
    source = ledger.meter(FakeSource(digestless=True))
    source.head_manifest("library/ruby", "3.3")
    source.describe_manifest("library/ruby", "3.3", get=False)
    assert ledger.snapshot()[0].spent == 0  # HEADs are no pulls
    source.describe_manifest("library/ruby", "3.3", get=True)  # a GET for the digest
    source.pull_manifest("library/ruby", "sha256:a")
    source.pull_manifest("library/ruby", "gone")  # not there: nothing spent
    with source.blob("library/ruby", "sha256:b"):
        pass
    (budget,) = ledger.snapshot()
    assert (budget.spent, budget.limited) == (2, None)


def test_a_get_for_a_digest_is_promised_from_the_budget_before_it_is_made() -> None:
    """Checks run at once: each GET is claimed with the HEAD's figures in, so two checks with
    one pull left make one GET, and --max-pulls 1 is never overrun."""
    ledger = Ledger()
    source = ledger.meter(FakeSource(rate_limit=RateLimit(100, 1), digestless=True))
    first = ledger.meter(FakeSource(rate_limit=RateLimit(100, 1), digestless=True))
    ledger.claim(HUB)  # a GET of another check, not answered yet
    assert not source.describe_manifest("library/ruby", "3.3", get=True).fetched
    ledger.unclaim(HUB)  # that one failed: its pull is given back
    assert first.describe_manifest("library/ruby", "3.3", get=True).fetched
    (budget,) = ledger.snapshot()
    assert (budget.spent, budget.last) == (1, RateLimit(100, 0))
    assert (
        ledger.shortfall(HUB, 1) == f"{HUB}: pull budget: needs 1, 0 left of 100; run again later"
    )

    capped = Ledger(max_pulls=1)
    answered = [capped.meter(FakeSource(rate_limit=None, digestless=True)) for _ in range(3)]
    fetched = [s.describe_manifest("library/ruby", "3.3", get=True).fetched for s in answered]
    assert fetched == [True, False, False]


def test_a_promise_is_given_back_when_the_get_fails() -> None:
    ledger = Ledger(max_pulls=1)

    with pytest.raises(RegistryError):
        ledger.meter(FakeSource(digestless=True, fail_get=True)).describe_manifest("r", "3.3")
    assert ledger.shortfall("quay.io", 1) is None  # nothing promised, nothing spent
    ledger.meter(FakeSource(digestless=True)).describe_manifest("r", "3.3", get=False)
    assert ledger.shortfall("quay.io", 1) is None


@pytest.mark.parametrize("call", ["head", "describe", "pull", "blob", "tags", "login"])
def test_a_429_from_any_request_to_a_source_blocks_its_host(call: str) -> None:
    ledger = Ledger()
    source = ledger.meter(FakeSource(limited=True))
    with pytest.raises(RateLimited):
        if call == "head":
            source.head_manifest("library/ruby", "3.3")
        elif call == "describe":
            source.describe_manifest("library/ruby", "3.3")
        elif call == "pull":
            source.pull_manifest("library/ruby", "sha256:a")
        elif call == "blob":
            with source.blob("library/ruby", "sha256:b"):
                pass
        elif call == "tags":
            source.list_tags("library/ruby")
        else:
            source.check_login("library/ruby")
    assert ledger.blocked(HUB) == LIMITED


# --- the estimate -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "cost"),
    [
        (Descriptor(found=True, digest="sha256:a", media_type=OCI_MANIFEST), (1, True)),
        (Descriptor(found=True, digest="sha256:a", fetched=True), (0, True)),  # GET kept
        (Descriptor(found=True, digest="sha256:a", media_type=OCI_INDEX, size=840), (11, False)),
        (Descriptor(found=True, digest="sha256:a", media_type=OCI_INDEX), (1001, False)),
    ],
)
def test_estimate_counts_a_copys_pulls_never_too_low(
    source: Descriptor, cost: tuple[int, bool]
) -> None:
    assert estimate(pending("a", source=source)) == cost


def test_a_copy_filled_from_a_target_costs_no_pull() -> None:
    filled = Pending(pending("a").task, 1, "ecr2/mirror/library/ruby:a", "sha256:a", None)
    assert estimate(filled) == (0, True)


def test_pulls_after_the_top_manifest_is_read() -> None:
    index = json.dumps(
        {
            "manifests": [
                {"digest": "sha256:1", "platform": {"os": "linux", "architecture": "amd64"}},
                {"digest": "sha256:2", "platform": {"os": "linux", "architecture": "arm64"}},
            ]
        }
    ).encode()
    assert pulls_after(Manifest(OCI_INDEX, index), ()) == 2
    assert pulls_after(Manifest(OCI_INDEX, index), ("linux/arm64",)) == 1
    assert pulls_after(Manifest(OCI_MANIFEST, b"{}"), ()) == 0


# --- jobs and admission -------------------------------------------------------------------------


def test_alias_tags_of_one_image_are_one_job_in_config_order() -> None:
    made = jobs([pending("b", order=1), pending("a", order=0), pending("c", order=2, digest="x")])
    assert [[p.task.tag for p in job.pendings()] for job in made] == [["a", "b"], ["c"]]


@dataclass
class FakeHoldings:
    donors: dict[str, Place] = field(default_factory=dict)

    def donor(self, pending: Pending) -> Place | None:
        return self.donors.get(pending.task.tag)


@dataclass
class FakeManifests:
    index: bytes = b""
    reads: int = 0

    def describe(self, host: str, path: str, reference: str, *, get: bool) -> Descriptor:
        raise AssertionError("admission describes nothing")

    def manifest(
        self, host: str, path: str, digest: str, *, deadline: float | None = None
    ) -> Manifest:
        self.reads += 1
        if not self.index:
            raise MirrorError("unreadable")
        return Manifest(OCI_INDEX, self.index)

    def has(self, host: str, path: str, digest: str) -> bool:
        return False

    def warnings(self) -> list[str]:
        return []


def admission(
    *pendings: Pending, left: int = 100, holdings: FakeHoldings | None = None, index: bytes = b""
) -> tuple[Admission, Ledger, FakeManifests]:
    ledger = Ledger()
    ledger.see(HUB, RateLimit(100, left))
    manifests = FakeManifests(index)
    return (
        Admission(jobs(pendings), ledger, holdings or FakeHoldings(), manifests),
        ledger,
        manifests,
    )


def test_admission_reserves_the_pulls_of_the_jobs_running_until_they_are_done() -> None:
    queue, _, _ = admission(pending("a"), pending("b", order=1, digest="sha256:b"), left=1)
    first = queue.next()
    assert first is not None and first.lead.task.tag == "a"
    assert queue.reserved() == {HUB: 1}
    assert queue.next() is None  # b needs the one pull a holds
    queue.done(first)
    second = queue.next()
    assert second is not None and second.lead.task.tag == "b"


def test_admission_takes_a_later_job_that_fits_and_says_why_the_others_wait() -> None:
    queue, _, _ = admission(
        pending("a"), pending("b", order=1, digest="sha256:b", host="quay.io"), left=0
    )
    started = queue.next()
    assert started is not None and started.host == "quay.io"
    assert queue.next() is None
    (waiting,) = queue.left()
    assert waiting[1] == f"{HUB}: pull budget: needs 1, 0 left of 100; run again later"


def test_a_job_whose_image_a_target_holds_costs_nothing() -> None:
    place = Place(0, "mirror/library/ruby", "b", "ecr/mirror/library/ruby:b")
    queue, _, _ = admission(pending("a"), left=0, holdings=FakeHoldings({"a": place}))
    assert queue.next() is not None
    assert queue.reserved() == {HUB: 0}


def test_an_index_counted_high_is_read_to_learn_its_real_count() -> None:
    index = json.dumps({"manifests": [{"digest": "sha256:1"}, {"digest": "sha256:2"}]}).encode()
    big = Descriptor(found=True, digest="sha256:a", media_type=OCI_INDEX, size=8400)  # 101
    queue, _, manifests = admission(pending("a", source=big), left=5, index=index)
    job = queue.next()
    assert isinstance(job, Job)
    assert (queue.reserved(), manifests.reads) == ({HUB: 2}, 1)
    unread, _, _ = admission(pending("a", source=big), left=5)  # the read fails: still high
    assert unread.next() is None


def test_an_index_is_not_read_when_the_budget_cannot_cover_it_and_one_entry() -> None:
    """With one pull left, reading the index would spend it on a copy that cannot start."""
    index = json.dumps({"manifests": [{"digest": "sha256:1"}]}).encode()
    big = Descriptor(found=True, digest="sha256:a", media_type=OCI_INDEX, size=8400)
    queue, _, manifests = admission(pending("a", source=big), left=1, index=index)
    assert queue.next() is None
    assert manifests.reads == 0
    ((_, why),) = queue.left()
    assert why == f"{HUB}: pull budget: needs 2, 1 left of 100; run again later"


# --- the end's re-read --------------------------------------------------------------------------


def test_reread_asks_each_host_pulled_from_once_for_its_own_figures() -> None:
    ledger = Ledger()
    hub, quay = FakeSource(rate_limit=RateLimit(100, 37)), FakeSource("quay.io", rate_limit=None)
    sources = {HUB: ledger.meter(hub), "quay.io": ledger.meter(quay)}
    ledger.pulled(HUB, RateLimit(100, 39))
    ledger.pulled("quay.io", None)  # no limit told: nothing to read
    done = [pending("a"), pending("b", order=1), pending("c", order=2, host="quay.io")]
    reread(ledger, done, sources.__getitem__)
    assert (hub.heads, quay.heads) == (1, 0)
    assert ledger.snapshot()[0].last == RateLimit(100, 37)
    hub.limited = True
    reread(ledger, done, sources.__getitem__)
    assert ledger.blocked(HUB) == LIMITED


# --- back-pressure ------------------------------------------------------------------------------


def test_backpressure_halves_once_per_burst_and_climbs_back_one_at_a_time() -> None:
    pressure = Backpressure(8, calm=3600.0)
    pressure.throttled("ecr")
    pressure.throttled("ecr")  # the same burst: one signal
    assert (pressure.limit, pressure.throttled_requests) == (4, 2)
    for _ in range(4):
        pressure.succeeded()
    assert pressure.limit == 5
