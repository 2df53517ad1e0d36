"""The HA invariants, each a plain function over a resource's type token and its properties.

No Pulumi here: the policy pack (``policy.pack``) hands these functions the properties the engine
sends (read-only mappings; during a preview an unknown value raises when read, and the SDK then
reports the policy as not runnable until ``pulumi up``), and the tests hand them the offline plan's
``resources.json`` entries. A resource check returns the violation messages of one resource; a
stack check sees every resource of the stack and returns violations that name the resource at
fault. Each message names the object, the field, the value found and what is required.

Which stack is prod: the GKE cluster's ``resourceLabels.environment`` (``__main__.py`` sets it
from the ``environment`` setting, which is what turns the prod invariants on in the program).
A stack whose cluster does not say ``dev`` - no cluster, no label, or any other value - is
checked as prod: the pack fails closed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from contract import timing, wire

Props = Mapping[str, Any]

CLUSTER: Final = "gcp:container/cluster:Cluster"
STATEFUL_SET: Final = "kubernetes:apps/v1:StatefulSet"
DEPLOYMENT: Final = "kubernetes:apps/v1:Deployment"
CONFIG_MAP: Final = "kubernetes:core/v1:ConfigMap"
PDB: Final = "kubernetes:policy/v1:PodDisruptionBudget"
DOCKER_BUILD_IMAGE: Final = "docker-build:index:Image"

POD_TEMPLATE_TYPES: Final = frozenset(
    {
        DEPLOYMENT,
        STATEFUL_SET,
        "kubernetes:apps/v1:DaemonSet",
        "kubernetes:apps/v1:ReplicaSet",
        "kubernetes:batch/v1:Job",
    }
)
"""Kinds whose pods are ``spec.template.spec`` (CronJob and Pod are handled apart)."""
CRON_JOB: Final = "kubernetes:batch/v1:CronJob"
POD: Final = "kubernetes:core/v1:Pod"
WORKLOAD_TYPES: Final = POD_TEMPLATE_TYPES | {CRON_JOB, POD}

HOSTNAME_KEY: Final = "kubernetes.io/hostname"
ZONE_KEY: Final = "topology.kubernetes.io/zone"
DEFINITIONS_KEY: Final = "definitions.json"
"""The ConfigMap key the broker's definitions (policies, DLX, DLQ) are rendered under."""

K8S_DEFAULT_GRACE_S: Final = 30
"""Kubernetes' ``terminationGracePeriodSeconds`` when the pod spec leaves it out."""
BROKER_STOP_MARGIN_S: Final = 60
"""Seconds a RabbitMQ node needs after its preStop hook to stop cleanly (flush the quorum
queue WAL, close connections): the minute ``components/rabbitmq/pod.py`` leaves out of the grace
period. The kubelet counts the grace from the start of the hook and SIGKILLs when it runs out."""

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_FULL_VERSION = re.compile(r"^v?\d+\.\d+\.\d+(?:[-+._][0-9A-Za-z.+-]+)?$")
_SECRET_NAME = re.compile(r"pass(?:word|wd)?|secret|token|cookie|api[_-]?key|private[_-]?key|credential", re.I)
_URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I)
_ASSIGNMENT = re.compile(r"""^\s*["']?([\w.-]+)["']?\s*[=:]\s*(.*?)\s*,?\s*$""")
_TIMEOUT_FLAG = re.compile(r"^(?:-t|--timeout)(?:=(\d+))?$")


@dataclass(frozen=True, eq=False)
class Resource:
    """One registered resource, as the engine (or the offline plan) describes it."""

    type: str
    """The type token, e.g. ``kubernetes:apps/v1:StatefulSet``."""
    name: str
    """The Pulumi resource name (not the Kubernetes object's name)."""
    props: Props
    """Its properties (camelCase, as sent to the provider)."""


@dataclass(frozen=True)
class Violation:
    """A broken invariant found by a stack check."""

    message: str
    """What is wrong: the object, the field, the value found and what is required."""
    resource: Resource | None = None
    """The resource at fault; None when the stack as a whole is (something missing)."""


ResourceCheck = Callable[[str, Props], list[str]]
StackCheck = Callable[[Sequence[Resource]], list[Violation]]


# --- reading properties -------------------------------------------------------------------------


def _is_map(value: object) -> bool:
    return isinstance(value, Mapping)


def _is_list(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _get(value: Any, *path: str | int) -> Any:
    """The value at ``path``, or None when any step is missing or of the wrong shape."""
    for step in path:
        if isinstance(step, int):
            if not _is_list(value) or not -len(value) <= step < len(value):
                return None
            value = value[step]
        else:
            if not _is_map(value) or step not in value:
                return None
            value = value[step]
    return value


def _map(value: Any, *path: str | int) -> Mapping[str, Any]:
    found = _get(value, *path)
    return found if _is_map(found) else {}


def _list(value: Any, *path: str | int) -> list[Any]:
    found = _get(value, *path)
    return list(found) if _is_list(found) else []


def _int(value: object) -> int | None:
    """A whole number, or None. The engine sends every number as a float (a protobuf Struct):
    ``replicas: 3`` arrives as ``3.0``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _labels(value: Any, *path: str | int) -> dict[str, str]:
    return {str(k): str(v) for k, v in _map(value, *path).items()}


def kind_and_name(resource_type: str, props: Props) -> str:
    """``StatefulSet rabbitmq``: the Kubernetes kind and object name, for messages."""
    kind = _get(props, "kind") or resource_type.rsplit(":", 1)[-1]
    name = _get(props, "metadata", "name") or "<unnamed>"
    return f"{kind} {name}"


def pod_spec(resource_type: str, props: Props) -> Mapping[str, Any]:
    """The pod spec of a workload (empty for anything else)."""
    if resource_type == POD:
        return _map(props, "spec")
    if resource_type == CRON_JOB:
        return _map(props, "spec", "jobTemplate", "spec", "template", "spec")
    if resource_type in POD_TEMPLATE_TYPES:
        return _map(props, "spec", "template", "spec")
    return {}


def pod_labels(props: Props) -> dict[str, str]:
    return _labels(props, "spec", "template", "metadata", "labels")


def containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every container of a pod spec, init containers included."""
    for key in ("initContainers", "containers"):
        for container in _list(spec, key):
            if _is_map(container):
                yield container


def _image_name(image: str) -> str:
    """``rabbitmq`` from ``registry:5000/library/rabbitmq:4.3.6@sha256:...``."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def is_broker(resource_type: str, props: Props) -> bool:
    """A RabbitMQ StatefulSet: by its labels or by the image it runs (a mirror keeps the name)."""
    if resource_type != STATEFUL_SET:
        return False
    labels = {**_labels(props, "metadata", "labels"), **pod_labels(props)}
    if labels.get("app.kubernetes.io/component") == "broker" or labels.get("app.kubernetes.io/name") == "rabbitmq":
        return True
    images = (_get(c, "image") for c in containers(pod_spec(resource_type, props)))
    return any(isinstance(i, str) and _image_name(i).startswith("rabbitmq") for i in images)


def is_worker(resource_type: str, props: Props) -> bool:
    """A Celery worker Deployment: by its component label, or a container whose command is the
    worker's (contract.wire)."""
    if resource_type != DEPLOYMENT:
        return False
    if pod_labels(props).get("app.kubernetes.io/component") == "worker":
        return True
    prefix = list(wire.WORKER_COMMAND[:4])
    return any(_list(c, "command")[:4] == prefix for c in containers(pod_spec(resource_type, props)))


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """True when a label selector's ``matchLabels`` is non-empty and all of it is in ``labels``."""
    wanted = _labels(selector, "matchLabels")
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def environment(resources: Sequence[Resource]) -> tuple[bool, str]:
    """(is prod, why): from the GKE cluster's ``resourceLabels.environment``; fails closed."""
    clusters = [r for r in resources if r.type == CLUSTER]
    if not clusters:
        return True, "no GKE cluster in the stack to say which environment it is, so checked as prod"
    for cluster in clusters:
        env = _get(cluster.props, "resourceLabels", "environment")
        if env == "prod":
            return True, f"prod: GKE cluster {cluster.name} has resourceLabels.environment=prod"
        if env != "dev":
            return True, f"GKE cluster {cluster.name} has resourceLabels.environment={env!r}, checked as prod"
    return False, "dev"


# --- resource checks ----------------------------------------------------------------------------


def check_broker_replicas(resource_type: str, props: Props) -> list[str]:
    """A RabbitMQ StatefulSet runs an odd number >= 3 of nodes."""
    if not is_broker(resource_type, props):
        return []
    found = _get(props, "spec", "replicas")
    replicas = 1 if found is None else _int(found)  # absent: the Kubernetes default, 1
    if replicas is None or replicas < 3 or not wire.quorum_safe(replicas):
        shown = found if replicas is None else replicas
        return [
            f"{kind_and_name(resource_type, props)}: spec.replicas is {shown!r}; a RabbitMQ cluster needs an odd "
            "number >= 3 (quorum queues keep a majority through the loss of one node only then)"
        ]
    return []


def image_pin_problem(image: object) -> str | None:
    """Why ``image`` is not pinned (None when it is): a digest, or a full version tag."""
    if not isinstance(image, str) or not image:
        return "no image"
    if _DIGEST.search(image):
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "no tag (the runtime pulls :latest)"
    tag = last.rsplit(":", 1)[1]
    if tag == "latest":
        return "the floating tag latest"
    if not _FULL_VERSION.match(tag):
        return f"the tag {tag!r} is not a full version (major.minor.patch) and no digest is given"
    return None


def check_images_pinned(resource_type: str, props: Props) -> list[str]:
    """Every container image is pinned by digest or by a full version; no image is pushed as latest."""
    problems: list[str] = []
    if resource_type == DOCKER_BUILD_IMAGE:
        for tag in _list(props, "tags"):
            last = str(tag).rsplit("/", 1)[-1]
            if last.endswith(":latest") or ":" not in last:
                problems.append(f"worker image build: tag {tag!r} is latest; tag images with what they contain")
        return problems
    for container in containers(pod_spec(resource_type, props)):
        image = _get(container, "image")
        why = image_pin_problem(image)
        if why:
            problems.append(
                f"{kind_and_name(resource_type, props)}: container {_get(container, 'name')} image {image!r} is not "
                f"pinned: {why}; use a digest (@sha256:...) or a full version tag (e.g. 4.3.6)"
            )
    return problems


def _secret_lines(text: str) -> Iterator[str]:
    """The ``key = value`` / ``"key": "value"`` lines of a config text whose key names a secret."""
    for line in text.splitlines():
        if line.lstrip().startswith(("#", "%", "//")):
            continue
        match = _ASSIGNMENT.match(line)
        if match and _SECRET_NAME.search(match[1]) and match[2].strip("\"' ") not in ("", "null"):
            yield match[1]


def check_no_plain_secrets(resource_type: str, props: Props) -> list[str]:
    """No secret in a plain input: env values, commands and ConfigMaps carry no password, token or cookie."""
    what = kind_and_name(resource_type, props)
    problems: list[str] = []
    if resource_type == CONFIG_MAP:
        for section in ("data", "binaryData"):
            for key, value in _map(props, section).items():
                if _SECRET_NAME.search(str(key)):
                    problems.append(f"{what}: {section} key {key!r} names a secret; put it in a Secret")
                if not isinstance(value, str):
                    continue
                if _URL_CREDENTIALS.search(value):
                    problems.append(f"{what}: {section}[{key!r}] holds a URL with a password; put it in a Secret")
                problems.extend(
                    f"{what}: {section}[{key!r}] sets {field!r} in plain text; put it in a Secret"
                    for field in sorted(set(_secret_lines(value)))
                )
        return problems
    for container in containers(pod_spec(resource_type, props)):
        name = _get(container, "name")
        for env in _list(container, "env"):
            value = _get(env, "value")
            if not isinstance(value, str) or not value:
                continue
            env_name = str(_get(env, "name"))
            if _SECRET_NAME.search(env_name):
                problems.append(
                    f"{what}: container {name} env {env_name} is a literal value; "
                    "read it from a Secret (valueFrom.secretKeyRef)"
                )
            elif _URL_CREDENTIALS.search(value):
                problems.append(f"{what}: container {name} env {env_name} holds a URL with a password; use a Secret")
        for field in ("command", "args"):
            if any(isinstance(a, str) and _URL_CREDENTIALS.search(a) for a in _list(container, field)):
                problems.append(f"{what}: container {name} {field} holds a URL with a password; use a Secret")
    return problems


def _segments(script: str) -> Iterator[list[str]]:
    """The simple commands of a shell line, split on ``&&``, ``||``, ``;``, ``|`` and newlines."""
    for segment in re.split(r"&&|\|\||;|\||\n", script):
        words = segment.split()
        if words:
            yield words


def hook_budget_s(command: Sequence[str]) -> tuple[int, list[str]]:
    """Seconds a preStop exec hook may wait (its ``-t``/``--timeout`` and ``sleep`` values) and
    the steps that wait without a bound (a ``rabbitmq-upgrade`` or ``rabbitmqctl`` step without ``-t``)."""
    script = " ".join(command[2:]) if list(command[:2]) in (["sh", "-c"], ["bash", "-c"]) else " ".join(command)
    total, unbounded = 0, []
    for words in _segments(script):
        if words[0] == "sleep" and len(words) > 1 and words[1].isdigit():
            total += int(words[1])
            continue
        bound = None
        for i, word in enumerate(words):
            flag = _TIMEOUT_FLAG.match(word)
            if flag:
                value = flag[1] or (words[i + 1] if i + 1 < len(words) else "")
                bound = int(value) if value.isdigit() else None
        if bound is not None:
            total += bound
        elif words[0] in ("rabbitmq-upgrade", "rabbitmqctl", "rabbitmq-queues"):
            unbounded.append(" ".join(words))
    return total, unbounded


def check_grace_covers_hooks(resource_type: str, props: Props) -> list[str]:
    """``terminationGracePeriodSeconds`` covers the preStop waits and the process's own stop."""
    spec = pod_spec(resource_type, props)
    if resource_type not in POD_TEMPLATE_TYPES or not spec:
        return []
    what = kind_and_name(resource_type, props)
    found = _get(spec, "terminationGracePeriodSeconds")
    grace = K8S_DEFAULT_GRACE_S if found is None else _int(found)
    if grace is None:
        return [f"{what}: terminationGracePeriodSeconds is {found!r}, not a whole number of seconds"]
    if is_broker(resource_type, props):
        stop_s, stop_why = BROKER_STOP_MARGIN_S, "a minute for the node to stop"
    elif is_worker(resource_type, props):
        stop_s = _worker_time_limit_s(spec) + timing.SHUTDOWN_MARGIN_S
        stop_why = "the warm shutdown: its lane's task hard time limit + shutdown margin (contract.lanes)"
    else:
        stop_s, stop_why = 0, "nothing"
    problems: list[str] = []
    hooks = 0
    for container in containers(spec):
        command = _list(container, "lifecycle", "preStop", "exec", "command")
        if not command:
            continue
        waits, unbounded = hook_budget_s([str(w) for w in command])
        hooks = max(hooks, waits)
        problems.extend(
            f"{what}: container {_get(container, 'name')} preStop step {step!r} has no timeout (-t); "
            "an unbounded wait ends in SIGKILL at the grace period"
            for step in unbounded
        )
    if hooks + stop_s > grace:
        problems.append(
            f"{what}: terminationGracePeriodSeconds is {grace} s, but the preStop waits ({hooks} s) plus "
            f"{stop_why} ({stop_s} s) need {hooks + stop_s} s; the kubelet SIGKILLs at the grace period"
        )
    return problems


def _worker_time_limit_s(spec: Mapping[str, Any]) -> int:
    """The hard task time limit a worker pod runs with: its ``TASK_TIME_LIMIT_S``, else the worker's
    default (contract.timing); the longest of its containers'."""
    limits = [
        int(value) if isinstance(value := _get(env, "value"), str) and value.isascii() and value.isdigit() else 0
        for container in containers(spec)
        for env in _list(container, "env")
        if _get(env, "name") == wire.ENV_TASK_TIME_LIMIT_S
    ]
    # An unreadable value counts as the default: the worker itself refuses to start with it (app.config).
    return max([limit for limit in limits if limit] or [timing.TASK_TIME_LIMIT_S])


def check_deletion_protection(resource_type: str, props: Props) -> list[str]:
    """A prod GKE cluster keeps deletion protection on."""
    if resource_type != CLUSTER:
        return []
    env = _get(props, "resourceLabels", "environment")
    if env == "dev" or _get(props, "deletionProtection") is not False:  # absent: the provider's default, true
        return []
    return [
        f"GKE cluster: deletionProtection is false in environment {env!r} (anything but dev is prod); "
        "set ha-celery:deletionProtection true (turn it off only for a planned destroy)"
    ]


# --- stack checks -------------------------------------------------------------------------------


def _effective_policy(policies: list[Any], queue: str) -> Mapping[str, Any] | None:
    """The RabbitMQ policy that applies to a quorum queue named ``queue``: of the policies whose
    pattern matches it (Erlang ``re:run``: a search) and that apply to quorum queues, the one with
    the highest priority (RabbitMQ applies one policy per queue)."""
    candidates = []
    for policy in policies:
        if not _is_map(policy) or _get(policy, "apply-to") not in ("quorum_queues", "queues", "all", None):
            continue
        try:
            if re.search(str(_get(policy, "pattern") or ""), queue):
                candidates.append(policy)
        except re.error:
            continue
    return max(candidates, key=lambda p: _int(_get(p, "priority")) or 0, default=None)


def definitions_problems(text: object, queue: str = wire.QUEUE_NAME) -> list[str]:
    """What is missing from a broker definitions document for the task queue's dead-lettering."""
    try:
        definitions = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError as error:
        return [f"it is not valid JSON ({error})"]
    if not _is_map(definitions):
        return ["it is not a JSON object"]
    policy = _effective_policy(_list(definitions, "policies"), queue)
    if policy is None:
        return [f"no policy applies to quorum queues matching the task queue {queue!r}"]
    dlx = _get(policy, "definition", "dead-letter-exchange")
    if not dlx:
        return [
            f"policy {_get(policy, 'name')!r} (the one applied to {queue!r}) sets no dead-letter-exchange: "
            "since RabbitMQ 4.0 a quorum queue drops a message after 20 redeliveries"
        ]
    problems = []
    exchanges = {_get(e, "name") for e in _list(definitions, "exchanges")}
    if dlx not in exchanges:
        problems.append(f"dead-letter exchange {dlx!r} (policy {_get(policy, 'name')!r}) is not declared")
    queues = {_get(q, "name") for q in _list(definitions, "queues")}
    bound = [
        _get(b, "destination")
        for b in _list(definitions, "bindings")
        if _get(b, "source") == dlx and _get(b, "destination_type") == "queue"
    ]
    if not any(q in queues for q in bound):
        problems.append(
            f"no declared queue is bound to the dead-letter exchange {dlx!r}: dead letters would be dropped"
        )
    return problems


def check_broker_definitions(resources: Sequence[Resource]) -> list[Violation]:
    """The broker's definitions ConfigMap applies a quorum-queue policy with a dead-letter exchange
    (declared, with a queue bound to it) to the task queue."""
    maps = [r for r in resources if r.type == CONFIG_MAP and DEFINITIONS_KEY in _map(r.props, "data")]
    if not maps:
        return [
            Violation(
                f"no ConfigMap carries the broker's {DEFINITIONS_KEY}: the quorum-queue policy and the "
                "dead-letter exchange are never imported"
            )
        ]
    return [
        Violation(f"{kind_and_name(r.type, r.props)}: {DEFINITIONS_KEY}: {problem}", r)
        for r in maps
        for queue in lane_queues(_get(r.props, "data", DEFINITIONS_KEY))
        for problem in definitions_problems(_get(r.props, "data", DEFINITIONS_KEY), queue)
    ]


def lane_queues(text: object) -> list[str]:
    """The task queues a definitions document declares (``celery`` and each lane's ``celery.<name>``,
    contract.lanes): each must dead-letter. ``celery`` always, declared or not."""
    try:
        definitions = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        definitions = None
    declared = [_get(q, "name") for q in _list(definitions, "queues")] if _is_map(definitions) else []
    lanes = [q for q in declared if isinstance(q, str) and q.startswith(f"{wire.QUEUE_NAME}.")]
    return [wire.QUEUE_NAME, *(q for q in lanes if q != wire.DEAD_LETTER_QUEUE)]


def _max_unavailable(pdb: Props, replicas: int) -> int | None:
    """Pods a PDB lets go at once (None when it cannot be told)."""
    spec = _map(pdb, "spec")
    for key, as_unavailable in (("maxUnavailable", True), ("minAvailable", False)):
        value = _get(spec, key)
        if value is None:
            continue
        if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
            value = math.ceil(int(value[:-1]) * replicas / 100)  # Kubernetes rounds both up
        count = _int(value)
        if count is None:
            return None
        return count if as_unavailable else replicas - count
    return None


def check_pdbs(resources: Sequence[Resource]) -> list[Violation]:
    """Every broker StatefulSet and worker Deployment has a PodDisruptionBudget; the broker's keeps a
    majority of its nodes up through a drain."""
    pdbs = [r for r in resources if r.type == PDB]
    violations = []
    for workload in (r for r in resources if r.type in (STATEFUL_SET, DEPLOYMENT)):
        what = kind_and_name(workload.type, workload.props)
        labels = pod_labels(workload.props)
        covering = [p for p in pdbs if _selects(_map(p.props, "spec", "selector"), labels)]
        if not covering:
            violations.append(
                Violation(
                    f"{what}: no PodDisruptionBudget selects its pods ({labels}); a node drain or upgrade may "
                    "evict them all at once",
                    workload,
                )
            )
            continue
        replicas = _int(_get(workload.props, "spec", "replicas"))
        if not is_broker(workload.type, workload.props) or replicas is None:
            continue
        for pdb in covering:
            allowed = _max_unavailable(pdb.props, replicas)
            if allowed is None or allowed > (replicas - 1) // 2:
                violations.append(
                    Violation(
                        f"{kind_and_name(pdb.type, pdb.props)}: lets {allowed!r} of {replicas} broker pods go at "
                        f"once; at most {(replicas - 1) // 2} keeps a quorum-queue majority (maxUnavailable: 1)",
                        pdb,
                    )
                )
    return violations


def check_prod_placement(resources: Sequence[Resource]) -> list[Violation]:
    """In prod, brokers have required anti-affinity on the hostname and a zone spread that is enforced
    (DoNotSchedule); workers spread over zones (soft: they must still schedule with a zone down)."""
    production, why = environment(resources)
    if not production:
        return []
    violations = []
    for workload in resources:
        spec = pod_spec(workload.type, workload.props)
        labels = pod_labels(workload.props)
        what = f"{kind_and_name(workload.type, workload.props)} ({why})"
        zone_rules = [
            c
            for c in _list(spec, "topologySpreadConstraints")
            if _get(c, "topologyKey") == ZONE_KEY and _selects(_map(c, "labelSelector"), labels)
        ]
        if is_broker(workload.type, workload.props):
            required = _list(spec, "affinity", "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
            if not any(
                _get(t, "topologyKey") == HOSTNAME_KEY and _selects(_map(t, "labelSelector"), labels) for t in required
            ):
                violations.append(
                    Violation(
                        f"{what}: no required pod anti-affinity on {HOSTNAME_KEY} selecting its own pods; two brokers "
                        "on one node are lost together",
                        workload,
                    )
                )
            if not any(_get(c, "whenUnsatisfiable") == "DoNotSchedule" for c in zone_rules):
                violations.append(
                    Violation(
                        f"{what}: no topology spread over {ZONE_KEY} with whenUnsatisfiable DoNotSchedule; a zone "
                        "outage could take a majority of the brokers",
                        workload,
                    )
                )
        elif is_worker(workload.type, workload.props) and not zone_rules:
            violations.append(
                Violation(f"{what}: no topology spread constraint over {ZONE_KEY} for its pods", workload)
            )
    return violations


# --- the invariants -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Invariant:
    """One policy of the pack: its name (the policy name), what it enforces, and its check."""

    name: str
    description: str
    check_resource: ResourceCheck | None = None
    """Set for a resource check: called once per resource."""
    check_stack: StackCheck | None = None
    """Set for a stack check: called once with every resource of the stack."""


INVARIANTS: Final[tuple[Invariant, ...]] = (
    Invariant(
        "broker-replicas-odd",
        "RabbitMQ runs an odd number >= 3 of nodes.",
        check_resource=check_broker_replicas,
    ),
    Invariant(
        "broker-quorum-dead-letter",
        "The broker definitions apply a quorum-queue policy with a declared dead-letter exchange and queue.",
        check_stack=check_broker_definitions,
    ),
    Invariant(
        "disruption-budgets",
        "Brokers and workers have PodDisruptionBudgets; the brokers' keeps a majority up.",
        check_stack=check_pdbs,
    ),
    Invariant(
        "prod-placement",
        "In prod: required broker anti-affinity per node and an enforced zone spread; workers spread over zones.",
        check_stack=check_prod_placement,
    ),
    Invariant(
        "images-pinned",
        "Images are pinned by digest or full version, never latest.",
        check_resource=check_images_pinned,
    ),
    Invariant(
        "no-plain-secrets",
        "No password, token or cookie in a plain env value, command or ConfigMap.",
        check_resource=check_no_plain_secrets,
    ),
    Invariant(
        "grace-covers-hooks",
        "terminationGracePeriodSeconds covers the preStop waits and the process's stop.",
        check_resource=check_grace_covers_hooks,
    ),
    Invariant(
        "prod-deletion-protection",
        "A prod GKE cluster keeps deletion protection on.",
        check_resource=check_deletion_protection,
    ),
)
"""One entry per HA invariant, in the order ``pulumi preview`` lists them."""
