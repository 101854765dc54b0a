"""Reproducible corpora of base-image-like tags, and pushing them to a source registry.

:func:`generate`, the alias-rich corpus: like Docker Hub's official images, a few repositories
with many tags, about half of them aliases of another tag (``3.3.6``, ``3.3``, ``3.3-stable``...
all the same digest), half of the images single-platform and the rest with two or three
platforms, layers from a few KB to tens of MB, and a shared base layer per flavour (``debian``,
``slim``, ``alpine``) so blobs repeat across tags and repositories as they do on Docker Hub.

:func:`distinct`, the distinct-image corpus (issue 18): no alias to exploit, every tag its own
image, the same layer sizes and base layers, a quarter of the images multi-platform.

The same arguments always give the same corpus and the same digests.
"""

from __future__ import annotations

import dataclasses
import math
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import urllib3

from tests.standins.images import make_image
from tests.standins.registry import MANIFEST_ACCEPT

REPOSITORIES = (
    "library/ruby",
    "library/node",
    "library/python",
    "library/golang",
    "library/debian",
    "library/alpine",
    "library/redis",
    "library/postgres",
    "library/nginx",
    "bitnami/kafka",
    "grafana/grafana",
    "hashicorp/terraform",
)
TAGS_PER_REPOSITORY = 10
VARIANTS = ("", "-slim", "-alpine")
# base flavour of each variant: (name, size of its one shared layer in bytes)
BASES = {"": ("debian", 5_000_000), "-slim": ("slim", 2_000_000), "-alpine": ("alpine", 600_000)}
PLATFORM_SETS = (
    ("linux/amd64",),
    ("linux/amd64", "linux/arm64"),
    ("linux/amd64", "linux/arm64", "linux/arm/v7"),
)
PLATFORM_WEIGHTS = (0.5, 0.35, 0.15)
ALIAS_COUNTS = (0, 1, 2, 3)
ALIAS_WEIGHTS = (0.35, 0.3, 0.2, 0.15)
SMALL_LAYER = (4_000, 1_000_000)  # bytes, drawn log-uniformly
BIG_LAYER = (8_000_000, 24_000_000)  # bytes, uniformly: one image in BIG_LAYER_EVERY has one
BIG_LAYER_EVERY = 24  # (the 6th, the 30th, ...: even a small corpus has one)
MIN_LAYER = 64
_HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=60))


@dataclass(frozen=True)
class Image:
    """One distinct image pushed with make_image; its aliases are more tags for the same digest."""

    repository: str
    tag: str
    platforms: tuple[str, ...]
    layer_sizes: tuple[int, ...]
    base: str
    seed: str
    aliases: tuple[str, ...] = ()

    @property
    def tags(self) -> tuple[str, ...]:
        return (self.tag, *self.aliases)


@dataclass(frozen=True)
class Corpus:
    images: tuple[Image, ...]
    base_layers: dict[str, bytes]
    seed: int

    @property
    def tags(self) -> int:
        return sum(len(image.tags) for image in self.images)

    @property
    def repositories(self) -> dict[str, list[str]]:
        """Every repository and its tags, in corpus order."""
        result: dict[str, list[str]] = {}
        for image in self.images:
            result.setdefault(image.repository, []).extend(image.tags)
        return result

    def changed(self) -> Image:
        """The image re-pushed with a new seed for the one-changed-tag run: the first
        multi-platform image (the common case on Docker Hub), else the first image."""
        multi = [image for image in self.images if len(image.platforms) > 1]
        return (multi or list(self.images))[0]

    def summary(self) -> dict[str, int]:
        platform_manifests = sum(len(image.platforms) for image in self.images)
        unique_layer_bytes = sum(
            sum(image.layer_sizes) * len(image.platforms) for image in self.images
        )
        return {
            "tags": self.tags,
            "distinct_images": len(self.images),
            "repositories": len(self.repositories),
            "multi_platform_images": sum(len(image.platforms) > 1 for image in self.images),
            "platform_manifests": platform_manifests,
            "approx_blob_bytes": unique_layer_bytes + sum(map(len, self.base_layers.values())),
        }


def repository_name(index: int) -> str:
    """Repository ``index``: the list above, then the same names with a number (``ruby2``).

    Their last path parts differ, which `skopeo sync` needs (it keeps only the last part).
    """
    base = REPOSITORIES[index % len(REPOSITORIES)]
    round_ = index // len(REPOSITORIES)
    return base if round_ == 0 else f"{base}{round_ + 1}"


def generate(tags: int, *, seed: int = 6, scale: float = 1.0) -> Corpus:
    """A corpus of exactly ``tags`` tags; ``scale`` multiplies every layer size (smoke tests)."""
    if tags < 1:
        raise ValueError("a corpus needs at least one tag")
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not crypto
    repo_count = max(1, round(tags / TAGS_PER_REPOSITORY))
    per_repo = [tags // repo_count + (i < tags % repo_count) for i in range(repo_count)]
    images: list[Image] = []
    for index, count in enumerate(per_repo):
        repository = repository_name(index)
        group = 0
        left = count
        while left > 0:
            aliases = min(left - 1, rng.choices(ALIAS_COUNTS, ALIAS_WEIGHTS)[0])
            big = len(images) % BIG_LAYER_EVERY == 5
            images.append(
                _image(rng, repository, group, aliases=aliases, seed=seed, scale=scale, big=big)
            )
            left -= 1 + aliases
            group += 1
    return Corpus(tuple(images), _base_layers(seed, scale), seed)


def distinct(
    images: int = 32,
    repositories: int = 16,
    *,
    multi_every: int = 4,
    seed: int = 18,
    scale: float = 1.0,
) -> Corpus:
    """``images`` tags, each its own image (no aliases), spread evenly over ``repositories``;
    every ``multi_every``-th image multi-platform (two platforms, every other one three), the
    rest linux/amd64 only. Layers as in :func:`generate` (one image in 24 with a big one)."""
    if images < 1 or repositories < 1:
        raise ValueError("a corpus needs at least one image and one repository")
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not crypto
    made: list[Image] = []
    groups: dict[str, int] = {}
    for number in range(images):
        repository = repository_name(number % min(repositories, images))
        group = groups.get(repository, 0)
        groups[repository] = group + 1
        big = number % BIG_LAYER_EVERY == 5
        image = _image(rng, repository, group, aliases=0, seed=seed, scale=scale, big=big)
        made.append(dataclasses.replace(image, platforms=_distinct_platforms(number, multi_every)))
    return Corpus(tuple(made), _base_layers(seed, scale), seed)


def _distinct_platforms(number: int, multi_every: int) -> tuple[str, ...]:
    if multi_every < 1 or number % multi_every != multi_every - 1:
        return PLATFORM_SETS[0]
    return PLATFORM_SETS[1 + (number // multi_every) % 2]


def _base_layers(seed: int, scale: float) -> dict[str, bytes]:
    return {
        name: random.Random(f"{seed}|base|{name}").randbytes(_scaled(size, scale))  # noqa: S311
        for name, size in BASES.values()
    }


def _image(
    rng: random.Random,
    repository: str,
    group: int,
    *,
    aliases: int,
    seed: int,
    scale: float,
    big: bool,
) -> Image:
    variant = VARIANTS[group % len(VARIANTS)]
    version = f"{1 + group // 9}.{(group // 3) % 3}"
    tag = f"{version}.{rng.randint(0, 20)}{variant}"
    alias_tags = (f"{version}{variant}", f"{version}-stable{variant}", f"{version}-lts{variant}")
    sizes = [
        _scaled(math.exp(rng.uniform(*map(math.log, SMALL_LAYER))), scale)
        for _ in range(rng.randint(1, 3))
    ]
    if big:
        sizes.append(_scaled(rng.uniform(*BIG_LAYER), scale))
    return Image(
        repository=repository,
        tag=tag,
        platforms=rng.choices(PLATFORM_SETS, PLATFORM_WEIGHTS)[0],
        layer_sizes=tuple(sizes),
        base=BASES[variant][0],
        seed=f"{seed}|{repository}|{tag}",
        aliases=alias_tags[:aliases],
    )


def _scaled(size: float, scale: float) -> int:
    return max(MIN_LAYER, int(size * scale))


def push(corpus: Corpus, registry_host: str, workdir: Path, *, workers: int = 3) -> None:
    """Push every image (make_image, a few at a time), then tag its aliases by manifest PUT."""
    workdir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [
            pool.submit(push_image, corpus, image, registry_host, workdir)
            for image in corpus.images
        ]:
            future.result()
    for image in corpus.images:
        for alias in image.aliases:
            tag_manifest(registry_host, image.repository, image.tag, alias)


def push_image(
    corpus: Corpus, image: Image, registry_host: str, workdir: Path, *, seed: str | None = None
) -> str:
    """Push one image (with another ``seed`` to change its digest); return its digest."""
    return make_image(
        registry_host,
        image.repository,
        image.tag,
        platforms=image.platforms,
        layer_sizes=image.layer_sizes,
        seed=seed or image.seed,
        base_layers=[corpus.base_layers[image.base]],
        workdir=workdir,
    )


def tag_manifest(registry_host: str, repository: str, tag: str, alias: str) -> None:
    """Give ``repository:tag``'s manifest another tag: GET it and PUT the same bytes."""
    base = f"http://{registry_host}/v2/{repository}/manifests"
    got = _HTTP.request("GET", f"{base}/{tag}", headers={"Accept": MANIFEST_ACCEPT})
    if got.status != 200:
        raise RuntimeError(f"GET {repository}:{tag}: HTTP {got.status}")
    media_type = got.headers["Content-Type"]
    put = _HTTP.request(
        "PUT", f"{base}/{alias}", body=got.data, headers={"Content-Type": media_type}
    )
    if put.status not in (200, 201):
        raise RuntimeError(f"PUT {repository}:{alias}: HTTP {put.status}: {put.data!r}")
