"""Per-image overhead of mirror over a bare `skopeo copy`, on distinct images (no alias tags,
so every tag is a real copy): `python -m bench.overhead [--images 40] [--delay 0.03]`.

Three ways over the same images, each into its own empty destination, alternated image by
image where it can be:
- bare: `skopeo copy --all --preserve-digests`, one process per image (subprocess);
- wrapper: mirror's own skopeo runner (mirror.skopeo.Skopeo.copy: sh, --debug, auth file);
- sync: `mirror sync --jobs 1` over all of them (checks, copies, report), one process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from mirror import skopeo
from tests.standins.aws import ECR_PASSWORD, ECR_USER, Moto
from tests.standins.demo import environment
from tests.standins.hub import HubFront
from tests.standins.images import make_image, skopeo_policy_file, write_auth_file
from tests.standins.registry import Registry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--delay", type=float, default=0.03)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mirror-overhead-") as directory:
        work = Path(directory)
        with (
            Registry(work / "source") as backend,
            HubFront(backend.url, delay=args.delay) as hub,
            Registry(work / "ecr", htpasswd=(ECR_USER, ECR_PASSWORD)) as ecr,
            Moto() as moto,
        ):
            names = [f"library/img{n}" for n in range(args.images)]
            for name in names:
                make_image(backend.host, name, "1", seed=name, layer_sizes=(200_000,), workdir=work)
            bare = _bare(work, hub, ecr, names)
            wrapper = _wrapper(hub, ecr, names)
            sync = _sync(work, hub, ecr, moto, names)
    per_bare = statistics.mean(bare)
    print(f"{args.images} distinct single-platform images, {args.delay * 1000:.0f} ms per request")
    print(f"bare skopeo copy:        {per_bare * 1000:7.1f} ms per image (mean)")
    wrapped = statistics.mean(wrapper)
    print(f"mirror's skopeo wrapper: {wrapped * 1000:7.1f} ms per image, "
          f"overhead {(wrapped - per_bare) * 1000:+.1f} ms")  # fmt: skip
    whole = sync / args.images
    print(f"mirror sync --jobs 1:    {whole * 1000:7.1f} ms per image (whole run / images), "
          f"overhead {(whole - per_bare) * 1000:+.1f} ms")  # fmt: skip
    return 0


def _bare(work: Path, hub: HubFront, ecr: Registry, names: list[str]) -> list[float]:
    auth = write_auth_file(work / "auth.json", ecr.host, ECR_USER, ECR_PASSWORD)
    policy = skopeo_policy_file(work)
    times = []
    for name in names:
        started = time.monotonic()
        subprocess.run(
            ["skopeo", "--policy", str(policy), "copy", "--authfile", str(auth), "--all",
             "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
             f"docker://{hub.host}/{name}:1", f"docker://{ecr.host}/bare/{name}:1"],
            check=True, capture_output=True,
        )  # fmt: skip
        times.append(time.monotonic() - started)
    return times


def _wrapper(hub: HubFront, ecr: Registry, names: list[str]) -> list[float]:
    from mirror.oci import Login

    times = []
    with skopeo.Workspace() as workspace:
        workspace.write_auths({ecr.host: Login(ECR_USER, ECR_PASSWORD)})
        tool = skopeo.Skopeo(workspace)
        for name in names:
            started = time.monotonic()
            tool.copy(
                f"{hub.host}/{name}:1",
                f"{ecr.host}/wrapper/{name}:1",
                src_tls_verify=False,
                dest_tls_verify=False,
            )
            times.append(time.monotonic() - started)
    return times


def _sync(work: Path, hub: HubFront, ecr: Registry, moto: Moto, names: list[str]) -> float:
    config = work / "mirror.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "source": {"registry": hub.host, "tls_verify": False},
                "ecr": {"region": "us-east-1", "repository_prefix": "sync", "endpoint": ecr.host,
                        "tls_verify": False},
                "images": [{"source": name, "tags": ["1"]} for name in names],
            }
        )
    )  # fmt: skip
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "mirror", "sync", "-c", str(config), "--jobs", "1"],
        env=environment(moto.url, work), check=True, capture_output=True,
    )  # fmt: skip
    return time.monotonic() - started


if __name__ == "__main__":
    raise SystemExit(main())
