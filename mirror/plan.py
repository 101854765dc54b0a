"""Step 1, plan: the config and the source's tag lists -> the tasks of a run. Pure: no I/O.

Tag rules need the source's tag list; the caller reads those (`rule_images` says which) and
hands in what each answered: a TagList, or the error in plain words. An image whose list could
not be read becomes one `failed` outcome, and the rest of the run goes on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from mirror.config import (
    Config,
    Image,
    TagEntry,
    TagRule,
    check_repository_name,
    tag_refusal,
)
from mirror.errors import ConfigError
from mirror.model import NOT_RESOLVED, Action, Outcome, Plan, Task, Unresolved, destination
from mirror.oci import TagList
from mirror.reference import (
    PIN_TAG,
    BadReference,
    ImageRef,
    Repository,
    parse_reference,
    pin_tag,
)


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (1-based): a stable split by destination repository and tag."""

    index: int = 1
    count: int = 1

    def takes(self, key: str) -> bool:
        if self.count == 1:
            return True
        number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
        return number % self.count + 1 == self.index


def rule_images(config: Config) -> list[tuple[int, Image]]:
    """The images whose tags come from a tag rule, with their index in the config."""
    return [(index, image) for index, image in enumerate(config.images) if image.rule is not None]


def plan(
    config: Config,
    tag_lists: Mapping[int, TagList | Unresolved],
    *,
    hosts: Sequence[str],
    shard: Shard = Shard(),
) -> Plan:
    """The run's tasks: the listed tags, and those each tag rule chooses from its tag list.

    `tag_lists` maps an image index to its source's tag list or to why it could not be read;
    a rule image missing from it was not reached (the run stopped) and is `deferred`.
    `hosts` are the targets' registry hosts, for the destinations of such images.
    """
    tasks: list[Task] = []
    outcomes: list[Outcome] = []
    warnings: list[str] = []
    notes: list[str] = []
    for index, image in enumerate(config.images):
        entries = _entries(image.tags)
        if image.rule is not None:
            answer = tag_lists.get(index)
            if not isinstance(answer, TagList):
                outcomes += _unresolved(config, index, image, hosts, answer)
                continue
            listed = {entry.tag for entry in entries}
            chosen = [  # never a tag the config lists, nor one of mirror's pin tags
                tag
                for tag in image.rule.select(answer.tags)
                if tag not in listed and not PIN_TAG.match(tag)
            ]
            where = f"images[{index}] ({image.source})"
            if answer.warning:
                warnings.append(f"{where}: {answer.warning}")
            if chosen:
                notes.append(
                    f"{where}: tag rule chose {len(chosen)} of {len(answer.tags)} tags: "
                    + ", ".join(chosen)
                )
            else:
                warnings.append(f"{where}: {_chose_none(image.rule, answer.tags)}")
            entries += [TagEntry(tag) for tag in chosen]
        tasks += [
            image_task(config, image, entry.tag, entry.digest, order=(index, position))
            for position, entry in enumerate(entries)
        ]
    return Plan(
        tuple(task for task in tasks if shard.takes(_shard_key(task))),
        tuple(o for o in outcomes if shard.takes(o.repository)),
        tuple(warnings),
        tuple(notes),
    )


@dataclass(frozen=True)
class Wanted:
    """One name `ensure` was given, and the task that mirrors it."""

    task: Task
    tag: str | None  # as written (None for `name@digest`)
    digest: str | None  # the pin, as written

    def reference(self, host: str) -> str:
        """What a build should pull from the first target, on `host`: its repository and tag,
        with the pin when there is one (`host/repo:tag@sha256:...`, `host/repo@sha256:...`),
        so it never moves."""
        if self.digest is None:
            return self.task.destination(host)
        repository = destination(host, self.task.repositories[0])
        return (
            f"{repository}:{self.tag}@{self.digest}" if self.tag else f"{repository}@{self.digest}"
        )


def plan_names(config: Config, names: Sequence[str]) -> tuple[Plan, dict[str, Wanted]]:
    """`mirror ensure`: a task per distinct image among `names` (written as after FROM), and
    what each name maps to. A pinned name (`name:tag@digest`, `name@digest`) is mirrored under
    its pin tag only (`pin_tag`): ensure never moves a tag for it. Raises ConfigError naming a
    name that is not a reference, or whose ECR repository and tag would also be another
    image's (another name's, or a listed image's)."""
    wanted: dict[str, Wanted] = {}
    tasks: dict[tuple[str, str], Task] = {}
    first: dict[tuple[int, str, str], tuple[str, Repository]] = {}  # the first name there
    for position, name in enumerate(names):
        task, reference = _name_task(config, name, position)
        _check_claims(config, name, task)
        for number, repository in enumerate(task.repositories):
            earlier, source = first.setdefault(
                (number, repository, task.tag), (name, task.source.repository)
            )
            if source != task.source.repository:
                raise ConfigError(
                    f"{earlier!r} and {name!r} are two images that would share "
                    f"{repository}:{task.tag} in ECR: list one of them under images with a "
                    "repository of its own"
                )
        task = tasks.setdefault((task.repositories[0], task.tag), task)
        tag = task.tag if not reference.digest else reference.tag
        wanted[name] = Wanted(task, tag, reference.digest)
    return Plan(tuple(tasks.values())), wanted


# An ECR private registry's API host (standard, FIPS, China): where builds already pull from.
_ECR_HOST = re.compile(r"[0-9]{12}\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?\Z")


def passes_through(config: Config, name: str) -> bool:
    """Whether `ensure` leaves `name` as it is: it is on an ECR private registry's host
    (`<id>.dkr.ecr.<region>.amazonaws.com[.cn]`) or on a target's `endpoint`, so builds pull
    it from there already (ensure's own output, a file already pointed at ECR). Copying it
    would make `dockerhub/<ecr-host>/...` from an image that is already in place, and the
    source credentials do not reach ECR. A config that lists the name's repository under
    `images` still mirrors it."""
    try:
        repository = parse_reference(name, default_registry=config.source.registry).repository
    except BadReference:
        return False
    host = repository.registry.lower()
    endpoints = {target.endpoint.lower() for target in config.targets if target.endpoint}
    if not (_ECR_HOST.match(host) or host in endpoints):
        return False
    return all(image.source != repository for image in config.images)


def _name_task(config: Config, name: str, position: int) -> tuple[Task, ImageRef]:
    """The task that mirrors one name given to `ensure`, and the name parsed."""
    try:
        reference = parse_reference(name, default_registry=config.source.registry)
    except BadReference as error:
        raise ConfigError(f"{name!r}: {error}") from None
    if name.partition(":")[0].partition("@")[0] == "scratch":
        raise ConfigError(f"{name!r}: scratch is Docker's empty base, not an image to mirror")
    refused = tag_refusal(reference.tag, reference.digest) if reference.tag else None
    if refused:
        raise ConfigError(f"{name!r}: {refused}")
    image = config.image_for(reference.repository)
    ambiguous = None if image.repository else config.derived_problem(image.source)
    if ambiguous:
        raise ConfigError(f"{name!r}: {ambiguous} (under images, in the config)")
    for repository in {config.destination_repository(image, target) for target in config.targets}:
        check_repository_name(repository, f"{name!r}: its ECR repository")
    tag = pin_tag(reference.digest) if reference.digest else reference.tag or "latest"
    digest = reference.digest or _pinned_in_config(image, tag)  # never undo a config pin
    return image_task(config, image, tag, digest, order=(position, 0)), reference


def _check_claims(config: Config, name: str, task: Task) -> None:
    """A listed image of another source that lands on the task's repository and tag (or in
    its repository, with a tag rule, which may choose any tag) keeps it: ConfigError."""
    for index, image in enumerate(config.images):
        if image.source == task.source.repository:
            continue
        tags = {entry.tag for entry in _entries(image.tags)}
        for number, target in enumerate(config.targets):
            repository = config.destination_repository(image, target)
            if repository == task.repositories[number] and (image.rule or task.tag in tags):
                raise ConfigError(
                    f"{name!r}: {repository}:{task.tag} in ECR is the destination of "
                    f"images[{index}] ({image.source}), another image: list {name!r} under "
                    "images with a repository of its own"
                )


def image_task(
    config: Config,
    image: Image,
    tag: str,
    digest: str | None = None,
    *,
    order: tuple[int, int] = (0, 0),
) -> Task:
    pinned_only = digest is not None and tag == pin_tag(digest)  # shown as name@digest
    return Task(
        ImageRef(image.source, None if pinned_only else tag, digest),
        tag,
        tuple(config.destination_repository(image, target) for target in config.targets),
        # A pin names the whole image: a platform subset would be another digest, which the
        # pinned reference could not pull.
        () if digest else image.platforms,
        order,
        image.referrers,
        image.verify,
    )


def _pinned_in_config(image: Image, tag: str) -> str | None:
    """The digest the config pins `tag` of `image` to, if it does: an unpinned `ensure` of
    that tag then mirrors the pin too, instead of moving the tag `sync` keeps there."""
    return next((entry.digest for entry in image.tags if entry.tag == tag and entry.digest), None)


def _entries(entries: Sequence[TagEntry]) -> list[TagEntry]:
    """The listed tags, each pin followed by its pin tag (when the config does not list it)."""
    listed = {entry.tag for entry in entries}
    out: list[TagEntry] = []
    for entry in entries:
        out.append(entry)
        if entry.digest and pin_tag(entry.digest) not in listed:
            listed.add(pin_tag(entry.digest))
            out.append(TagEntry(pin_tag(entry.digest), entry.digest))
    return out


def _unresolved(
    config: Config, index: int, image: Image, hosts: Sequence[str], answer: Unresolved | None
) -> list[Outcome]:
    answer = answer or Unresolved(NOT_RESOLVED, Action.DEFERRED)
    outcomes = []
    for number, target in enumerate(config.targets):
        repository = config.destination_repository(image, target)
        host = hosts[number] if number < len(hosts) else ""
        outcomes.append(
            Outcome(
                source=str(image.source),
                destination=destination(host, repository),
                repository=repository,
                tag=None,
                action=answer.action,
                error=answer.error,
                target=number,
                order=(index, 0),
            )
        )
    return outcomes


def _chose_none(rule: TagRule, tags: Sequence[str]) -> str:
    """The warning for a rule that chose nothing, with why when `newest` is the reason."""
    found = len(tags)
    text = f"tag rule chose no tag from {found} tag{'' if found == 1 else 's'}"
    if rule.newest is None:
        return text
    matched = len(replace(rule, newest=None).select(tags))
    if not matched:
        return text
    return (
        f"{text}: newest ranks versions only, and none of the {matched} it matched is a "
        "version (words such as latest or edge have none)"
    )


def _shard_key(task: Task) -> str:
    return f"{task.repositories[0]}:{task.tag}"
