"""ECR's PutImage quota, end to end through `mirror` (issue 18).

ECR allows 10 manifest writes (PutImage) a second per account and Region, shared by every shard
of a batch build (FACTS.md). mirror paces its own writes and the copies' starts by the
manifests each copy writes, each shard at its share of `ecr.put_image_rate`, and says so when a
run had to wait. The ECR-like front here enforces a quota of its own (`put_image_rate`).
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import time

import yaml

from tests.stage import Run, Stage, wait_until


def paced_lines(run: Run) -> list[str]:
    return [line for line in (run.stdout + run.stderr).splitlines() if "paced at" in line]


def test_copies_wait_for_the_put_image_pace_and_say_so(stage: Stage) -> None:
    """Four copies at once against a quota of 1 a second: each waits its turn to start. skopeo
    writes a copy's manifest at its end, so two copies may still end together: such a 429 is
    ECR's back-pressure, and the copy is tried again (its blobs are there already)."""
    front = stage.use_ecr(put_image_rate=1)
    digests = {tag: stage.push(tag, seed=f"pace-{tag}") for tag in ("a", "b", "c", "d")}
    stage.config([stage.image(*digests)], ecr={"put_image_rate": 1})
    run = stage.mirror("sync", timeout=180)
    assert (run.code, run.actions()) == (0, ["copied"] * 4), run.stderr
    assert {tag: stage.dest_digest(tag) for tag in digests} == digests
    [line] = paced_lines(run)
    throttled = front.counts.throttled["manifest_put"]
    writes = 4 + throttled
    assert f"{front.host}: {writes} manifest writes paced at 1 a second " in line
    assert "(ecr.put_image_rate 1): waited" in line
    assert len(front.put_times) == writes


def test_mirror_s_own_writes_keep_the_quota_exactly(stage: Stage) -> None:
    """Alias tags are written by mirror itself (a manifest PUT each, after the one copy):
    paced at the PUT and counted when done, none of them meets a 429."""
    front = stage.use_ecr(put_image_rate=1)
    digest = stage.push("1.0.0", seed="aliases")
    aliases = ["1.0", "1", "latest"]
    for alias in aliases:
        assert stage.push(alias, seed="aliases") == digest  # one image, four tags
    stage.config([stage.image("1.0.0", *aliases)], ecr={"put_image_rate": 1})
    run = stage.mirror("sync", "--jobs", "1", timeout=180)
    assert (run.code, run.actions()) == (0, ["copied"] * 4), run.stderr
    assert {stage.dest_digest(tag) for tag in ["1.0.0", *aliases]} == {digest}
    assert front.counts.throttled["manifest_put"] == 0
    times = front.put_times
    assert len(times) == 4
    assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(times))
    [line] = paced_lines(run)
    assert "4 manifest writes paced at 1 a second" in line


def test_a_shard_takes_its_share_of_the_rate(stage: Stage) -> None:
    tags = [f"t{number}" for number in range(6)]
    for tag in tags:
        stage.push(tag, seed=f"shard-{tag}")
    stage.config([stage.image(*tags)], ecr={"put_image_rate": 2})
    copied = 0
    for shard in ("1/2", "2/2"):
        run = stage.mirror("sync", "--shard", shard, timeout=180)
        assert run.code == 0, run.stderr
        count = run.actions().count("copied")
        copied += count
        lines = paced_lines(run)
        if count >= 2:  # a second's worth at 1 a second is one write: the second one waits
            [line] = lines
            assert f"{count} manifest writes paced at 1 a second" in line
            assert "(ecr.put_image_rate 2 / 2 shards)" in line
        else:
            assert lines == []
    assert copied == len(tags)


def test_a_rate_of_null_does_not_pace_and_a_no_op_never_waits(stage: Stage) -> None:
    digests = {tag: stage.push(tag, seed=f"null-{tag}") for tag in ("a", "b", "c")}
    stage.config([stage.image(*digests)], ecr={"put_image_rate": None})
    run = stage.mirror("sync", timeout=180)
    assert (run.code, run.actions(), paced_lines(run)) == (0, ["copied"] * 3, [])
    stage.config([stage.image(*digests)], ecr={"put_image_rate": 0.01})
    again = stage.mirror("sync", timeout=180)  # nothing to write: nothing to wait for
    assert (again.code, again.actions(), paced_lines(again)) == (0, ["up-to-date"] * 3, [])


def test_a_bad_rate_is_one_line_naming_the_key(stage: Stage) -> None:
    stage.config([stage.image("a")], ecr={"put_image_rate": 0})
    run = stage.mirror("sync", report=False)
    assert run.code == 2
    [line] = [line for line in run.stderr.splitlines() if line.strip()]
    assert "ecr.put_image_rate" in line and "above 0" in line


def test_two_targets_on_one_registry_share_one_pace_the_lowest(stage: Stage) -> None:
    """Two targets on one ECR registry (other repository prefixes) share its account's
    quota: every manifest write to it, whichever target's, keeps the lowest rate configured,
    and the run says so in one line."""
    front = stage.use_ecr(put_image_rate=1)
    digest = stage.push("1.0.0", seed="two-targets")
    for alias in ("1.0", "1"):
        assert stage.push(alias, seed="two-targets") == digest
    path = stage.config([stage.image("1.0.0", "1.0", "1")])
    document = yaml.safe_load(path.read_text())
    first = {**document["ecr"], "put_image_rate": 2}
    second = {**document["ecr"], "repository_prefix": "copy", "put_image_rate": 1}
    document["ecr"] = [first, second]
    path.write_text(yaml.safe_dump(document))
    run = stage.mirror("sync", "--jobs", "1", timeout=180)
    assert (run.code, run.actions()) == (0, ["copied"] * 6), run.stderr
    assert front.counts.throttled["manifest_put"] == 0
    times = front.put_times
    assert len(times) == 6
    assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(times))
    [line] = paced_lines(run)
    assert f"{front.host}: 6 manifest writes paced at 1 a second (ecr.put_image_rate 1)" in line


def test_a_stop_while_copies_wait_for_the_pace_ends_them_and_says_only_what_happened(
    stage: Stage,
) -> None:
    """At 0.01 a second the first copy goes at once and the other two are told to wait 100
    and 200 s: SIGTERM ends them at once, and the pacing line counts the one write that went
    through and the wait that was, not the 300 s they were told."""
    tags = ["a", "b", "c"]
    for tag in tags:
        stage.push(tag, seed=f"stop-{tag}")
    stage.config([stage.image(*tags)], ecr={"put_image_rate": 0.01})
    log = stage.tmp / "stderr.log"
    report = stage.tmp / "stop-report.json"
    started = time.monotonic()
    with log.open("w") as stderr:
        process = stage.popen("-v", "sync", "--jobs", "3", "--report", str(report), stderr=stderr)
        wait_until(lambda: log.read_text().count("pacing manifest writes") == 2, process)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    elapsed = time.monotonic() - started
    assert process.returncode == 143, log.read_text()
    written = json.loads(report.read_text())
    assert sorted(image["action"] for image in written["images"]).count("deferred") >= 2
    [line] = [line for line in log.read_text().splitlines() if "paced at" in line]
    found = re.search(r": (\d+) manifest writes? paced at .*: waited ([\d.]+) s", line)
    assert found is not None, line
    assert int(found[1]) == 1 and "1 manifest write paced" in line
    assert float(found[2]) <= elapsed
