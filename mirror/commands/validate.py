"""`mirror validate`: the config file, and the AWS settings sync would refuse, checked without
asking AWS; what travels with the images (referrers) and what the verify gate asks of them."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import TYPE_CHECKING

from mirror import aws, config
from mirror.commands import write_result
from mirror.commands.run import Console, Stop
from mirror.connect import region_of
from mirror.errors import Exit
from mirror.referrers import MOVING_TAG_FILTERS

if TYPE_CHECKING:
    from mirror.signatures import Policy


def run(args: argparse.Namespace, console: Console, stop: Stop) -> int:
    """Check the config; print what it holds (exit 0), or say what is wrong (exit 2)."""
    loaded = config.load(config.config_path(args.config))
    aws.check_environment()  # what sync would refuse before it starts, without asking AWS
    for target in loaded.targets:
        region_of(loaded, target)
    count = sum(len(image.tags) for image in loaded.images)
    rules = sum(image.rule is not None for image in loaded.images)
    text = f"{loaded.path}: ok ({_count(len(loaded.images), 'image')}, {_count(count, 'tag')}"
    text += f", {_count(rules, 'tag rule')})" if rules else ")"
    lines = [text, *_vouching(loaded)]
    write_result("".join(f"{line}\n" for line in lines))
    return Exit.OK


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" + ("" if number == 1 else "s")


def _vouching(loaded: config.Config) -> list[str]:
    """What travels with the images and what the gate asks of them, in a line each (per
    kind, how many images; the defaults, for `ensure`, when none is listed); and the
    repositories whose immutable tags get the exclusion filters of the tags that move."""
    rules = Counter(str(image.referrers) for image in loaded.images)
    policies = Counter(_policy(image.verify) for image in loaded.images)
    lines = [
        "referrers: " + _tally(rules, f"{loaded.referrers} (the default)"),
        "verify: " + _tally(policies, f"{_policy(loaded.verify)} (the default)"),
    ]
    moved = sorted(
        {
            repository
            for target in loaded.targets
            for repository, settings in loaded.repository_settings(target).items()
            if settings != _unmoved(loaded, target, repository)
        }
    )
    if moved:
        lines.append(
            f"immutable tags but {', '.join(MOVING_TAG_FILTERS)} (the tags of cosign's "
            f"signatures and of referrers indexes, which move) in: {', '.join(moved)}"
        )
    return lines


def _tally(counts: Counter[str], default: str) -> str:
    if not counts:
        return default
    return "; ".join(f"{what} ({_count(number, 'image')})" for what, number in counts.items())


def _policy(policy: Policy | None) -> str:
    if policy is None:
        return "none"
    parts = [f"key {key.name} ({key.fingerprint[:19]}...)" for key in policy.keys]
    parts += [f"identity {identity}" for identity in policy.identities]
    return ", ".join(parts)


def _unmoved(loaded: config.Config, target: config.Target, repository: str) -> object:
    """The repository's settings as configured, before mirror's exclusion filters."""
    for image in loaded.images:
        if loaded.destination_repository(image, target) == repository:
            return image.repository_settings.merged_over(target.repository_settings)
    return None
