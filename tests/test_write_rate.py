"""ECR's PutImage quota (issue 18): manifest writes paced, shared by shards, set in the config.

ECR allows 10 PutImage requests a second per account and Region (FACTS.md), shared by every
shard of a batch build; every manifest, index, referrer and tag written is one. These are the
pure parts: the bucket on a fake clock, the config key, each shard's share, and how many
writes a copy reserves.
"""

from __future__ import annotations

import json
import textwrap
import threading
from pathlib import Path

import pytest

from mirror import config, connect
from mirror.errors import ConfigError, Stopped
from mirror.model import Settings
from mirror.oci import Manifest
from mirror.schedule import WriteRate

INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE = "application/vnd.oci.image.manifest.v1+json"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_second_s_worth_goes_at_once_then_one_every_tenth_of_a_second() -> None:
    clock = Clock()
    rate = WriteRate(10, clock=clock)
    assert [rate.delay(1) for _ in range(10)] == [0.0] * 10
    assert rate.delay(1) == pytest.approx(0.1)
    assert rate.delay(1) == pytest.approx(0.2)
    clock.now += 0.2  # the two reserved are made; the bucket is empty again
    assert rate.delay(1) == pytest.approx(0.1)


def test_writers_waiting_together_are_one_wait_of_the_run() -> None:
    """Four copies reserve at 100.0 behind a spent bucket, at 1 a second: they wait 1, 2, 3
    and 4 s, together: the run waited 4 s, not 10; a later wait adds its own length."""
    clock = Clock()
    rate = WriteRate(1, clock=clock)
    assert rate.delay(1) == 0.0
    for end in (101.0, 102.0, 103.0, 104.0):  # told as they end
        rate.waited_between(100.0, end)
    rate.waited_between(110.0, 110.5)
    assert rate.waits == 5
    assert rate.waited == pytest.approx(4.5)


def test_only_the_writes_that_went_through_are_counted() -> None:
    rate = WriteRate(0.01)  # a second write would wait 100 s
    with rate.writing(1):
        pass
    rate.stop()
    with pytest.raises(Stopped), rate.writing(2):
        pass
    assert (rate.writes, rate.waits) == (1, 1)
    assert rate.waited < 100  # it waited until the stop, not the 100 s it was told


def test_an_idle_bucket_refills_to_one_second_s_worth_only() -> None:
    clock = Clock()
    rate = WriteRate(2, clock=clock)
    assert rate.delay(2) == 0.0
    clock.now += 60  # a long copy: the bucket holds 2, not 120
    assert rate.delay(2) == 0.0
    assert rate.delay(1) == pytest.approx(0.5)


def test_a_copy_reserves_all_its_writes_and_waits_for_the_last() -> None:
    clock = Clock()
    rate = WriteRate(1, clock=clock)
    assert rate.delay(4) == pytest.approx(3.0)  # an index and three manifests
    assert rate.delay(1) == pytest.approx(4.0)  # the next copy waits behind them


def test_a_rate_below_one_a_second_still_lets_one_write_through() -> None:
    rate = WriteRate(0.5, clock=Clock())
    assert rate.delay(1) == 0.0
    assert rate.delay(1) == pytest.approx(2.0)


def test_writes_made_late_are_counted_when_made_not_when_reserved() -> None:
    """skopeo writes its manifests at the end of a copy, and a PUT may wait in a queue: the
    writes are taken as made when the writer is done, so the next one keeps its distance from
    them and not only from the reservation."""
    clock = Clock()
    rate = WriteRate(1, clock=clock)
    with rate.writing(1):  # reserved at 100.0: no wait
        clock.now += 0.9  # the copy writes its manifest at its end, at 100.9
    assert rate.delay(1) == pytest.approx(1.0)  # from 100.9, not 0.1 s after the reservation
    clock.now += 60
    with rate.writing(1):
        pass
    assert rate.delay(1) == pytest.approx(1.0)  # an idle bucket holds a second's worth: 1


def test_stopping_wakes_a_waiting_writer_which_raises_stopped() -> None:
    rate = WriteRate(0.01)  # the second write would wait 100 s
    with rate.writing(1):
        pass
    failures: list[BaseException] = []

    def write() -> None:
        try:
            with rate.writing(1):
                raise AssertionError("written after the stop")
        except Stopped as error:
            failures.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    rate.stop()
    writer.join(timeout=30)
    assert not writer.is_alive()
    assert len(failures) == 1
    with pytest.raises(Stopped), rate.writing(1):
        pass


def test_a_rate_of_a_write_a_century_waits_until_the_stop() -> None:
    """A wait past what a thread can be told (threading.TIMEOUT_MAX) is a wait until the
    stop, not an OverflowError."""
    rate = WriteRate(1e-12)
    with rate.writing(1):
        pass
    ended = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        try:
            with rate.writing(1):
                raise AssertionError("written before the stop")
        except BaseException as error:  # what it raised is the assertion
            failures.append(error)
        ended.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert not ended.wait(0.2)  # still waiting (a failure would end it at once)
    rate.stop()
    writer.join(timeout=30)
    assert [type(error) for error in failures] == [Stopped]


def test_a_rate_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="above 0"):
        WriteRate(0)


def load(tmp_path: Path, ecr_lines: str) -> config.Config:
    path = tmp_path / "mirror.yaml"
    text = "source: {registry: docker.io}\necr:\n  region: us-east-1\n" + textwrap.indent(
        ecr_lines, "  "
    )
    path.write_text(text + "images: [{source: library/ruby, tags: ['3.3']}]\n")
    return config.load(path)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", 10.0),
        ("put_image_rate: 25\n", 25.0),
        ("put_image_rate: 2.5\n", 2.5),
        ("put_image_rate: null\n", None),
        ("put_image_rate: ~\n", None),
    ],
)
def test_put_image_rate_as_users_write_it(tmp_path: Path, line: str, expected: float) -> None:
    assert load(tmp_path, line).ecr.put_image_rate == expected


@pytest.mark.parametrize(
    "value",
    ["0", "-1", "fast", "'10'", "true", ".inf", ".nan", "[10]", "{rate: 10}", "1" + "0" * 400],
)
def test_a_put_image_rate_that_is_not_a_rate_is_named(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"put_image_rate: {value}\n")
    message = str(caught.value)
    assert "ecr.put_image_rate" in message
    assert "above 0" in message and "null" in message
    assert "\n" not in message


def target(rate: float | None) -> config.Target:
    return config.Target(region="us-east-1", put_image_rate=rate)


@pytest.mark.parametrize(("shard", "count"), [("1/1", 1), ("2/4", 4), ("3/3", 3)])
def test_the_shard_count_comes_from_the_shard(shard: str, count: int) -> None:
    assert connect.shard_count(Settings(shard=shard)) == count


def test_each_shard_takes_its_share_and_the_words_say_so() -> None:
    made = connect.write_rates([("h", target(10))], 4)["h"]
    assert made is not None and made.per_second == 2.5
    assert connect.pace_source(10, 4) == "ecr.put_image_rate 10 / 4 shards"
    assert connect.pace_source(10, 1) == "ecr.put_image_rate 10"
    assert connect.write_rates([("h", target(None))], 4) == {"h": None}


def test_targets_on_one_host_share_one_pace_the_lowest_whatever_their_order() -> None:
    """One account and Region, one PutImage quota: every target on a host writes through
    one bucket, at the lowest rate any of them sets (null sets none)."""
    for rates in ([10, 5, None, 20], [None, 20, 5, 10]):
        made = connect.write_rates([("h", target(rate)) for rate in rates], 1)
        assert list(made) == ["h"]
        assert made["h"] is not None and made["h"].per_second == 5
    apart = connect.write_rates([("h", target(10)), ("other", target(10))], 1)
    assert apart["h"] is not apart["other"]


class _Target:
    def __init__(self, host: str, writes: WriteRate | None) -> None:
        self.host, self.writes = host, writes


def index(entries: int) -> Manifest:
    entry = {"mediaType": IMAGE, "size": 1}
    manifests = [{**entry, "digest": "sha256:" + f"{n:064x}"} for n in range(entries)]
    body = {"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}
    return Manifest(INDEX, json.dumps(body).encode())


class _Recorder(WriteRate):
    def __init__(self) -> None:
        super().__init__(1000)
        self.taken: list[int] = []

    def delay(self, count: int) -> float:
        self.taken.append(count)
        return 0.0


@pytest.mark.parametrize(
    ("manifest", "count"),
    [(None, 1), (Manifest(IMAGE, b"{}"), 1), (index(3), 4), (index(0), 1)],
)
def test_a_copy_reserves_an_index_and_each_entry(manifest: Manifest | None, count: int) -> None:
    recorder = _Recorder()
    copier = connect.Copier.__new__(connect.Copier)
    copier.targets = [_Target("ecr.example", recorder)]  # type: ignore[list-item]
    with copier._pace("ecr.example/mirror/ruby:3.3", manifest):
        pass
    with copier._pace("elsewhere.example/mirror/ruby:3.3", manifest):  # not a target: not paced
        pass
    assert recorder.taken == [count]
