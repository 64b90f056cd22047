"""meta.k8s.io/v1 Table and PartialObjectMetadata responses as kube-apiserver builds them (sans-IO).

kube-apiserver answers ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` with the
columns of ``pkg/printers/internalversion`` (always generated "wide": kubectl hides the
priority-1 columns itself unless ``-o wide``), and every other resource with the default
convertor's Name / Created At columns. Row objects are PartialObjectMetadata unless the
request says ``includeObject=Object`` (the whole object) or ``None`` (null). Column
descriptions are the upstream API documentation strings.

Stored objects may lack the defaults kube-apiserver would have applied (replicas 1,
service type ClusterIP, port protocol TCP, secret type Opaque, ...), so cells assume them.

Long because it is the table of kube-apiserver's printer columns per resource: data, read as a
list.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from collections.abc import Callable
from typing import Any

META_API_VERSION = "meta.k8s.io/v1"

INCLUDE_METADATA = "Metadata"
INCLUDE_OBJECT = "Object"
INCLUDE_NONE = "None"


class TableError(Exception):
    """A Table request kube-apiserver would refuse; ``code`` is the HTTP status."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code


# --- PartialObjectMetadata ---------------------------------------------------------------


def to_partial_object_metadata(obj: dict) -> dict:
    """The PartialObjectMetadata of ``obj``: its whole metadata, annotations and managedFields included."""
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": META_API_VERSION,
        "metadata": copy.deepcopy(obj.get("metadata") or {}),
    }


def to_partial_object_metadata_list(objects: list[dict], list_meta: dict | None = None) -> dict:
    """A PartialObjectMetadataList; ``items`` is null when empty, as kube-apiserver encodes it."""
    items = [to_partial_object_metadata(obj) for obj in objects]
    return {
        "kind": "PartialObjectMetadataList",
        "apiVersion": META_API_VERSION,
        "metadata": _list_meta(list_meta),
        "items": items or None,
    }


def _list_meta(list_meta: dict | None) -> dict:
    """The ListMeta fields kube-apiserver copies into Tables and lists (omitempty)."""
    source = list_meta or {}
    meta = {key: source[key] for key in ("selfLink", "resourceVersion", "continue") if source.get(key)}
    if source.get("remainingItemCount") is not None:
        meta["remainingItemCount"] = source["remainingItemCount"]
    return meta


# --- durations and timestamps -----------------------------------------------------------


def human_duration(elapsed: timedelta) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration: 2-3 significant figures."""
    seconds = int(elapsed.total_seconds())  # truncates toward zero, like Go's int()
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m" if seconds % 60 == 0 else f"{minutes}m{seconds % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime, or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _since(value: Any, now: datetime) -> str:
    """translateTimestampSince: "<unknown>" for a missing time."""
    moment = parse_time(value)
    return "<unknown>" if moment is None else human_duration(now - moment)


# --- column definitions ----------------------------------------------------------------

# Upstream API documentation, as SwaggerDoc() returns it for the printers' descriptions.
_DOC_NAME = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources "
    "may allow a client to request the generation of an appropriate name automatically. Name is primarily "
    "intended for creation idempotence and configuration definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_DOC_CREATED = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not "
    "guaranteed to be set in happens-before order across separate operations. Clients may not set this value. "
    "It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. "
    "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
_DOC_CONTAINERS = "Names of each container in the template."
_DOC_IMAGES = "Images referenced by each container in the template."
_DOC_LABEL_SELECTORS = "https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"
_DOCS = {
    "pod.podIP": "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
    "pod.nodeName": (
        "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling "
        "by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes "
        "responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod "
        "to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename"
    ),
    "pod.nominatedNodeName": (
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled "
        "right away as preemption victims receive their graceful termination periods. This field does not "
        "guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if "
        "other nodes become available sooner. Scheduler may also decide to give the resources on this node to a "
        "higher priority pod that is created after preemption. As a result, this field may be different than "
        "PodSpec.nodeName when the pod is scheduled."
    ),
    "pod.readinessGates": (
        "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its "
        'containers are ready AND all conditions specified in the readiness gates have status equal to "True" '
        "More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates"
    ),
    "deployment.updatedReplicas": (
        "Total number of non-terminating pods targeted by this deployment that have the desired template spec."
    ),
    "deployment.availableReplicas": (
        "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment."
    ),
    "deployment.selector": (
        "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected "
        "by this deployment."
    ),
    "replicaset.specReplicas": (
        "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and "
        "unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset"
    ),
    "replicaset.statusReplicas": (
        "Replicas is the most recently observed number of non-terminating pods. More info: "
        "https://kubernetes.io/docs/concepts/workloads/controllers/replicaset"
    ),
    "replicaset.readyReplicas": "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
    "replicaset.selector": (
        "Selector is a label query over pods that should match the replica count. If the selector is empty, it is "
        "defaulted to the labels present on the pod template. Label keys and values that must match in order to be "
        f"controlled by this replica set. More info: {_DOC_LABEL_SELECTORS}"
    ),
    "job.succeeded": (
        "The number of pods which reached phase Succeeded. The value increases monotonically for a given spec. "
        "However, it may decrease in reaction to scale down of elastic indexed jobs."
    ),
    "job.selector": (
        "A label query over pods that should match the pod count. Normally, the system sets this field for you. "
        f"More info: {_DOC_LABEL_SELECTORS}"
    ),
    "service.type": (
        "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, "
        'ClusterIP, NodePort, and LoadBalancer. "ClusterIP" allocates a cluster-internal IP address for '
        "load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by "
        'manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is "None", no virtual IP '
        'is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. "NodePort" '
        "builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the "
        'clusterIP. "LoadBalancer" builds on NodePort and creates an external load-balancer (if supported in the '
        'current cloud) which routes to the same endpoints as the clusterIP. "ExternalName" aliases this service '
        "to the specified externalName. Several other fields do not apply to ExternalName services. More info: "
        "https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types"
    ),
    "service.clusterIP": (
        "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified "
        "manually, is in-range (as per system configuration), and is not in use, it will be allocated to the "
        "service; otherwise creation of the service will fail. This field may not be changed through updates "
        "unless the type field is also being changed to ExternalName (which requires this field to be blank) or "
        "the type field is being changed from ExternalName (in which case this field may optionally be specified, "
        'as describe above).  Valid values are "None", empty string (""), or a valid IP address. Setting this to '
        '"None" makes a "headless service" (no virtual IP), which is useful when direct endpoint connections are '
        "preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If "
        "this field is specified when creating a Service of type ExternalName, creation will fail. This field will "
        "be wiped when updating a Service to type ExternalName. More info: "
        "https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies"
    ),
    "service.externalIPs": (
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this "
        "service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic "
        "arrives at a node with this IP.  A common example is external load-balancers that are not part of the "
        "Kubernetes system."
    ),
    "service.ports": (
        "The list of ports that are exposed by this service. More info: "
        "https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies"
    ),
    "service.selector": (
        "Route service traffic to pods with label keys and values matching this selector. If empty or not "
        "present, the service is assumed to have an external process managing its endpoints, which Kubernetes will "
        "not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. "
        "More info: https://kubernetes.io/docs/concepts/services-networking/service/"
    ),
    "secret.type": (
        "Used to facilitate programmatic handling of secret data. More info: "
        "https://kubernetes.io/docs/concepts/configuration/secret/#secret-types"
    ),
    "secret.data": (
        "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The "
        "serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly "
        "non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4"
    ),
    "configmap.data": (
        "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. "
        "Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not "
        "overlap with the keys in the BinaryData field, this is enforced during validation process."
    ),
    "serviceaccount.secrets": (
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are "
        'allowed to use. Pods are only limited to this list if this service account has a "kubernetes.io/'
        'enforce-mountable-secrets" annotation set to "true". The "kubernetes.io/enforce-mountable-secrets" '
        "annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. "
        "This field should not be used to find auto-generated service account token secrets for use outside of "
        "pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token "
        "secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret"
    ),
    "node.kubeletVersion": "Kubelet Version reported by the node.",
    "node.addresses": (
        "List of addresses reachable to the node. Queried from cloud provider, if available. More info: "
        "https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as "
        "mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is "
        "merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. "
        "Consumers should assume that addresses can change during the lifetime of a Node. However, there are some "
        "exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status "
        "or consumers of the downward API (status.hostIP)."
    ),
    "node.osImage": "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    "node.kernelVersion": "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    "node.containerRuntimeVersion": (
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."
    ),
    "event.lastTimestamp": "The time at which the most recent occurrence of this event was recorded.",
    "event.type": "Type of this event (Normal, Warning), new types could be added in the future",
    "event.reason": (
        "This should be a short, machine understandable string that gives the reason for the transition into the "
        "object's current status."
    ),
    "event.involvedObject": "The object that this event is about.",
    "event.fieldPath": (
        "If referring to a piece of an object instead of an entire object, this string should contain a valid "
        "JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object "
        'reference is to a container within a pod, this would take on a value like: "spec.containers{name}" (where '
        '"name" refers to the name of the container that triggered the event) or if no container name is specified '
        '"spec.containers[2]" (container with index 2 in this pod). This syntax is chosen only to have some '
        "well-defined way of referencing a part of an object."
    ),
    "event.source": "The component reporting this event. Should be a short machine understandable string.",
    "event.message": "A human-readable description of the status of this operation.",
    "event.firstTimestamp": "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    "event.count": "The number of times this event has occurred.",
}


def _column(name: str, type_: str, description: str, priority: int = 0, format_: str = "") -> dict:
    return {"name": name, "type": type_, "format": format_, "description": description, "priority": priority}


def _name_column(priority: int = 0) -> dict:
    return _column("Name", "string", _DOC_NAME, priority, "name")


def _age_column() -> dict:
    return _column("Age", "string", _DOC_CREATED)


_POD_COLUMNS = (
    _name_column(),
    _column("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    _column("Status", "string", "The aggregate status of the containers in this pod."),
    _column(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this "
        "pod has restarted.",
    ),
    _age_column(),
    _column("IP", "string", _DOCS["pod.podIP"], 1),
    _column("Node", "string", _DOCS["pod.nodeName"], 1),
    _column("Nominated Node", "string", _DOCS["pod.nominatedNodeName"], 1),
    _column("Readiness Gates", "string", _DOCS["pod.readinessGates"], 1),
)
_DEPLOYMENT_COLUMNS = (
    _name_column(),
    _column("Ready", "string", "Number of the pod with ready state"),
    _column("Up-to-date", "string", _DOCS["deployment.updatedReplicas"]),
    _column("Available", "string", _DOCS["deployment.availableReplicas"]),
    _age_column(),
    _column("Containers", "string", _DOC_CONTAINERS, 1),
    _column("Images", "string", _DOC_IMAGES, 1),
    _column("Selector", "string", _DOCS["deployment.selector"], 1),
)
_REPLICASET_COLUMNS = (
    _name_column(),
    _column("Desired", "integer", _DOCS["replicaset.specReplicas"]),
    _column("Current", "integer", _DOCS["replicaset.statusReplicas"]),
    _column("Ready", "integer", _DOCS["replicaset.readyReplicas"]),
    _age_column(),
    _column("Containers", "string", _DOC_CONTAINERS, 1),
    _column("Images", "string", _DOC_IMAGES, 1),
    _column("Selector", "string", _DOCS["replicaset.selector"], 1),
)
_STATEFULSET_COLUMNS = (
    _name_column(),
    _column("Ready", "string", "Number of the pod with ready state"),
    _age_column(),
    _column("Containers", "string", _DOC_CONTAINERS, 1),
    _column("Images", "string", _DOC_IMAGES, 1),
)
_JOB_COLUMNS = (
    _name_column(),
    _column("Status", "string", "Status of the job."),
    _column("Completions", "string", _DOCS["job.succeeded"]),
    _column("Duration", "string", "Time required to complete the job."),
    _age_column(),
    _column("Containers", "string", _DOC_CONTAINERS, 1),
    _column("Images", "string", _DOC_IMAGES, 1),
    _column("Selector", "string", _DOCS["job.selector"], 1),
)
_SERVICE_COLUMNS = (
    _name_column(),
    _column("Type", "string", _DOCS["service.type"]),
    _column("Cluster-IP", "string", _DOCS["service.clusterIP"]),
    _column("External-IP", "string", _DOCS["service.externalIPs"]),
    _column("Port(s)", "string", _DOCS["service.ports"]),
    _age_column(),
    _column("Selector", "string", _DOCS["service.selector"], 1),
)
_SECRET_COLUMNS = (
    _name_column(),
    _column("Type", "string", _DOCS["secret.type"]),
    _column("Data", "string", _DOCS["secret.data"]),
    _age_column(),
)
_CONFIGMAP_COLUMNS = (_name_column(), _column("Data", "string", _DOCS["configmap.data"]), _age_column())
_NAMESPACE_COLUMNS = (_name_column(), _column("Status", "string", "The status of the namespace"), _age_column())
_NODE_COLUMNS = (
    _name_column(),
    _column("Status", "string", "The status of the node"),
    _column("Roles", "string", "The roles of the node"),
    _age_column(),
    _column("Version", "string", _DOCS["node.kubeletVersion"]),
    _column("Internal-IP", "string", _DOCS["node.addresses"], 1),
    _column("External-IP", "string", _DOCS["node.addresses"], 1),
    _column("OS-Image", "string", _DOCS["node.osImage"], 1),
    _column("Kernel-Version", "string", _DOCS["node.kernelVersion"], 1),
    _column("Container-Runtime", "string", _DOCS["node.containerRuntimeVersion"], 1),
)
_SERVICEACCOUNT_COLUMNS = (
    _name_column(),
    _column("Secrets", "string", _DOCS["serviceaccount.secrets"]),
    _age_column(),
)
_EVENT_COLUMNS = (
    _column("Last Seen", "string", _DOCS["event.lastTimestamp"]),
    _column("Type", "string", _DOCS["event.type"]),
    _column("Reason", "string", _DOCS["event.reason"]),
    _column("Object", "string", _DOCS["event.involvedObject"]),
    _column("Subobject", "string", _DOCS["event.fieldPath"], 1),
    _column("Source", "string", _DOCS["event.source"], 1),
    _column("Message", "string", _DOCS["event.message"]),
    _column("First Seen", "string", _DOCS["event.firstTimestamp"], 1),
    _column("Count", "string", _DOCS["event.count"], 1),
    _name_column(priority=1),
)
# pkg/registry/rest.defaultTableConvertor, for resources without a printer.
_DEFAULT_COLUMNS = (_name_column(), _column("Created At", "date", _DOC_CREATED))


# --- helpers shared by the printers -------------------------------------------------------


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(key)
    return default if obj is None else obj


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def format_labels(labels: Any) -> str:
    """labels.FormatLabels: sorted "k=v" pairs, or "<none>"."""
    pairs = sorted(f"{k}={v}" for k, v in _dict(labels).items())
    return ",".join(pairs) or "<none>"


def label_selector_string(selector: Any) -> str | None:
    """metav1.LabelSelectorAsSelector(selector).String(); None when the selector is invalid."""
    if not isinstance(selector, dict):
        return ""
    requirements = []
    for key, value in _dict(selector.get("matchLabels")).items():
        requirements.append((key, f"{key}={value}"))
    for expression in _list(selector.get("matchExpressions")):
        key, operator = _str(_get(expression, "key")), _get(expression, "operator")
        values = [_str(v) for v in _list(_get(expression, "values"))]
        if operator in ("In", "NotIn"):
            if not values:
                return None
            word = " in " if operator == "In" else " notin "
            requirements.append((key, f"{key}{word}({','.join(sorted(values))})"))
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                return None
            requirements.append((key, key if operator == "Exists" else f"!{key}"))
        else:
            return None
    requirements.sort(key=lambda requirement: requirement[0])
    return ",".join(text for _, text in requirements)


def format_label_selector(selector: Any) -> str:
    """metav1.FormatLabelSelector: "<none>" when empty, "<error>" when invalid."""
    text = label_selector_string(selector)
    if text is None:
        return "<error>"
    return text or "<none>"


def _container_cells(pod_spec: Any) -> tuple[str, str]:
    """layoutContainerCells: comma-separated container names and images."""
    containers = [_dict(c) for c in _list(_get(pod_spec, "containers"))]
    return ",".join(_str(c.get("name")) for c in containers), ",".join(_str(c.get("image")) for c in containers)


def _condition_true(conditions: Any, type_: str) -> bool:
    """The first condition of this type decides (hasJobCondition, isPodInitializedConditionTrue)."""
    for condition in _list(conditions):
        if _get(condition, "type") == type_:
            return _get(condition, "status") == "True"
    return False


# --- printers ----------------------------------------------------------------------------

Row = tuple[list, list]


def _pod_row(pod: dict, now: datetime) -> Row:
    spec, status = _dict(pod.get("spec")), _dict(pod.get("status"))
    phase = _str(status.get("phase"))
    reason = _str(status.get("reason")) or phase
    for condition in _list(status.get("conditions")):
        if _get(condition, "type") == "PodScheduled" and _get(condition, "reason") == "SchedulingGated":
            reason = "SchedulingGated"
    conditions = []
    if phase == "Succeeded":
        conditions = [{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}]
    elif phase == "Failed":
        conditions = [{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]

    init_specs = {_get(c, "name"): _dict(c) for c in _list(spec.get("initContainers"))}
    sidecars = {name for name, c in init_specs.items() if c.get("restartPolicy") == "Always"}
    total = len(_list(spec.get("containers"))) + len(sidecars)
    ready = restarts = sidecar_restarts = 0
    last_restart = last_sidecar_restart = None

    def later(current: datetime | None, status_: dict) -> datetime | None:
        finished = parse_time(_get(status_, "lastState", "terminated", "finishedAt"))
        if finished is not None and (current is None or finished > current):
            return finished
        return current

    initializing = False
    init_statuses = [_dict(s) for s in _list(status.get("initContainerStatuses"))]
    for index, container in enumerate(init_statuses):
        restarts += _int(container.get("restartCount"))
        last_restart = later(last_restart, container)
        is_sidecar = container.get("name") in sidecars
        if is_sidecar:
            sidecar_restarts += _int(container.get("restartCount"))
            last_sidecar_restart = later(last_sidecar_restart, container)
        terminated = _get(container, "state", "terminated")
        waiting = _get(container, "state", "waiting")
        if isinstance(terminated, dict) and _int(terminated.get("exitCode")) == 0:
            continue
        if is_sidecar and container.get("started") is True:
            if container.get("ready") is True:
                ready += 1
            continue
        if isinstance(terminated, dict):
            if _str(terminated.get("reason")):
                reason = "Init:" + terminated["reason"]
            elif _int(terminated.get("signal")):
                reason = f"Init:Signal:{terminated['signal']}"
            else:
                reason = f"Init:ExitCode:{_int(terminated.get('exitCode'))}"
        elif isinstance(waiting, dict) and _str(waiting.get("reason")) and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{index}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _condition_true(status.get("conditions"), "Initialized"):
        restarts, last_restart = sidecar_restarts, last_sidecar_restart
        has_running = False
        for container in reversed([_dict(s) for s in _list(status.get("containerStatuses"))]):
            restarts += _int(container.get("restartCount"))
            last_restart = later(last_restart, container)
            waiting = _get(container, "state", "waiting")
            terminated = _get(container, "state", "terminated")
            if isinstance(waiting, dict) and _str(waiting.get("reason")):
                reason = waiting["reason"]
            elif isinstance(terminated, dict) and _str(terminated.get("reason")):
                reason = terminated["reason"]
            elif isinstance(terminated, dict):
                signal = _int(terminated.get("signal"))
                reason = f"Signal:{signal}" if signal else f"ExitCode:{_int(terminated.get('exitCode'))}"
            elif container.get("ready") is True and isinstance(_get(container, "state", "running"), dict):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(status.get("conditions"), "Ready") else "NotReady"

    deleting = _get(pod, "metadata", "deletionTimestamp") is not None
    if deleting and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif deleting and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_cell = str(restarts)
    if restarts and last_restart is not None:
        restarts_cell = f"{restarts} ({human_duration(now - last_restart)} ago)"

    pod_ips = _list(status.get("podIPs"))
    pod_ip = _str(_get(pod_ips[0], "ip")) if pod_ips else _str(status.get("podIP"))
    gates = _list(spec.get("readinessGates"))
    gates_cell = "<none>"
    if gates:
        true_gates = 0
        for gate in gates:
            for condition in _list(status.get("conditions")):
                if _get(condition, "type") == _get(gate, "conditionType"):
                    true_gates += _get(condition, "status") == "True"
                    break
        gates_cell = f"{true_gates}/{len(gates)}"
    cells = [
        _str(_get(pod, "metadata", "name")),
        f"{ready}/{total}",
        reason,
        restarts_cell,
        _since(_get(pod, "metadata", "creationTimestamp"), now),
        pod_ip or "<none>",
        _str(spec.get("nodeName")) or "<none>",
        _str(status.get("nominatedNodeName")) or "<none>",
        gates_cell,
    ]
    return cells, conditions


def _deployment_row(obj: dict, now: datetime) -> Row:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    names, images = _container_cells(_get(spec, "template", "spec"))
    selector = label_selector_string(spec.get("selector"))
    cells = [
        _str(_get(obj, "metadata", "name")),
        f"{_int(status.get('readyReplicas'))}/{_int(spec.get('replicas'), 1)}",
        _int(status.get("updatedReplicas")),
        _int(status.get("availableReplicas")),
        _since(_get(obj, "metadata", "creationTimestamp"), now),
        names,
        images,
        "<invalid>" if selector is None else selector,
    ]
    return cells, []


def _replicaset_row(obj: dict, now: datetime) -> Row:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    names, images = _container_cells(_get(spec, "template", "spec"))
    cells = [
        _str(_get(obj, "metadata", "name")),
        _int(spec.get("replicas"), 1),
        _int(status.get("replicas")),
        _int(status.get("readyReplicas")),
        _since(_get(obj, "metadata", "creationTimestamp"), now),
        names,
        images,
        format_label_selector(spec.get("selector")),
    ]
    return cells, []


def _statefulset_row(obj: dict, now: datetime) -> Row:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    names, images = _container_cells(_get(spec, "template", "spec"))
    cells = [
        _str(_get(obj, "metadata", "name")),
        f"{_int(status.get('readyReplicas'))}/{_int(spec.get('replicas'), 1)}",
        _since(_get(obj, "metadata", "creationTimestamp"), now),
        names,
        images,
    ]
    return cells, []


def _job_row(obj: dict, now: datetime) -> Row:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    succeeded = _int(status.get("succeeded"))
    completions = spec.get("completions")
    parallelism = spec.get("parallelism")
    if completions is None and parallelism is None:
        completions = 1  # SetDefaults_Job
    if isinstance(completions, int) and not isinstance(completions, bool):
        completions_cell = f"{succeeded}/{completions}"
    elif _int(parallelism) > 1:
        completions_cell = f"{succeeded}/1 of {_int(parallelism)}"
    else:
        completions_cell = f"{succeeded}/1"
    started, finished = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    duration = ""
    if started is not None:
        duration = human_duration((finished or now) - started)
    conditions = status.get("conditions")
    if _condition_true(conditions, "Complete"):
        state = "Complete"
    elif _condition_true(conditions, "Failed"):
        state = "Failed"
    elif _get(obj, "metadata", "deletionTimestamp") is not None:
        state = "Terminating"
    elif _condition_true(conditions, "Suspended"):
        state = "Suspended"
    elif _condition_true(conditions, "FailureTarget"):
        state = "FailureTarget"
    else:
        state = "Running"
    names, images = _container_cells(_get(spec, "template", "spec"))
    cells = [
        _str(_get(obj, "metadata", "name")),
        state,
        completions_cell,
        duration,
        _since(_get(obj, "metadata", "creationTimestamp"), now),
        names,
        images,
        format_label_selector(spec.get("selector")),
    ]
    return cells, []


def _service_external_ip(spec: dict, status: dict) -> str:
    """getServiceExternalIP with wide output (kube-apiserver never clips the column)."""
    external_ips = [_str(ip) for ip in _list(spec.get("externalIPs"))]
    kind = _str(spec.get("type")) or "ClusterIP"
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external_ips) or "<none>"
    if kind == "LoadBalancer":
        found = set()
        for ingress in _list(_get(status, "loadBalancer", "ingress")):
            address = _str(_get(ingress, "ip")) or _str(_get(ingress, "hostname"))
            if address:
                found.add(address)
        balancer = sorted(found)
        if external_ips:
            return ",".join(balancer + external_ips)
        return ",".join(balancer) or "<pending>"
    if kind == "ExternalName":
        return _str(spec.get("externalName"))
    return "<unknown>"


def _service_row(obj: dict, now: datetime) -> Row:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    cluster_ips = _list(spec.get("clusterIPs"))
    cluster_ip = _str(cluster_ips[0]) if cluster_ips else _str(spec.get("clusterIP"))
    ports = []
    for port in _list(spec.get("ports")):
        number, node_port = _int(_get(port, "port")), _int(_get(port, "nodePort"))
        protocol = _str(_get(port, "protocol")) or "TCP"
        ports.append(f"{number}:{node_port}/{protocol}" if node_port > 0 else f"{number}/{protocol}")
    cells = [
        _str(_get(obj, "metadata", "name")),
        _str(spec.get("type")) or "ClusterIP",
        cluster_ip or "<none>",
        _service_external_ip(spec, status),
        ",".join(ports) or "<none>",
        _since(_get(obj, "metadata", "creationTimestamp"), now),
        format_labels(spec.get("selector")),
    ]
    return cells, []


def _secret_row(obj: dict, now: datetime) -> Row:
    # The internal Secret merges stringData into data, so a stored stringData key counts too.
    keys = set(_dict(obj.get("data"))) | set(_dict(obj.get("stringData")))
    cells = [
        _str(_get(obj, "metadata", "name")),
        _str(obj.get("type")) or "Opaque",
        len(keys),
        _since(_get(obj, "metadata", "creationTimestamp"), now),
    ]
    return cells, []


def _configmap_row(obj: dict, now: datetime) -> Row:
    count = len(_dict(obj.get("data"))) + len(_dict(obj.get("binaryData")))
    return [_str(_get(obj, "metadata", "name")), count, _since(_get(obj, "metadata", "creationTimestamp"), now)], []


def _namespace_row(obj: dict, now: datetime) -> Row:
    phase = _str(_get(obj, "status", "phase")) or "Active"
    return [_str(_get(obj, "metadata", "name")), phase, _since(_get(obj, "metadata", "creationTimestamp"), now)], []


def _node_address(status: dict, type_: str) -> str:
    for address in _list(status.get("addresses")):
        if _get(address, "type") == type_:
            return _str(_get(address, "address"))
    return "<none>"


def _node_row(obj: dict, now: datetime) -> Row:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    ready = None
    for condition in _list(status.get("conditions")):
        if _get(condition, "type") == "Ready":
            ready = condition
    states = ["Unknown"] if ready is None else ["Ready" if _get(ready, "status") == "True" else "NotReady"]
    if spec.get("unschedulable") is True:
        states.append("SchedulingDisabled")
    roles = set()
    for key, value in _dict(_get(obj, "metadata", "labels")).items():
        if key.startswith("node-role.kubernetes.io/") and len(key) > len("node-role.kubernetes.io/"):
            roles.add(key[len("node-role.kubernetes.io/"):])
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    info = _dict(status.get("nodeInfo"))
    cells = [
        _str(_get(obj, "metadata", "name")),
        ",".join(states),
        ",".join(sorted(roles)) or "<none>",
        _since(_get(obj, "metadata", "creationTimestamp"), now),
        _str(info.get("kubeletVersion")),
        _node_address(status, "InternalIP"),
        _node_address(status, "ExternalIP"),
        _str(info.get("osImage")) or "<unknown>",
        _str(info.get("kernelVersion")) or "<unknown>",
        _str(info.get("containerRuntimeVersion")) or "<unknown>",
    ]
    return cells, []


def _serviceaccount_row(obj: dict, now: datetime) -> Row:
    count = len(_list(obj.get("secrets")))
    return [_str(_get(obj, "metadata", "name")), count, _since(_get(obj, "metadata", "creationTimestamp"), now)], []


def _core_event(event: dict) -> dict:
    """An events.k8s.io/v1 Event in core/v1 field names, as the internal conversion does."""
    return {
        "metadata": event.get("metadata"),
        "involvedObject": event.get("regarding"),
        "reason": event.get("reason"),
        "message": event.get("note"),
        "type": event.get("type"),
        "source": event.get("deprecatedSource"),
        "firstTimestamp": event.get("deprecatedFirstTimestamp"),
        "lastTimestamp": event.get("deprecatedLastTimestamp"),
        "count": event.get("deprecatedCount"),
        "eventTime": event.get("eventTime"),
        "series": event.get("series"),
        "reportingComponent": event.get("reportingController"),
        "reportingInstance": event.get("reportingInstance"),
    }


def _event_row(event: dict, now: datetime) -> Row:
    first = _since(event.get("firstTimestamp"), now)
    if parse_time(event.get("firstTimestamp")) is None:
        first = _since(event.get("eventTime"), now)
    last = _since(event.get("lastTimestamp"), now)
    if parse_time(event.get("lastTimestamp")) is None:
        last = first
    count = _int(event.get("count"))
    series = event.get("series")
    if isinstance(series, dict):
        last = _since(series.get("lastObservedTime"), now)
        count = _int(series.get("count"))
    elif count == 0:
        count = 1  # singleton events of the new API carry no count
    involved = _dict(event.get("involvedObject"))
    kind = _str(involved.get("kind")).lower()
    target = f"{kind}/{involved['name']}" if _str(involved.get("name")) else kind
    component = _str(_get(event, "source", "component")) or _str(event.get("reportingComponent"))
    instance = _str(_get(event, "source", "host")) or _str(event.get("reportingInstance"))
    source = f"{component}, {instance}" if instance else component
    cells = [
        last,
        _str(event.get("type")),
        _str(event.get("reason")),
        target,
        _str(involved.get("fieldPath")),
        source,
        _str(event.get("message")).strip(),
        first,
        count,
        _str(_get(event, "metadata", "name")),
    ]
    return cells, []


def _default_row(obj: dict, now: datetime) -> Row:
    """defaultTableConvertor: the name and the creation time in RFC 3339, UTC."""
    created = parse_time(_get(obj, "metadata", "creationTimestamp"))
    stamp = created.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if created else "0001-01-01T00:00:00Z"
    return [_str(_get(obj, "metadata", "name")), stamp], []


Printer = tuple[tuple[dict, ...], Callable[[dict, datetime], Row]]

# (group, resource) -> (columns, row function). Everything else gets _DEFAULT_COLUMNS.
PRINTERS: dict[tuple[str, str], Printer] = {
    ("", "pods"): (_POD_COLUMNS, _pod_row),
    ("apps", "deployments"): (_DEPLOYMENT_COLUMNS, _deployment_row),
    ("apps", "replicasets"): (_REPLICASET_COLUMNS, _replicaset_row),
    ("apps", "statefulsets"): (_STATEFULSET_COLUMNS, _statefulset_row),
    ("batch", "jobs"): (_JOB_COLUMNS, _job_row),
    ("", "services"): (_SERVICE_COLUMNS, _service_row),
    ("", "secrets"): (_SECRET_COLUMNS, _secret_row),
    ("", "configmaps"): (_CONFIGMAP_COLUMNS, _configmap_row),
    ("", "namespaces"): (_NAMESPACE_COLUMNS, _namespace_row),
    ("", "nodes"): (_NODE_COLUMNS, _node_row),
    ("", "serviceaccounts"): (_SERVICEACCOUNT_COLUMNS, _serviceaccount_row),
    ("", "events"): (_EVENT_COLUMNS, _event_row),
    ("events.k8s.io", "events"): (_EVENT_COLUMNS, lambda event, now: _event_row(_core_event(event), now)),
}


def to_table(
    objects: list[dict],
    resource: str,
    group: str,
    *,
    include_object: str = INCLUDE_METADATA,
    list_meta: dict | None = None,
    now: datetime | None = None,
) -> dict:
    """The meta.k8s.io/v1 Table kube-apiserver returns for these objects of ``group``/``resource``.

    ``list_meta`` supplies resourceVersion/continue/remainingItemCount (for a single-object
    GET pass the object's resourceVersion). ``now`` fixes the clock for the AGE cells.
    Raises TableError 400 for an unknown includeObject value.
    """
    if include_object not in (INCLUDE_METADATA, INCLUDE_OBJECT, INCLUDE_NONE, ""):
        raise TableError(f'unrecognized includeObject value: "{include_object}"', 400)
    clock = now or datetime.now(timezone.utc)
    columns, row_for = PRINTERS.get((group, resource), (_DEFAULT_COLUMNS, _default_row))
    rows = []
    for obj in objects:
        cells, conditions = row_for(obj, clock)
        row: dict[str, Any] = {"cells": cells}
        if conditions:
            row["conditions"] = copy.deepcopy(conditions)
        if include_object == INCLUDE_OBJECT:
            row["object"] = copy.deepcopy(obj)
        elif include_object == INCLUDE_NONE:
            row["object"] = None
        else:
            row["object"] = to_partial_object_metadata(obj)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": META_API_VERSION,
        "metadata": _list_meta(list_meta),
        "columnDefinitions": copy.deepcopy(list(columns)),
        # The printers build an empty row list; the default convertor leaves it nil (null).
        "rows": rows if rows or (group, resource) in PRINTERS else None,
    }
