"""Sans-IO pieces of the MCP tools: which API path a resource lives at, and what a model is shown.

A tool names a resource as people do (``pods``, ``po``, ``deployment``, ``deployments.apps``,
``Deployment``); :func:`builtin` knows the built-in kinds, and :func:`from_discovery` reads an
``APIResourceList`` for the rest (the tools fetch discovery through the gateway, as kubectl does).
:func:`object_path` builds the exact, percent-encoded path the gateway parses.  The rest trims
what comes back for a model's context: one line per list item, YAML without managedFields, a
describe-like summary, a diff of a dry run.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import yaml

MAX_TEXT = 24_000  # characters of one tool result


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    name: str  # plural, as in the path
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def label(self) -> str:
        return f"{self.name}.{self.group}" if self.group else self.name


def _r(group, version, name, kind, namespaced=True, *aliases):
    return Resource(group, version, name, kind, namespaced), aliases


_BUILTIN = [
    _r("", "v1", "pods", "Pod", True, "po"),
    _r("", "v1", "services", "Service", True, "svc"),
    _r("", "v1", "configmaps", "ConfigMap", True, "cm"),
    _r("", "v1", "secrets", "Secret", True),
    _r("", "v1", "namespaces", "Namespace", False, "ns"),
    _r("", "v1", "nodes", "Node", False, "no"),
    _r("", "v1", "events", "Event", True, "ev"),
    _r("", "v1", "serviceaccounts", "ServiceAccount", True, "sa"),
    _r("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, "pvc"),
    _r("", "v1", "persistentvolumes", "PersistentVolume", False, "pv"),
    _r("", "v1", "endpoints", "Endpoints", True, "ep"),
    _r("", "v1", "replicationcontrollers", "ReplicationController", True, "rc"),
    _r("", "v1", "resourcequotas", "ResourceQuota", True, "quota"),
    _r("", "v1", "limitranges", "LimitRange", True, "limits"),
    _r("apps", "v1", "deployments", "Deployment", True, "deploy"),
    _r("apps", "v1", "statefulsets", "StatefulSet", True, "sts"),
    _r("apps", "v1", "daemonsets", "DaemonSet", True, "ds"),
    _r("apps", "v1", "replicasets", "ReplicaSet", True, "rs"),
    _r("batch", "v1", "jobs", "Job", True),
    _r("batch", "v1", "cronjobs", "CronJob", True, "cj"),
    _r("networking.k8s.io", "v1", "ingresses", "Ingress", True, "ing"),
    _r("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, "netpol"),
    _r("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    _r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    _r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _r("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _r("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, "pdb"),
    _r("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, "hpa"),
]
_NAMES: dict[str, Resource] = {}
for _resource, _aliases in _BUILTIN:
    for _name in (_resource.name, _resource.kind.lower(), _resource.label, *_aliases):
        _NAMES.setdefault(_name.lower(), _resource)
_KINDS = {(r.group, r.kind): r for r, _ in _BUILTIN}


class ToolInputError(ValueError):
    """What the model asked for cannot be sent (the message says why); nothing reached the gateway."""


def builtin(name: str) -> Resource | None:
    return _NAMES.get(name.strip().lower())


def builtin_kind(api_version: str, kind: str) -> Resource | None:
    group, _, version = api_version.rpartition("/")
    found = _KINDS.get((group, kind))
    if found is not None and found.version != version:
        found = Resource(group, version, found.name, kind, found.namespaced)
    return found


def from_discovery(document, group: str, version: str, *, name: str = "", kind: str = "") -> Resource | None:
    """The resource of an APIResourceList matching ``name`` (plural, singular, short name) or ``kind``."""
    if not isinstance(document, dict):
        return None
    wanted = name.lower()
    for item in document.get("resources") or ():
        if not isinstance(item, dict) or "/" in str(item.get("name", "")):
            continue
        names = {str(item.get("name", "")).lower(), str(item.get("singularName", "")).lower(),
                 *(str(s).lower() for s in item.get("shortNames") or ())}
        if (wanted and wanted in names) or (kind and item.get("kind") == kind):
            return Resource(group, version, str(item["name"]), str(item.get("kind", "")),
                            bool(item.get("namespaced")))
    return None


_SEGMENT_OK = "-._~:@!$&'()*+,;="


def _segment(value: str, what: str) -> str:
    if not value or value in (".", "..") or "/" in value:
        raise ToolInputError(f"{what} {json.dumps(value)} is not a valid name")
    return quote(value, safe=_SEGMENT_OK)


def collection_path(resource: Resource, namespace: str | None) -> str:
    root = f"/apis/{resource.group}/{resource.version}" if resource.group else f"/api/{resource.version}"
    if resource.namespaced and namespace:
        root += f"/namespaces/{_segment(namespace, 'namespace')}"
    return f"{root}/{resource.name}"


def object_path(resource: Resource, name: str, namespace: str | None, subresource: str = "") -> str:
    if resource.namespaced and not namespace:
        raise ToolInputError(f"{resource.label} are namespaced: give a namespace")
    path = f"{collection_path(resource, namespace)}/{_segment(name, 'name')}"
    return path + (f"/{_segment(subresource, 'subresource')}" if subresource else "")


def trim(text: str, limit: int = MAX_TEXT, hint: str = "") -> str:
    if len(text) <= limit:
        return text
    more = len(text) - limit
    return text[:limit] + f"\n[... {more} more characters cut{'; ' + hint if hint else ''}]"


def clean(obj):
    """The object as worth reading: no managedFields (and no last-applied annotation copy)."""
    if not isinstance(obj, dict):
        return obj
    obj = json.loads(json.dumps(obj))
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
            if not annotations:
                metadata.pop("annotations")
    return obj


def to_yaml(obj) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True)


def age(timestamp, now: datetime | None = None) -> str:
    try:
        then = datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    except ValueError:
        return "?"
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _state(item: dict) -> str:
    """A few words of status, as kubectl get's columns would say."""
    kind = item.get("kind", "")
    spec, status = item.get("spec") or {}, item.get("status") or {}
    if kind == "Pod" or "containerStatuses" in status:
        statuses = status.get("containerStatuses") or []
        ready = sum(1 for s in statuses if s.get("ready"))
        restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
        return f"{status.get('phase', '?')} ready {ready}/{len(spec.get('containers') or statuses)} restarts {restarts}"
    if "replicas" in spec:
        return (f"ready {status.get('readyReplicas', 0)}/{spec.get('replicas')} "
                f"updated {status.get('updatedReplicas', 0)} available {status.get('availableReplicas', 0)}")
    if kind == "Secret":
        return f"type {item.get('type', '?')} keys {len(item.get('data') or {})}"
    if kind == "ConfigMap":
        return f"keys {len(item.get('data') or {})}"
    if kind == "Service":
        return f"{spec.get('type', 'ClusterIP')} {spec.get('clusterIP', '')}".strip()
    if "phase" in status:
        return str(status["phase"])
    return ""


def list_lines(document, resource: Resource, now: datetime | None = None) -> str:
    if not isinstance(document, dict):
        return "the answer was not a list"
    items = document.get("items") or []
    kind = resource.kind
    lines = []
    for item in items:
        if not isinstance(item, dict):
            continue
        item.setdefault("kind", kind)
        meta = item.get("metadata") or {}
        where = f"{meta.get('namespace')}/" if meta.get("namespace") else ""
        lines.append(f"{where}{meta.get('name', '?')}  {_state(item)}  age {age(meta.get('creationTimestamp'), now)}"
                     .replace("    ", "  "))
    text = f"{len(lines)} {resource.label}" + (":\n" + "\n".join(lines) if lines else "")
    cont = (document.get("metadata") or {}).get("continue")
    if cont:
        text += f"\nmore items exist: call again with continue_token={json.dumps(cont)}"
    return text


def describe(obj: dict, events: list[dict]) -> str:
    """A describe-like summary: identity, labels, the status that matters, conditions, recent events."""
    meta = obj.get("metadata") or {}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    out = [f"{obj.get('kind', '?')} {meta.get('namespace', '') + '/' if meta.get('namespace') else ''}"
           f"{meta.get('name', '?')} (age {age(meta.get('creationTimestamp'))})"]
    if meta.get("labels"):
        out.append("labels: " + ", ".join(f"{k}={v}" for k, v in meta["labels"].items()))
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k != "kubectl.kubernetes.io/last-applied-configuration"}
    if annotations:
        out.append("annotations: " + ", ".join(f"{k}={str(v)[:80]}" for k, v in annotations.items()))
    for owner in meta.get("ownerReferences") or ():
        out.append(f"owned by {owner.get('kind')} {owner.get('name')}")
    state = _state(obj)
    if state:
        out.append("state: " + state)
    if obj.get("kind") == "Pod":
        out.append(f"node: {spec.get('nodeName', '-')}, IP {status.get('podIP', '-')}")
        statuses = {s.get("name"): s for s in status.get("containerStatuses") or ()}
        for container in spec.get("containers") or ():
            s = statuses.get(container.get("name"), {})
            state_word = next(iter(s.get("state") or {}), "unknown")
            out.append(f"container {container.get('name')}: image {container.get('image')}, {state_word}, "
                       f"ready {bool(s.get('ready'))}, restarts {s.get('restartCount', 0)}")
    elif "selector" in spec:
        out.append("selector: " + json.dumps(spec["selector"], sort_keys=True))
    if obj.get("kind") in ("Secret", "ConfigMap"):
        out.append("keys: " + ", ".join(sorted((obj.get("data") or {}).keys())))
    for condition in status.get("conditions") or ():
        out.append(f"condition {condition.get('type')}={condition.get('status')}"
                   + (f" ({condition.get('reason')}: {condition.get('message', '')[:160]})"
                      if condition.get("reason") else ""))
    out.append(event_lines(events) if events else "no recent events")
    return "\n".join(out)


def event_lines(events: list[dict], limit: int = 30) -> str:
    def when(event):
        return str(event.get("lastTimestamp") or event.get("eventTime") or
                   (event.get("metadata") or {}).get("creationTimestamp") or "")

    rows = sorted((e for e in events if isinstance(e, dict)), key=when)[-limit:]
    lines = []
    for event in rows:
        target = event.get("involvedObject") or event.get("regarding") or {}
        lines.append(f"{when(event)} {event.get('type', '')} {event.get('reason', '')} "
                     f"{target.get('kind', '')}/{target.get('name', '')}: {str(event.get('message', ''))[:240]}"
                     + (f" (x{event['count']})" if event.get("count") else ""))
    return f"{len(lines)} events:\n" + "\n".join(lines)


_VOLATILE_METADATA = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp")


def _comparable(obj) -> dict:
    obj = clean(obj) if isinstance(obj, dict) else {}
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        for name in _VOLATILE_METADATA:
            metadata.pop(name, None)
    obj.pop("status", None)
    return obj


def dry_run_diff(current: dict | None, proposed: dict) -> str:
    """A unified diff of the object now and the object the cluster's dry run says it would be."""
    before = to_yaml(_comparable(current)).splitlines(keepends=True) if current else []
    after = to_yaml(_comparable(proposed)).splitlines(keepends=True)
    diff = "".join(difflib.unified_diff(before, after, "live" if current else "/dev/null", "after apply (dry run)"))
    return diff or "no change: the object already is as the manifest says"
