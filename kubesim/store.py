"""The in-memory cluster: a generic object store with etcd-like resource versions and watches.

Everything here is synchronous and runs on the server's event loop, so every write is atomic with
respect to readers and watchers (no locks). Stored objects are never mutated in place: a write
replaces the dict, so readers may hand stored dicts out without copying as long as they do not
mutate them (the server builds new dicts for every transformation).

Long because the store, its resource versions and its watch fan-out must stay atomic with each
other on one event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import datetime
import json
import re
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol

from . import errors
from .discovery import Discovery, Resource
from .errors import ApiError
from .selectors import (
    FieldSelector,
    LabelSelector,
    field_getters,
    fields_match,
    labels_match,
)

# Objects whose DELETE answers with the object itself (ReturnDeletedObject in kube-apiserver's
# registries); every other resource answers with a Success Status.
RETURN_DELETED_OBJECT = {
    ("", "pods"),
    ("", "serviceaccounts"),
    ("", "services"),
    ("", "namespaces"),
    ("storage.k8s.io", "storageclasses"),
}
# Garbage-collection finalizers (metav1.FinalizerOrphanDependents / FinalizerDeleteDependents).
ORPHAN_FINALIZER = "orphan"
FOREGROUND_FINALIZER = "foregroundDeletion"
# Resources whose registry strategy orphans dependents by default (DefaultGarbageCollectionPolicy for the
# versions kubesim serves: batch/v1 Jobs and v1 ReplicationControllers, "for back compatibility").
ORPHAN_BY_DEFAULT = {("batch", "jobs"), ("", "replicationcontrollers")}
DEFAULT_HISTORY = 10_000
WATCH_QUEUE_LIMIT = 10_000
NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def encode_body(obj: object) -> bytes:
    """A response body as kube-apiserver's JSON serializer writes it (Go's json.Encoder: a final newline)."""
    return encode_json(obj) + b"\n"


@dataclass
class Entry:
    """A stored object plus its lazily computed JSON encoding."""

    obj: dict
    _raw: bytes | None = None

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = encode_json(self.obj)
        return self._raw


@dataclass(frozen=True)
class Event:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    key: tuple[str, str]  # (group, resource)
    namespace: str
    name: str
    obj: dict
    prev: dict | None


@dataclass
class WatchSpec:
    key: tuple[str, str]
    namespace: str | None
    labels: LabelSelector = ()
    fields: FieldSelector = ()
    name: str | None = None


@dataclass(eq=False)
class Watcher:
    """A live watch: events matching ``spec`` are queued for the HTTP handler to stream."""

    spec: WatchSpec
    getters: list
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(WATCH_QUEUE_LIMIT))
    overflowed: bool = False

    def _visible(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.spec.namespace and meta.get("namespace") != self.spec.namespace:
            return False
        return labels_match(self.spec.labels, meta.get("labels")) and fields_match(self.getters, obj)

    def translate(self, event: Event) -> tuple[str, dict] | None:
        """Map a store event to what this watcher sees (selector transitions become ADDED/DELETED)."""
        now = self._visible(event.obj)
        if event.type == "ADDED":
            return ("ADDED", event.obj) if now else None
        if event.type == "DELETED":
            return ("DELETED", event.obj) if now else None
        before = self._visible(event.prev)
        if now and before:
            return ("MODIFIED", event.obj)
        if now:
            return ("ADDED", event.obj)
        if before:
            return ("DELETED", event.obj)
        return None

    def offer(self, event: Event) -> None:
        seen = self.translate(event)
        if seen is None or self.overflowed:
            return
        try:
            self.queue.put_nowait((seen[0], seen[1], event.rv))
        except asyncio.QueueFull:
            self.overflowed = True


class Controller(Protocol):
    """What the store calls around writes (implemented by kubesim.controllers.Controllers)."""

    def prepare(self, res: Resource, obj: dict, old: dict | None) -> None: ...

    def changed(self, event: Event) -> None: ...

    def deleted(self, res: Resource, obj: dict) -> None: ...


class Cluster:
    """All objects of the simulated cluster plus the watch machinery.

    ``sandbox_dir`` and ``port_target`` are used by kubesim.streams; keep their signatures stable.
    """

    def __init__(
        self,
        discovery: Discovery,
        state_dir: Path,
        *,
        history_size: int = DEFAULT_HISTORY,
        ca_pem: str = "",
    ) -> None:
        self.discovery = discovery
        self.state_dir = Path(state_dir)
        self.ca_pem = ca_pem
        self.rv = 1
        self._objects: dict[tuple[str, str], dict[tuple[str, str], Entry]] = {}
        self._history: deque[Event] = deque(maxlen=history_size)
        self._compacted_rv = 0
        self._watchers: dict[tuple[str, str], set[Watcher]] = {}
        self._uid_index: dict[str, tuple[tuple[str, str], str, str]] = {}
        self._ip_counter = 10
        self._svc_ip_counter = 10
        # kubesim.controllers.Controllers: defaulting before writes, reactions after them.
        self.controller: Controller | None = None

    # -- helpers used by kubesim.streams ---------------------------------------------------

    def sandbox_dir(self, namespace: str, name: str) -> Path:
        """Directory that stands in for the pod's filesystem: ``<state>/sandbox/<ns>/<pod>``."""
        return self.state_dir / "sandbox" / namespace / name

    def port_target(self, pod: dict, port: int) -> tuple[str, int] | None:
        """Where a port-forward to ``port`` of ``pod`` connects, from kubesim.airlock.dev/ports."""
        spec = (pod.get("metadata", {}).get("annotations") or {}).get("kubesim.airlock.dev/ports", "")
        for item in spec.split(","):
            container_port, sep, target = item.strip().partition("=")
            if not sep:
                continue
            host, colon, target_port = target.strip().rpartition(":")
            if not colon:
                continue
            try:
                if int(container_port) == port:
                    return host.strip("[]"), int(target_port)
            except ValueError:
                continue
        return None

    # -- low level ---------------------------------------------------------------------------

    def _bucket(self, key: tuple[str, str]) -> dict[tuple[str, str], Entry]:
        return self._objects.setdefault(key, {})

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _record(self, event: Event) -> None:
        if len(self._history) == self._history.maxlen:
            self._compacted_rv = self._history[0].rv
        self._history.append(event)
        for w in list(self._watchers.get(event.key, ())):
            w.offer(event)
        if self.controller is not None:
            self.controller.changed(event)

    def _store(self, key: tuple[str, str], obj: dict, prev: dict | None, *, dry_run: bool) -> dict:
        """Commit ``obj`` (already complete apart from resourceVersion) and emit the event."""
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        name = meta["name"]
        if dry_run:
            meta["resourceVersion"] = prev["metadata"]["resourceVersion"] if prev else ""
            return obj
        rv = self.next_rv()
        meta["resourceVersion"] = str(rv)
        self._bucket(key)[(ns, name)] = Entry(obj)
        self._uid_index[meta["uid"]] = (key, ns, name)
        self._record(Event(rv, "MODIFIED" if prev else "ADDED", key, ns, name, obj, prev))
        return obj

    def _remove(self, key: tuple[str, str], entry: Entry, *, dry_run: bool) -> dict:
        obj = entry.obj
        meta = obj["metadata"]
        if dry_run:
            return obj
        ns, name = meta.get("namespace", ""), meta["name"]
        del self._objects[key][(ns, name)]
        self._uid_index.pop(meta.get("uid", ""), None)
        rv = self.next_rv()
        final = dict(obj)
        final["metadata"] = {**meta, "resourceVersion": str(rv)}
        self._record(Event(rv, "DELETED", key, ns, name, final, obj))
        return final

    def _prepare(self, res: Resource, obj: dict, old: dict | None) -> None:
        if self.controller is None:
            return
        try:
            self.controller.prepare(res, obj, old)
        except (AttributeError, TypeError, KeyError, ValueError):
            raise errors.bad_request(f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                                     "a field has the wrong type") from None

    def _deleted(self, res: Resource, obj: dict) -> None:
        if self.controller is not None:
            self.controller.deleted(res, obj)

    @staticmethod
    def key_of(res: Resource) -> tuple[str, str]:
        return (res.group, res.name)

    def _entry(self, res: Resource, namespace: str, name: str) -> Entry:
        entry = self._objects.get(self.key_of(res), {}).get((namespace if res.namespaced else "", name))
        if entry is None:
            raise errors.not_found(res.group, res.name, name)
        return entry

    def _require_namespace(self, res: Resource, namespace: str) -> None:
        if res.namespaced and ("", namespace) not in self._objects.get(("", "namespaces"), {}):
            raise errors.not_found("", "namespaces", namespace)

    @staticmethod
    def _as_version(res: Resource, obj: dict) -> dict:
        if obj.get("apiVersion") == res.api_version:
            return obj
        return {**obj, "apiVersion": res.api_version}

    # -- reads -------------------------------------------------------------------------------

    def get(self, res: Resource, namespace: str, name: str) -> dict:
        return self._as_version(res, self._entry(res, namespace, name).obj)

    def get_raw(self, res: Resource, namespace: str, name: str) -> bytes | None:
        """Pre-encoded JSON of the object if it is stored at this version (fast path)."""
        entry = self._entry(res, namespace, name)
        if entry.obj.get("apiVersion") == res.api_version:
            return entry.raw
        return None

    def find(self, group: str, resource: str, namespace: str, name: str) -> dict | None:
        entry = self._objects.get((group, resource), {}).get((namespace, name))
        return entry.obj if entry else None

    def objects(self, group: str, resource: str, namespace: str | None = None) -> list[dict]:
        bucket = self._objects.get((group, resource), {})
        return [
            e.obj for (ns, _), e in sorted(bucket.items()) if namespace is None or ns == namespace
        ]

    def list(
        self,
        res: Resource,
        namespace: str | None,
        *,
        labels: LabelSelector = (),
        fields: FieldSelector = (),
        limit: int = 0,
        continue_token: str | None = None,
    ) -> tuple[list[dict], dict]:
        """Matching objects in key order plus the list metadata (resourceVersion, continue)."""
        getters = field_getters(res.group, res.name, fields)
        bucket = self._objects.get(self.key_of(res), {})
        start: tuple[str, str] | None = None
        list_rv = self.rv
        if continue_token:
            start, list_rv = self._decode_continue(continue_token)
        keys = sorted(k for k in bucket if (not res.namespaced or namespace is None or k[0] == namespace))
        items: list[dict] = []
        meta: dict = {"resourceVersion": str(list_rv)}
        for idx, k in enumerate(keys):
            if start is not None and k <= start:
                continue
            obj = bucket[k].obj
            m = obj.get("metadata", {})
            if not labels_match(labels, m.get("labels")) or not fields_match(getters, obj):
                continue
            if limit and len(items) >= limit:
                meta["continue"] = self._encode_continue(last_key, list_rv)
                if not labels and not fields:
                    meta["remainingItemCount"] = len(keys) - idx
                break
            items.append(self._as_version(res, obj))
            last_key = k
        return items, meta

    @staticmethod
    def _encode_continue(key: tuple[str, str], rv: int) -> str:
        start = f"{key[0]}/{key[1]}" if key[0] else key[1]
        token = {"v": "meta.k8s.io/v1", "rv": rv, "start": start + "\x00"}
        return base64.urlsafe_b64encode(json.dumps(token, separators=(",", ":")).encode()).decode().rstrip("=")

    @staticmethod
    def _decode_continue(token: str) -> tuple[tuple[str, str], int]:
        try:
            padded = token + "=" * (-len(token) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded))
            if data.get("v") != "meta.k8s.io/v1" or not isinstance(data.get("rv"), int):
                raise ValueError
            start = str(data["start"]).rstrip("\x00")
        except (ValueError, binascii.Error, TypeError, AttributeError, UnicodeDecodeError):
            raise errors.bad_request("continue key is not valid: incorrect encoded start resourceVersion "
                                     "(version meta.k8s.io/v1)") from None
        ns, _, name = start.rpartition("/")
        return (ns, name), data["rv"]

    # -- watch -------------------------------------------------------------------------------

    def watch(
        self,
        res: Resource,
        spec: WatchSpec,
        *,
        resource_version: str | None,
        send_initial_events: bool | None,
    ) -> tuple[Watcher, list[tuple[str, dict, int]]]:
        """Register a watcher; returns it with the events to send before live ones.

        RV unset/"0" (or sendInitialEvents=true) starts with synthetic ADDED events for the
        current objects; a numeric RV replays the history after it, or fails with 410 Expired
        when that part of the history has been dropped.
        """
        getters = field_getters(res.group, res.name, spec.fields)
        watcher = Watcher(spec, getters)
        initial: list[tuple[str, dict, int]] = []
        rv_text = resource_version or ""
        initial_from_state = send_initial_events if send_initial_events is not None else rv_text in ("", "0")
        if initial_from_state:
            for obj in self.objects(res.group, res.name, spec.namespace if res.namespaced else None):
                if spec.name and obj["metadata"]["name"] != spec.name:
                    continue
                if watcher._visible(obj):
                    initial.append(("ADDED", self._as_version(res, obj), int(obj["metadata"]["resourceVersion"])))
        elif rv_text:
            try:
                since = int(rv_text)
                if since < 0:
                    raise ValueError
            except ValueError:
                raise errors.bad_request(f'invalid resource version "{rv_text}"') from None
            if since < self._compacted_rv:
                oldest = self._history[0].rv if self._history else self.rv
                raise errors.expired(f"too old resource version: {since} ({oldest - 1})")
            for event in self._history:
                if event.rv <= since or event.key != spec.key:
                    continue
                seen = watcher.translate(event)
                if seen is not None:
                    initial.append((seen[0], self._as_version(res, seen[1]), event.rv))
        self._watchers.setdefault(spec.key, set()).add(watcher)
        return watcher, initial

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.get(watcher.spec.key, set()).discard(watcher)

    def watcher_count(self) -> int:
        return sum(len(s) for s in self._watchers.values())

    # -- writes ------------------------------------------------------------------------------

    def _validate_name(self, res: Resource, name: str) -> None:
        if res.group == "rbac.authorization.k8s.io":
            ok = name not in (".", "..") and "/" not in name and "%" not in name
            rule = "may not contain '/' or '%' and may not be '.' or '..'"
        elif res.name == "namespaces":
            ok = len(name) <= 63 and bool(_DNS1123_LABEL.match(name))
            rule = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
                    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
        elif res.name == "services":
            ok = len(name) <= 63 and bool(_DNS1035_LABEL.match(name))
            rule = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
                    "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
                    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
        else:
            ok = len(name) <= 253 and bool(_DNS1123_SUBDOMAIN.match(name))
            rule = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
                    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
                    "regex used for validation is "
                    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
        if not ok:
            raise errors.invalid(res.group, res.kind, name,
                                 [("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {rule}')])

    def _check_type(self, res: Resource, obj: dict) -> None:
        if not isinstance(obj, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        kind = obj.get("kind")
        api_version = obj.get("apiVersion")
        if kind and kind != res.kind:
            raise errors.bad_request(
                f"the kind of the object ({kind}) does not match the kind of the resource ({res.kind})")
        if api_version and api_version != res.api_version:
            own = self.discovery.by_kind(api_version, res.kind)
            if own is None or own.name != res.name or own.group != res.group:
                raise errors.bad_request(
                    f"the API version in the data ({api_version}) does not match the expected API "
                    f"version ({res.api_version})")
        meta = obj.get("metadata", {})
        if meta is None:
            return
        if not isinstance(meta, dict):
            raise errors.bad_request(f"{res.kind} in version \"{res.version}\" cannot be handled as a "
                                     f"{res.kind}: metadata must be an object")
        for key in ("name", "generateName", "namespace", "resourceVersion", "uid"):
            if key in meta and meta[key] is not None and not isinstance(meta[key], str):
                raise errors.bad_request(f"{res.kind} in version \"{res.version}\" cannot be handled as a "
                                         f"{res.kind}: metadata.{key} must be a string")
        for key in ("labels", "annotations"):
            value = meta.get(key)
            if value is not None and not (isinstance(value, dict) and all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
                raise errors.bad_request(f"{res.kind} in version \"{res.version}\" cannot be handled as a "
                                         f"{res.kind}: metadata.{key} must map strings to strings")
        for key in ("ownerReferences", "finalizers"):
            if meta.get(key) is not None and not isinstance(meta[key], list):
                raise errors.bad_request(f"{res.kind} in version \"{res.version}\" cannot be handled as a "
                                         f"{res.kind}: metadata.{key} must be a list")

    @staticmethod
    def random_suffix(n: int = 5) -> str:
        raw = uuid.uuid4().bytes
        return "".join(NAME_SUFFIX_ALPHABET[b % len(NAME_SUFFIX_ALPHABET)] for b in raw[:n])

    def create(self, res: Resource, namespace: str, obj: dict, *, dry_run: bool = False) -> dict:
        self._check_type(res, obj)
        obj = copy.deepcopy(obj)
        meta = obj.get("metadata") or {}
        obj["metadata"] = meta
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        if res.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request")
            namespace = namespace or body_ns or ""
            if not namespace:
                raise errors.bad_request("the server could not find the requested resource: namespace is required")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
            namespace = ""
        if not meta.get("name"):
            if meta.get("generateName"):
                base = meta["generateName"]
                for _ in range(10):
                    candidate = base + self.random_suffix()
                    if (namespace, candidate) not in self._bucket(self.key_of(res)):
                        meta["name"] = candidate
                        break
            else:
                raise errors.invalid(res.group, res.kind, "",
                                     [("metadata.name", "FieldValueRequired",
                                       "Required value: name or generateName is required")])
        name = meta["name"]
        self._validate_name(res, name)
        self._require_namespace(res, namespace)
        if (namespace, name) in self._bucket(self.key_of(res)):
            raise errors.already_exists(res.group, res.name, name)
        for drop in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp",
                     "deletionGracePeriodSeconds", "selfLink", "managedFields", "generation"):
            meta.pop(drop, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if "spec" in obj:
            meta["generation"] = 1
        self._prepare(res, obj, None)
        return self._as_version(res, self._store(self.key_of(res), obj, None, dry_run=dry_run))

    def update(
        self,
        res: Resource,
        namespace: str,
        name: str,
        obj: dict,
        *,
        dry_run: bool = False,
        subresource: str | None = None,
        check_rv: bool = True,
    ) -> dict:
        """PUT semantics; for the status subresource only ``status`` is taken from ``obj``."""
        if subresource is None:
            self._check_type(res, obj)
        entry = self._entry(res, namespace, name)
        old = entry.obj
        new = copy.deepcopy(obj)
        meta = new.get("metadata") or {}
        new["metadata"] = meta
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if res.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request")
        rv = meta.get("resourceVersion")
        if check_rv and rv and rv != old["metadata"]["resourceVersion"]:
            raise errors.conflict(res.group, res.name, name, errors.MODIFIED_CONFLICT)
        uid = meta.get("uid")
        if uid and uid != old["metadata"].get("uid"):
            raise errors.conflict(
                res.group, res.name, name,
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: {old['metadata'].get('uid')}")
        has_status_sub = "status" in res.subresources
        if subresource in ("status", "approval"):
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        elif subresource == "ephemeralcontainers":
            merged = copy.deepcopy(old)
            merged.setdefault("spec", {})["ephemeralContainers"] = (new.get("spec") or {}).get(
                "ephemeralContainers", [])
            new = merged
        elif subresource == "finalize":
            merged = copy.deepcopy(old)
            merged.setdefault("spec", {})["finalizers"] = (new.get("spec") or {}).get("finalizers", [])
            new = merged
        else:
            new["apiVersion"], new["kind"] = old["apiVersion"], res.kind
            if has_status_sub:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            nmeta = new["metadata"]
            ometa = old["metadata"]
            nmeta["name"] = name
            if res.namespaced:
                nmeta["namespace"] = namespace
            for keep in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                         "generation"):
                if keep in ometa:
                    nmeta[keep] = ometa[keep]
                else:
                    nmeta.pop(keep, None)
            nmeta.pop("managedFields", None)
            nmeta.pop("selfLink", None)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if _spec_changed(old, new) and "generation" in old["metadata"]:
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        self._prepare(res, new, old)
        if new == old:
            return self._as_version(res, old)
        if "deletionTimestamp" in old["metadata"] and not new["metadata"].get("finalizers"):
            # The last finalizer of an object being deleted is gone: the store deletes it.
            if dry_run:
                return self._as_version(res, new)
            final = self._remove(self.key_of(res), Entry(new), dry_run=False)
            self._deleted(res, final)
            self._collect_dependents(old["metadata"].get("uid", ""))
            return self._as_version(res, final)
        return self._as_version(res, self._store(self.key_of(res), new, old, dry_run=dry_run))

    def delete(
        self,
        res: Resource,
        namespace: str,
        name: str,
        *,
        dry_run: bool = False,
        propagation: str | None = None,
        preconditions: dict | None = None,
        grace_seconds: int | None = None,
    ) -> dict:
        entry = self._entry(res, namespace, name)
        meta = entry.obj["metadata"]
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise errors.conflict(res.group, res.name, name,
                                  f"Precondition failed: UID in precondition: {pre['uid']}, "
                                  f"UID in object meta: {meta.get('uid')}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
            raise errors.conflict(res.group, res.name, name,
                                  f"Precondition failed: ResourceVersion in precondition: "
                                  f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                  f"{meta.get('resourceVersion')}")
        if res.name != "namespaces" or res.group:
            finalizers = deletion_finalizers(self.key_of(res), meta.get("finalizers") or [], propagation)
            if finalizers:
                return self._delete_later(res, entry, finalizers, dry_run=dry_run)
        if self.key_of(res) == ("", "pods") and not dry_run:
            # Graceful deletion as a kubelet acknowledges it at once: watchers see the pod
            # Terminating (MODIFIED with deletionTimestamp) and then DELETED.
            marked = copy.deepcopy(entry.obj)
            marked["metadata"]["deletionTimestamp"] = now_rfc3339()
            marked["metadata"]["deletionGracePeriodSeconds"] = 30 if grace_seconds is None else grace_seconds
            self._store(self.key_of(res), marked, entry.obj, dry_run=False)
            entry = self._entry(res, namespace, name)
        final = self._remove(self.key_of(res), entry, dry_run=dry_run)
        if not dry_run:
            if res.group == "" and res.name == "namespaces":
                self._purge_namespace(name)
            if propagation != "Orphan":
                self._collect_dependents(meta.get("uid", ""))
            self._deleted(res, final)
        if self.key_of(res) in RETURN_DELETED_OBJECT:
            out = copy.deepcopy(final)
            if res.name == "namespaces":
                out["metadata"]["deletionTimestamp"] = now_rfc3339()
                out.setdefault("status", {})["phase"] = "Terminating"
            return self._as_version(res, out)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, **({"group": res.group} if res.group else {}), "kind": res.name,
                        "uid": meta.get("uid", "")},
        }

    def _delete_later(self, res: Resource, entry: Entry, finalizers: list[str], *, dry_run: bool) -> dict:
        """Graceful deletion through finalizers, as kube-apiserver's store does it: the object gets a
        ``deletionTimestamp`` and its finalizers and stays until they are removed.  The answer is the
        object as marked (not a Status: it is not deleted yet).  The garbage collector's share of the work
        (``orphan``, ``foregroundDeletion``) is done at once, so the cluster has converged on return."""
        marked = copy.deepcopy(entry.obj)
        meta = marked["metadata"]
        meta.setdefault("deletionTimestamp", now_rfc3339())
        meta.setdefault("deletionGracePeriodSeconds", 0)
        meta["finalizers"] = finalizers
        if marked == entry.obj:
            return self._as_version(res, copy.deepcopy(entry.obj))
        answer = copy.deepcopy(self._store(self.key_of(res), marked, entry.obj, dry_run=dry_run))
        if not dry_run:
            self._collect_garbage(res, marked)
        return self._as_version(res, answer)

    def _collect_garbage(self, res: Resource, owner: dict) -> None:
        """The garbage collector on an object being deleted: orphan or delete its dependents, then drop
        the finalizer that asked for it (which deletes the object once no finalizer is left)."""
        meta = owner["metadata"]
        uid = meta.get("uid", "")
        finalizers = list(meta.get("finalizers") or [])
        if ORPHAN_FINALIZER in finalizers:
            for key, bucket in list(self._objects.items()):
                dep_res = self.discovery.storage_resource(*key)
                for entry in list(bucket.values()):
                    refs = entry.obj["metadata"].get("ownerReferences") or []
                    kept = [r for r in refs if not (isinstance(r, dict) and r.get("uid") == uid)]
                    if dep_res is None or len(kept) == len(refs):
                        continue
                    orphaned = copy.deepcopy(entry.obj)
                    if kept:
                        orphaned["metadata"]["ownerReferences"] = kept
                    else:
                        orphaned["metadata"].pop("ownerReferences", None)
                    self._store(key, orphaned, entry.obj, dry_run=False)
            finalizers.remove(ORPHAN_FINALIZER)
        if FOREGROUND_FINALIZER in finalizers:
            self._collect_dependents(uid)
            finalizers.remove(FOREGROUND_FINALIZER)
        current = self.find(res.group, res.name, meta.get("namespace", ""), meta["name"])
        if current is not None and finalizers != current["metadata"].get("finalizers"):
            updated = copy.deepcopy(current)
            updated["metadata"]["finalizers"] = finalizers
            self.update(res, meta.get("namespace", ""), meta["name"], updated, check_rv=False)

    def delete_collection(
        self,
        res: Resource,
        namespace: str | None,
        *,
        labels: LabelSelector = (),
        fields: FieldSelector = (),
        dry_run: bool = False,
        propagation: str | None = None,
    ) -> list[dict]:
        items, _ = self.list(res, namespace, labels=labels, fields=fields)
        deleted = []
        for obj in items:
            m = obj["metadata"]
            try:
                self.delete(res, m.get("namespace", ""), m["name"], dry_run=dry_run, propagation=propagation)
            except ApiError:
                continue
            deleted.append(obj)
        return deleted

    def _purge_namespace(self, namespace: str) -> None:
        for key, bucket in list(self._objects.items()):
            for (ns, _), entry in list(bucket.items()):
                if ns == namespace and (ns, entry.obj["metadata"]["name"]) in bucket:
                    self._remove(key, entry, dry_run=False)
                    res = self.discovery.storage_resource(*key)
                    if res is not None:
                        self._deleted(res, entry.obj)

    def _collect_dependents(self, uid: str) -> None:
        """Garbage collection: delete objects whose ownerReferences point at ``uid``."""
        if not uid:
            return
        pending = [uid]
        while pending:
            owner = pending.pop()
            for key, bucket in list(self._objects.items()):
                for entry in list(bucket.values()):
                    refs = entry.obj["metadata"].get("ownerReferences") or []
                    if any(isinstance(r, dict) and r.get("uid") == owner for r in refs):
                        m = entry.obj["metadata"]
                        if (m.get("namespace", ""), m["name"]) not in bucket:
                            continue
                        self._remove(key, entry, dry_run=False)
                        res = self.discovery.storage_resource(*key)
                        if res is not None:
                            self._deleted(res, entry.obj)
                        pending.append(m.get("uid", ""))

    # -- bulk helpers used by controllers and seeding ----------------------------------------

    def set_status(self, res: Resource, obj: dict, status: dict) -> dict:
        meta = obj["metadata"]
        if obj.get("status") == status:
            return obj
        return self.update(res, meta.get("namespace", ""), meta["name"], {**obj, "status": status},
                           subresource="status", check_rv=False)

    def all_objects(self) -> Iterable[tuple[tuple[str, str], dict]]:
        for key, bucket in self._objects.items():
            for entry in bucket.values():
                yield key, entry.obj


def deletion_finalizers(key: tuple[str, str], finalizers: list[str], propagation: str | None) -> list[str]:
    """The finalizers a DELETE leaves on the object (apiserver's deletionFinalizersForGarbageCollection):
    the object's own, plus ``orphan`` or ``foregroundDeletion`` from the propagation policy, else from a
    finalizer already there, else from the resource's default policy."""
    if propagation in ("Orphan", "Foreground", "Background"):
        orphan, foreground = propagation == "Orphan", propagation == "Foreground"
    else:
        first = next((f for f in finalizers if f in (ORPHAN_FINALIZER, FOREGROUND_FINALIZER)), None)
        orphan = first == ORPHAN_FINALIZER or (first is None and key in ORPHAN_BY_DEFAULT)
        foreground = first == FOREGROUND_FINALIZER
    kept = [f for f in finalizers if f not in (ORPHAN_FINALIZER, FOREGROUND_FINALIZER)]
    return kept + [ORPHAN_FINALIZER] * orphan + [FOREGROUND_FINALIZER] * foreground


def _spec_changed(old: dict, new: dict) -> bool:
    ignored = ("metadata", "status", "apiVersion", "kind")
    return {k: v for k, v in old.items() if k not in ignored} != {
        k: v for k, v in new.items() if k not in ignored
    }
