"""`mirror validate`: the config file, and the AWS settings sync would refuse, checked without
asking AWS."""

from __future__ import annotations

import argparse

from mirror import aws, config
from mirror.commands import write_result
from mirror.commands.run import Console, Stop
from mirror.connect import region_of
from mirror.errors import Exit


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
    write_result(text + "\n")
    return Exit.OK


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" + ("" if number == 1 else "s")
