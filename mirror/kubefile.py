"""Every image a Kubernetes manifest makes the cluster pull, and how to point each at ECR.

`parse` reads every document of a file (`kubectl apply -f`, `helm template` output with its
`---` separators and `# Source:` comments, `kubectl get -o yaml`) and returns one `ImageUse`
per image value in a pod spec:

- Pod (core group, `apiVersion: v1`): `spec`;
- PodTemplate (core): `template.spec`;
- ReplicationController (core), Deployment, StatefulSet, DaemonSet, ReplicaSet (`apps`, and
  the old `extensions` group), Job (`batch`): `spec.template.spec`;
- CronJob (`batch`): `spec.jobTemplate.spec.template.spec`;
- List, and any `<Kind>List` with `items` (`kubectl get -o yaml`): each item, as above.

In a pod spec: `containers[].image`, `initContainers[].image`, `ephemeralContainers[].image`,
and `volumes[].image.reference` (an image volume, Kubernetes 1.31+), each an image the kubelet
pulls. Other kinds (Services, ConfigMaps, custom resources, a `Job` of another API group) are
passed over: their fields mean what their own controllers say. YAML merge keys and aliases
are read as YAML defines them; an image given once through an anchor is one value.

A container without `image:`, a document without `kind:`, or a value of the wrong type is an
error naming the document, line and key path (`document 3, line 40:
spec.template.spec.containers[0].image: no image`), as the API server would refuse the
object. An unrendered Helm template (`image: {{ .Values.image }}`) says to render it first.

`rewrite` (`yamlnodes.rewrite`) changes only those image values, keeping every other byte.
"""

from __future__ import annotations

import yaml

from mirror.yamlnodes import (
    ImageUse,
    Parsed,
    Where,
    YamlFileError,
    documents,
    entries,
    images,
    rewrite,
    sequence,
    string,
)

__all__ = ["MAX_SIZE", "ImageUse", "ManifestError", "images", "parse", "rewrite"]

MAX_SIZE = 16 << 20  # bytes of a manifest mirror reads (`helm template` of a big chart: ~1 MB)

_TEMPLATE = ("spec", "template", "spec")
# (API group, kind) -> the path to its pod spec. The group is apiVersion's part before "/"
# ("" for the core group's "v1").
POD_SPECS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): ("spec",),
    ("", "PodTemplate"): ("template", "spec"),
    ("", "ReplicationController"): _TEMPLATE,
    **{
        (group, kind): _TEMPLATE
        for group in ("apps", "extensions")
        for kind in ("Deployment", "DaemonSet", "ReplicaSet")
    },
    ("apps", "StatefulSet"): _TEMPLATE,
    ("batch", "Job"): _TEMPLATE,
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
}
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


class ManifestError(YamlFileError):
    """The manifest cannot be read for its images: one line naming the document, the line
    and the key path."""


def parse(text: str) -> list[ImageUse]:
    """Every image value in the pod specs of every document, in file order.

    Raises ManifestError naming the document, line and key for what is not YAML, for
    objects without a kind, and for pod specs the API server would refuse.
    """
    try:
        parsed = documents(text)
        uses: list[ImageUse] = []
        for number, root in enumerate(parsed.nodes, 1):
            if root is not None:
                uses += _object(parsed, root, parsed.where(number), text)
    except YamlFileError as error:
        raise ManifestError(str(error)) from None
    return sorted(uses, key=lambda use: use.start)


def _object(parsed: Parsed, node: yaml.Node, where: Where, text: str) -> list[ImageUse]:
    keys = entries(node, where)
    if "kind" not in keys:
        raise where.error(node, "no kind: not a Kubernetes object")
    kind = string(keys["kind"][1], where.key("kind"))
    version = keys.get("apiVersion")
    group = string(version[1], where.key("apiVersion")).rpartition("/")[0] if version else ""
    if kind.endswith("List") and "items" in keys:
        items_where = where.key("items")
        return [
            use
            for index, item in enumerate(sequence(keys["items"][1], items_where))
            for use in _object(parsed, item, items_where.index(index), text)
        ]
    path = POD_SPECS.get((group, kind))
    if path is None:
        return []  # not a kind that runs pods: passed over
    spec, spec_where = node, where
    for step in path:
        found = entries(spec, spec_where)
        spec_where = spec_where.key(step)
        if step not in found:
            raise spec_where.error(spec, f"missing: a {kind} needs it")
        spec = found[step][1]
    return _pod_spec(parsed, spec, spec_where, text)


def _pod_spec(parsed: Parsed, spec: yaml.Node, where: Where, text: str) -> list[ImageUse]:
    keys = entries(spec, where)
    uses = []
    for name in CONTAINER_LISTS:
        if name not in keys:
            continue
        listed = where.key(name)
        for index, container in enumerate(sequence(keys[name][1], listed)):
            at = listed.index(index)
            fields = entries(container, at)
            if "image" not in fields:
                raise at.key("image").error(container, "no image: the container runs nothing")
            uses.append(_use(parsed, fields["image"][1], at.key("image"), text))
    if "volumes" in keys:
        listed = where.key("volumes")
        for index, volume in enumerate(sequence(keys["volumes"][1], listed)):
            fields = entries(volume, listed.index(index))
            if "image" in fields:
                at = listed.index(index).key("image")
                source = entries(fields["image"][1], at)
                if "reference" in source:
                    uses.append(_use(parsed, source["reference"][1], at.key("reference"), text))
    return uses


def _use(parsed: Parsed, node: yaml.Node, where: Where, text: str) -> ImageUse:
    if not isinstance(node, yaml.ScalarNode):
        if text[node.start_mark.index :].startswith("{{"):
            raise where.error(
                node, "an unrendered Helm template: render the chart first (helm template)"
            )
        string(node, where)  # raises, saying what it is
    assert isinstance(node, yaml.ScalarNode)
    if isinstance(node, yaml.MappingNode) and text[node.start_mark.index :].startswith("{{"):
        raise where.error(
            node, "an unrendered Helm template: render the chart first (helm template)"
        )
    image = string(node, where)
    if not image.strip():
        raise where.error(node, "empty: the container runs nothing")
    if "{{" in image:
        raise where.error(node, f"{image!r} is an unrendered template: render it first")
    return parsed.use(node, where, image, text)
