"""`mirror sync`: every image of the config, its tag rules resolved from the source's tag lists."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from mirror import lock
from mirror.commands.run import Console, Stop, execute, reported, settings_of
from mirror.config import Config, config_path, load
from mirror.connect import Session
from mirror.errors import ConfigError, MirrorError, RateLimited, Stopped
from mirror.model import NOT_RESOLVED, Action, Plan, Settings, Unresolved
from mirror.oci import TagList
from mirror.plan import Shard, plan, rule_images
from mirror.reference import Repository
from mirror.workers import Workers, wait_all

SHARD_ENV = "MIRROR_SHARD"


def run(args: argparse.Namespace, console: Console, stop: Stop) -> int:
    """Mirror every image of the config (holding its lock); the run's exit code."""
    settings = settings_of(args, console)
    with reported(settings, console):
        shard = parse_shard(args.shard or os.environ.get(SHARD_ENV) or "1/1")
    settings = sharded(settings, shard)
    with reported(settings, console):
        loaded = load(config_path(args.config))
        lock_path = Path(args.lock_file) if args.lock_file else lock.default_path(loaded.path)
    # Not recorded: writing a report would replace the lock file (and the lock on it).
    written = {"--report": settings.report, "--junit": settings.junit}
    for option, path in {**written, "--metrics-file": settings.metrics_file}.items():
        if path is not None and lock_path.resolve() == path:
            raise ConfigError(f"--lock-file {lock_path}: also named by {option}")
    done = execute(
        loaded,
        SyncPlanner(loaded, shard),
        settings,
        console,
        stop,
        lock_path=lock_path,
        lock_option="--lock-file" if args.lock_file else lock.DEFAULT_OPTION,
    )
    if done.report.error:
        console.error(done.report.error)
    return done.exit_code


def sharded(settings: Settings, shard: Shard) -> Settings:
    """The settings of shard K/N: the EMF lines' Shard dimension, and with N > 1 a `shard`
    label on the metrics file's samples (unless --metrics-label gave one), so that the
    shards of one config on one host write series of their own."""
    text = f"{shard.index}/{shard.count}"
    labels = settings.metrics_labels
    if shard.count > 1 and "shard" not in dict(labels):
        labels = (*labels, ("shard", text))
    return replace(settings, shard=text, metrics_labels=labels)


def parse_shard(text: str) -> Shard:
    """`K/N`, 1-based: this run takes shard K of N."""
    index, _, count = text.partition("/")
    # ASCII digits only, and few: str.isdigit and int() take '²' and '٣'; int() refuses 5,000.
    digits = all(part.isascii() and part.isdigit() and len(part) <= 9 for part in (index, count))
    if not (digits and 1 <= int(index) <= int(count)):
        raise ConfigError(f"--shard / ${SHARD_ENV}: expected K/N with 1 <= K <= N, got {text!r}")
    return Shard(int(index), int(count))


@dataclass(frozen=True)
class SyncPlanner:
    """`mirror sync`: the config's images; tag rules resolved from the source's tag lists."""

    config: Config
    shard: Shard = field(default_factory=Shard)

    def static(self, hosts: Sequence[str], error: Unresolved) -> Plan:
        rules = {index: error for index, _ in rule_images(self.config)}
        return plan(self.config, rules, hosts=hosts, shard=self.shard)

    def sources(self) -> list[Repository]:
        return [image.source for image in self.config.images]

    def resolve(self, session: Session, stop: Stop, hosts: Sequence[str]) -> Plan:
        rules = rule_images(self.config)
        answers: dict[int, TagList | Unresolved] = {}
        with Workers(min(8, len(rules)), "tags") as workers:
            futures = {
                workers.submit(
                    session.sources(image.source.registry).list_tags, image.source.path
                ): index
                for index, image in rules
            }
            wait_all(futures, until=stop.event.is_set)
            for future, index in futures.items():
                if future.done():
                    answers[index] = _answer(future.exception() or future.result())
        return plan(self.config, answers, hosts=hosts, shard=self.shard)


def _answer(result: TagList | BaseException) -> TagList | Unresolved:
    if isinstance(result, TagList):
        return result
    if isinstance(result, Stopped):
        return Unresolved(NOT_RESOLVED, Action.DEFERRED)
    if isinstance(result, RateLimited):  # the metered source told the ledger: no more today
        return Unresolved(f"tag rule: {result.why}", Action.DEFERRED)
    if isinstance(result, MirrorError):
        return Unresolved(f"tag rule: {result}")
    raise result
