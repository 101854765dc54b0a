"""mirror.kubefile: the images Kubernetes manifests make the cluster pull (helm template output,
kubectl get -o yaml lists, hand-written manifests), and the files rewritten byte for byte."""

from __future__ import annotations

import pytest

from mirror import kubefile
from mirror.kubefile import ImageUse, ManifestError

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dockerhub"

Row = tuple[int, int, str, str, str]


def rows(uses: list[ImageUse]) -> list[Row]:
    """(document, line, path, image, raw) per use."""
    return [(use.document, use.line, use.path, use.image, use.raw) for use in uses]


def to_ecr(uses: list[ImageUse]) -> dict[str, str]:
    return {image: f"{ECR}/{image}" for image in kubefile.images(uses)}


# What `helm template my-release ./chart` prints: `---` separators, `# Source:` comments, a
# template that rendered to nothing, quoted images, a hook Job and a test Pod.
HELM_OUTPUT = """\
---
# Source: web/templates/serviceaccount.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: my-release-web
---
# Source: web/templates/hpa.yaml
---
# Source: web/templates/service.yaml
apiVersion: v1
kind: Service
metadata:
  name: my-release-web
spec:
  type: ClusterIP
  ports:
    - port: 80
      targetPort: http
---
# Source: web/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-release-web
  labels:
    helm.sh/chart: web-0.1.0
spec:
  replicas: 1
  template:
    metadata:
      labels:
        app.kubernetes.io/name: web
    spec:
      serviceAccountName: my-release-web
      initContainers:
        - name: wait-for-db
          image: "busybox:1.36"
          command: ['sh', '-c', 'until nc -z db 5432; do sleep 1; done']
      containers:
        - name: web
          securityContext:
            {}
          image: "nginx:1.27.0"
          imagePullPolicy: IfNotPresent
          ports:
            - name: http
              containerPort: 80
        - name: metrics
          image: nginx/nginx-prometheus-exporter:1.1.0
---
# Source: web/templates/migrate-job.yaml
apiVersion: batch/v1
kind: Job
metadata:
  name: "my-release-web-migrate"
  annotations:
    "helm.sh/hook": pre-upgrade
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: 'ghcr.io/example/web-migrations:0.1.0'
---
# Source: web/templates/tests/test-connection.yaml
apiVersion: v1
kind: Pod
metadata:
  name: "my-release-web-test-connection"
  annotations:
    "helm.sh/hook": test
spec:
  containers:
    - name: wget
      image: busybox:1.36
      command: ['wget']
      args: ['my-release-web:80']
  restartPolicy: Never
"""


def test_helm_template_output() -> None:
    uses = kubefile.parse(HELM_OUTPUT)
    assert rows(uses) == [
        (4, 38, "spec.template.spec.initContainers[0].image", "busybox:1.36", '"busybox:1.36"'),
        (4, 44, "spec.template.spec.containers[0].image", "nginx:1.27.0", '"nginx:1.27.0"'),
        (
            4,
            50,
            "spec.template.spec.containers[1].image",
            "nginx/nginx-prometheus-exporter:1.1.0",
            "nginx/nginx-prometheus-exporter:1.1.0",
        ),
        (
            5,
            65,
            "spec.template.spec.containers[0].image",
            "ghcr.io/example/web-migrations:0.1.0",
            "'ghcr.io/example/web-migrations:0.1.0'",
        ),
        (6, 77, "spec.containers[0].image", "busybox:1.36", "busybox:1.36"),
    ]
    assert kubefile.images(uses) == [
        "busybox:1.36",
        "nginx:1.27.0",
        "nginx/nginx-prometheus-exporter:1.1.0",
        "ghcr.io/example/web-migrations:0.1.0",
    ]


def test_helm_template_output_rewritten_byte_for_byte() -> None:
    uses = kubefile.parse(HELM_OUTPUT)
    assert kubefile.rewrite(HELM_OUTPUT, uses, to_ecr(uses)) == (
        HELM_OUTPUT.replace('"busybox:1.36"', f'"{ECR}/busybox:1.36"')
        .replace("image: busybox:1.36", f"image: {ECR}/busybox:1.36")
        .replace('"nginx:1.27.0"', f'"{ECR}/nginx:1.27.0"')
        .replace("image: nginx/nginx-prometheus", f"image: {ECR}/nginx/nginx-prometheus")
        .replace("'ghcr.io/example/", f"'{ECR}/ghcr.io/example/")
    )


# What `kubectl get deploy,cronjob,sts,ds -o yaml` prints: a List with items.
KUBECTL_LIST = """\
apiVersion: v1
items:
- apiVersion: apps/v1
  kind: Deployment
  metadata:
    name: api
    namespace: default
  spec:
    template:
      spec:
        containers:
        - image: docker.io/library/python:3.12-slim
          name: api
- apiVersion: batch/v1
  kind: CronJob
  metadata:
    name: nightly
  spec:
    schedule: 17 3 * * *
    jobTemplate:
      spec:
        template:
          spec:
            containers:
            - image: postgres:16
              name: dump
            restartPolicy: OnFailure
- apiVersion: apps/v1
  kind: StatefulSet
  metadata:
    name: redis
  spec:
    template:
      spec:
        containers:
        - image: redis:7.2-alpine
          name: redis
- apiVersion: apps/v1
  kind: DaemonSet
  metadata:
    name: fluent-bit
  spec:
    template:
      spec:
        containers:
        - image: cr.fluentbit.io/fluent/fluent-bit:3.0
          name: fluent-bit
kind: List
metadata:
  resourceVersion: ""
"""


def test_kubectl_list() -> None:
    assert rows(kubefile.parse(KUBECTL_LIST)) == [
        (
            1,
            12,
            "items[0].spec.template.spec.containers[0].image",
            "docker.io/library/python:3.12-slim",
            "docker.io/library/python:3.12-slim",
        ),
        (
            1,
            25,
            "items[1].spec.jobTemplate.spec.template.spec.containers[0].image",
            "postgres:16",
            "postgres:16",
        ),
        (
            1,
            36,
            "items[2].spec.template.spec.containers[0].image",
            "redis:7.2-alpine",
            "redis:7.2-alpine",
        ),
        (
            1,
            46,
            "items[3].spec.template.spec.containers[0].image",
            "cr.fluentbit.io/fluent/fluent-bit:3.0",
            "cr.fluentbit.io/fluent/fluent-bit:3.0",
        ),
    ]


def test_every_kind_and_container_list() -> None:
    text = """\
apiVersion: v1
kind: Pod
metadata: {name: debug-me}
spec:
  containers: [{name: app, image: "alpine:3.20"}]
  ephemeralContainers:
  - name: debugger
    image: busybox:1.36
    targetContainerName: app
  volumes:
  - name: models
    image:
      reference: quay.io/example/models:v1
      pullPolicy: IfNotPresent
  - name: scratch
    emptyDir: {}
---
apiVersion: v1
kind: PodTemplate
metadata: {name: t}
template:
  spec:
    containers: [{name: a, image: "alpine:3.19"}]
---
apiVersion: v1
kind: ReplicationController
metadata: {name: rc}
spec:
  template:
    spec:
      containers: [{name: a, image: "nginx:1.25"}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  template:
    spec:
      containers: [{name: a, image: "nginx:1.26"}]
---
apiVersion: extensions/v1beta1
kind: Deployment
metadata: {name: old}
spec:
  template:
    spec:
      containers: [{name: a, image: "nginx:1.14"}]
"""
    assert [(use.document, use.path, use.image) for use in kubefile.parse(text)] == [
        (1, "spec.containers[0].image", "alpine:3.20"),
        (1, "spec.ephemeralContainers[0].image", "busybox:1.36"),
        (1, "spec.volumes[0].image.reference", "quay.io/example/models:v1"),
        (2, "template.spec.containers[0].image", "alpine:3.19"),
        (3, "spec.template.spec.containers[0].image", "nginx:1.25"),
        (4, "spec.template.spec.containers[0].image", "nginx:1.26"),
        (5, "spec.template.spec.containers[0].image", "nginx:1.14"),
    ]
    flow = "apiVersion: v1\nkind: Pod\nspec: {containers: [{name: a, image: nginx:1.27}]}\n"
    uses = kubefile.parse(flow)
    assert kubefile.rewrite(flow, uses, to_ecr(uses)) == flow.replace(
        "image: nginx", f"image: {ECR}/nginx"
    )


def test_other_kinds_are_passed_over() -> None:
    text = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: c}
data:
  image: "not-an-image"
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: r}
spec:
  template:
    spec:
      containers: [{name: a, image: "nginx:1.27"}]
---
apiVersion: batch.volcano.sh/v1alpha1
kind: Job
metadata: {name: v}
spec:
  tasks: []
---
apiVersion: v1
kind: ServiceList
items:
- apiVersion: v1
  kind: Service
  metadata: {name: s}
"""
    assert kubefile.parse(text) == []


def test_anchors_merge_keys_crlf_and_an_image_given_twice() -> None:
    text = (
        "# shared container settings\r\n"
        "apiVersion: apps/v1\r\n"
        "kind: Deployment\r\n"
        "metadata: {name: two}\r\n"
        "spec:\r\n"
        "  template:\r\n"
        "    spec:\r\n"
        "      containers:\r\n"
        "        - &app\r\n"
        "          name: app\r\n"
        "          image: &image ruby:3.3-slim   # the base\r\n"
        "        - <<: *app\r\n"
        "          name: sidekiq\r\n"
        "      initContainers:\r\n"
        "        - name: migrate\r\n"
        "          image: *image\r\n"
    )
    uses = kubefile.parse(text)
    assert rows(uses) == [  # one value, three containers; init containers first, as they run
        (1, 11, "spec.template.spec.initContainers[0].image", "ruby:3.3-slim", "ruby:3.3-slim"),
        (1, 11, "spec.template.spec.containers[0].image", "ruby:3.3-slim", "ruby:3.3-slim"),
        (1, 11, "spec.template.spec.containers[1].image", "ruby:3.3-slim", "ruby:3.3-slim"),
    ]
    assert kubefile.rewrite(text, uses, to_ecr(uses)) == text.replace(
        "&image ruby:3.3-slim", f"&image {ECR}/ruby:3.3-slim"
    )


ERROR_CASES: list[tuple[str, str, str]] = [
    (
        "no kind",
        "apiVersion: v1\nmetadata: {}\n",
        "line 1: the document: no kind: not a Kubernetes object",
    ),
    (
        "a container without an image",
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: app\n",
        "line 5: spec.containers[0].image: no image: the container runs nothing",
    ),
    (
        "a Deployment without a template",
        "apiVersion: apps/v1\nkind: Deployment\nspec:\n  replicas: 1\n",
        "line 4: spec.template: missing: a Deployment needs it",
    ),
    (
        "containers as a mapping",
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n    app: {image: x}\n",
        "line 5: spec.containers: expected a list, found a mapping",
    ),
    (
        "an image YAML reads as a number",
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n    image: 3.10\n",
        "line 6: spec.containers[0].image: expected text, found a number (3.10): write it in "
        "quotes if it is text",
    ),
    (
        "an unrendered Helm template",
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n"
        "    image: {{ .Values.image }}\n",
        "line 6: spec.containers[0].image: an unrendered Helm template: render the chart first "
        "(helm template)",
    ),
    (
        "a quoted unrendered template",
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n"
        '    image: "{{ .Values.image }}"\n',
        "line 6: spec.containers[0].image: '{{ .Values.image }}' is an unrendered template: "
        "render it first",
    ),
    (
        "the third document",
        "kind: Service\napiVersion: v1\n---\n# Source: x\n---\napiVersion: v1\nkind: Pod\n"
        "spec:\n  containers:\n  - name: a\n    image: ''\n",
        "document 3, line 11: spec.containers[0].image: empty: the container runs nothing",
    ),
    (
        "a key given twice",
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n    image: x\n"
        "    image: y\n",
        "line 7: spec.containers[0].image: the key appears twice, on lines 6 and 7",
    ),
    (
        "a document that is a list",
        "- apiVersion: v1\n  kind: Pod\n",
        "line 1: the document: expected a mapping, found a list",
    ),
    (
        "not YAML",
        "apiVersion: v1\nkind: Pod\nspec: [\n",
        "line 4, column 1: YAML syntax error: expected the node content, but found '<stream end>'",
    ),
]


@pytest.mark.parametrize(
    ("name", "text", "message"), ERROR_CASES, ids=[case[0] for case in ERROR_CASES]
)
def test_errors_are_one_line_naming_document_line_and_key(
    name: str, text: str, message: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        kubefile.parse(text)
    assert str(caught.value) == message


def test_empty_files_hold_no_images() -> None:
    assert kubefile.parse("") == []
    assert kubefile.parse("---\n# Source: chart/templates/empty.yaml\n---\n") == []
