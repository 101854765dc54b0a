"""Issue 10's figure: a first sync of 40 images into the ECR-like front, calm and in a
throttling storm (a fifth of the upload and manifest-PUT requests answered
`429 TOOMANYREQUESTS "Rate exceeded"` for the first 30 seconds), side by side; and issue 18's:
the front keeping a PutImage quota of 2 a second (ECR's 10 shared by five shards), mirror
paced to it (`put_image_rate: 2`) and not paced (`put_image_rate: null`).
`python -m bench.throttle` (about three minutes).

The front sends no Retry-After, as ECR does not: skopeo then waits 2 s before it sends a
throttled request without a body again, and mirror tries a copy that skopeo gave up on again
after its own backoff, with fewer copies at once while the storm lasts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.tools import mirror_config
from tests.standins.aws import ECR_PASSWORD, ECR_USER, Moto
from tests.standins.demo import environment
from tests.standins.ecr import EcrFront
from tests.standins.hub import HubFront
from tests.standins.images import build_image, push_image
from tests.standins.registry import Registry

IMAGES = 40
QUOTA = 2.0  # PutImage a second the front allows in the quota cases
RESULTS = Path(__file__).parent / "results" / "throttle.md"


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="mirror-bench-") as directory:
        work = Path(directory)
        with (
            Registry(work / "source") as backend,
            HubFront(backend.url, delay=0.03) as hub,
            Registry(work / "ecr", htpasswd=(ECR_USER, ECR_PASSWORD)) as ecr_backend,
            Moto() as moto,
            EcrFront(ecr_backend.url, moto.url) as ecr,
        ):
            for number in range(IMAGES):
                top, blobs = build_image(
                    platforms=("linux/amd64",), layer_sizes=(300_000, 50_000), seed=number
                )
                push_image(backend.host, f"library/app{number}", "1", top, blobs)
            env = environment(moto.url, work)
            for storm in (False, True):
                rows.append(first_sync(work, hub, ecr, env, storm=storm))
            ecr.put_image_rate = QUOTA
            for paced in (True, False):
                rows.append(first_sync(work, hub, ecr, env, storm=False, paced=paced))
    table = (
        "| first sync of 40 images | seconds | exit | copied | throttled requests (all retried) |\n"
        "| --- | ---: | ---: | ---: | ---: |\n"
        + "".join(f"| {a} | {b:.1f} | {c} | {d} | {e} |\n" for a, b, c, d, e in rows)
    )
    RESULTS.write_text(f"# bench.throttle\n\n{table}")
    print(table)
    return 0


def first_sync(
    work: Path,
    hub: HubFront,
    ecr: EcrFront,
    env: dict[str, str],
    *,
    storm: bool,
    paced: bool | None = None,
) -> tuple[str, float, int, int, int]:
    """`paced` None: the default pace (10 a second); True: the quota's; False: none."""
    prefix = "storm" if storm else "calm" if paced is None else f"quota-{paced}".lower()
    images: list[dict[str, Any]] = [
        {"source": f"app{number}", "tags": ["1"]} for number in range(IMAGES)
    ]
    rate = {} if paced is None else {"put_image_rate": QUOTA if paced else None}
    path = mirror_config(
        work / f"{prefix}.yaml",
        source=hub.host,
        endpoint=ecr.host,
        prefix=prefix,
        images=images,
        ecr=rate,
    )
    report = work / f"{prefix}.json"
    ecr.reset_counts()
    if storm:
        ecr.throttle_for(30, "upload", every=5)
        ecr.throttle_for(30, "manifest_put", every=5)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "mirror", "sync", "-c", str(path), "--report", str(report)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    ecr.clear_faults()
    written = json.loads(report.read_text())
    throttled = sum(ecr.counts.throttled.values())
    copied = written["summary"].get("copied", 0)
    label = "storm: a fifth of uploads and manifest PUTs throttled for 30 s" if storm else "calm"
    if paced is not None:
        how = f"put_image_rate: {QUOTA:g}" if paced else "put_image_rate: null (not paced)"
        label = f"quota of {QUOTA:g} PutImage a second, {how}"
    return (label, seconds, done.returncode, copied, throttled)


if __name__ == "__main__":
    raise SystemExit(main())
