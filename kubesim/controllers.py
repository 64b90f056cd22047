"""What the rest of a cluster would do: defaulting, a pretend kubelet, and a few controllers.

Run synchronously after each committed write (draining a work queue, so controller writes never
recurse), which makes the cluster converge before the next request is served:
- defaulting/"admission": Secret stringData, pod defaults and Running status, Service cluster IPs,
  Namespace phase;
- kubelet: pod sandbox directory, container log files, seeded files, pod events;
- namespace controller: ``default`` ServiceAccount and ``kube-root-ca.crt`` ConfigMap;
- deployment -> replicaset -> pod, statefulset -> pod, with status kept equal to spec so that
  ``kubectl rollout status`` finishes.

Long because the test double's controllers converge in one synchronous pass; each is short and they
share the work queue.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import shutil
from collections import deque
from pathlib import Path, PurePosixPath
import logging
from typing import Callable

from . import errors
from .errors import ApiError
from .discovery import Resource
from .store import NAME_SUFFIX_ALPHABET, Cluster, Event, now_rfc3339

log = logging.getLogger("kubesim")
LOG_ANNOTATION = "kubesim.airlock.dev/log"
FILES_ANNOTATION = "kubesim.airlock.dev/files"
DEFAULT_NODE = "kubesim-node"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def template_hash(template: dict) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(NAME_SUFFIX_ALPHABET[b % len(NAME_SUFFIX_ALPHABET)] for b in digest[:10])


def stable_suffix(seed: str, n: int = 5) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(NAME_SUFFIX_ALPHABET[b % len(NAME_SUFFIX_ALPHABET)] for b in digest[:n])


def owner_ref(obj: dict) -> dict:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(obj: dict, owner: dict) -> bool:
    uid = owner["metadata"].get("uid")
    return any(isinstance(r, dict) and r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])


def default_log(pod: dict, container: str) -> str:
    name = pod["metadata"]["name"]
    return (
        f"{now_rfc3339()} INFO starting {container} in pod {name}\n"
        f"{now_rfc3339()} INFO {container} ready to serve requests\n"
    )


def safe_join(root: Path, relative: str) -> Path | None:
    """``root/relative`` unless ``relative`` would escape ``root``."""
    parts = [p for p in PurePosixPath(relative).parts if p not in ("/", "")]
    if not parts or any(p == ".." for p in parts):
        return None
    return root.joinpath(*parts)


class Controllers:
    """Installed as ``cluster.controller``; see the module docstring."""

    def __init__(self, cluster: Cluster, token_issuer: Callable[[str, str, str], str] | None = None) -> None:
        self.cluster = cluster
        self.token_issuer = token_issuer
        self._queue: deque[Callable[[], None]] = deque()
        self._draining = False
        cluster.controller = self

    # -- resource handles ------------------------------------------------------------------

    def _res(self, group: str, resource: str) -> Resource:
        res = self.cluster.discovery.storage_resource(group, resource)
        assert res is not None, (group, resource)
        return res

    # -- before writes -----------------------------------------------------------------------

    def prepare(self, res: Resource, obj: dict, old: dict | None) -> None:
        key = (res.group, res.name)
        if key == ("", "secrets"):
            self._prepare_secret(res, obj, old)
        elif key == ("", "pods") and old is None:
            self._prepare_pod(obj)
        elif key == ("", "services"):
            self._prepare_service(obj)
        elif key == ("", "namespaces"):
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {}).setdefault("phase", "Active")
            labels = obj["metadata"].setdefault("labels", {})
            labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif key in (("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets")):
            spec = obj.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            if key == ("apps", "deployments"):
                spec.setdefault("revisionHistoryLimit", 10)
                spec.setdefault("progressDeadlineSeconds", 600)
                spec.setdefault("strategy", {"type": "RollingUpdate",
                                             "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})

    def _prepare_secret(self, res: Resource, obj: dict, old: dict | None) -> None:
        name = obj["metadata"].get("name", "")
        data = obj.get("data")
        if data is not None and not isinstance(data, dict):
            raise errors.bad_request("Secret.data must be an object")
        data = dict(data or {})
        for k, v in data.items():
            if not isinstance(v, str):
                raise errors.bad_request(f'Secret in version "v1" cannot be handled as a Secret: '
                                         f'json: cannot unmarshal {type(v).__name__} into Go struct field '
                                         f'Secret.data of type []uint8')
            try:
                base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                raise errors.bad_request('Secret in version "v1" cannot be handled as a Secret: illegal '
                                         'base64 data at input byte 0') from None
        string_data = obj.pop("stringData", None) or {}
        if not isinstance(string_data, dict):
            raise errors.bad_request("Secret.stringData must be an object")
        for k, v in string_data.items():
            data[k] = _b64(str(v))
        if data or "data" in obj:
            obj["data"] = data
        obj.setdefault("type", "Opaque")
        if old is None and obj["type"] == "kubernetes.io/service-account-token":
            annotations = obj["metadata"].get("annotations") or {}
            sa = annotations.get("kubernetes.io/service-account.name")
            if not sa:
                raise errors.invalid(res.group, res.kind, name, [(
                    "metadata.annotations[kubernetes.io/service-account.name]", "FieldValueRequired",
                    "Required value")])
            ns = obj["metadata"]["namespace"]
            if "token" not in data and self.token_issuer is not None:
                data["token"] = _b64(self.token_issuer(ns, sa, name))
            data.setdefault("ca.crt", _b64(self.cluster.ca_pem))
            data.setdefault("namespace", _b64(ns))
            obj["data"] = data

    def _node(self) -> tuple[str, str]:
        nodes = self.cluster.objects("", "nodes")
        if not nodes:
            return DEFAULT_NODE, "172.18.0.2"
        node = nodes[0]
        ip = next((a["address"] for a in (node.get("status") or {}).get("addresses") or []
                   if a.get("type") == "InternalIP"), "172.18.0.2")
        return node["metadata"]["name"], ip

    def _prepare_pod(self, pod: dict) -> None:
        spec = pod.setdefault("spec", {})
        containers = spec.get("containers")
        if not isinstance(containers, list) or not containers:
            raise errors.invalid("", "Pod", pod["metadata"].get("name", ""),
                                 [("spec.containers", "FieldValueRequired", "Required value")])
        for c in containers + (spec.get("initContainers") or []):
            if not isinstance(c, dict) or not c.get("name") or not c.get("image"):
                raise errors.invalid("", "Pod", pod["metadata"].get("name", ""), [(
                    "spec.containers[0].image" if isinstance(c, dict) and c.get("name") else
                    "spec.containers[0].name", "FieldValueRequired", "Required value")])
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            image = c["image"]
            c.setdefault("imagePullPolicy",
                         "Always" if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
                         else "IfNotPresent")
            c.setdefault("resources", {})
            for port in c.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
        node, host_ip = self._node()
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("securityContext", {})
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault("nodeName", node)
        if pod.get("status"):
            return
        self.cluster._ip_counter += 1
        n = self.cluster._ip_counter
        pod_ip = f"10.244.{n // 250}.{n % 250 + 2}"
        started = now_rfc3339()
        statuses = []
        for c in containers:
            digest = hashlib.sha256(f"{pod['metadata'].get('name')}/{c['name']}".encode()).hexdigest()
            image = c["image"]
            repo = image if "/" in image else f"docker.io/library/{image}"
            statuses.append({
                "name": c["name"],
                "state": {"running": {"startedAt": started}},
                "lastState": {},
                "ready": True,
                "restartCount": 0,
                "image": repo if ":" in image.rsplit("/", 1)[-1] else f"{repo}:latest",
                "imageID": f"{repo.split(':')[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}",
                "containerID": f"containerd://{digest}",
                "started": True,
            })
        qos = "BestEffort"
        if any((c.get("resources") or {}).get("requests") or (c.get("resources") or {}).get("limits")
               for c in containers):
            qos = "Burstable"
        conditions = [
            {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": started}
            for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
        ]
        pod["status"] = {
            "phase": "Running",
            "conditions": conditions,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": started,
            "containerStatuses": statuses,
            "qosClass": qos,
        }

    def _prepare_service(self, svc: dict) -> None:
        spec = svc.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
            self.cluster._svc_ip_counter += 1
            n = self.cluster._svc_ip_counter
            spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
        if spec.get("clusterIP"):
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                if "port" in port:
                    port.setdefault("targetPort", port["port"])
        svc.setdefault("status", {"loadBalancer": {}})

    # -- after writes ------------------------------------------------------------------------

    def changed(self, event: Event) -> None:
        key, ns, name = event.key, event.namespace, event.name
        if key == ("", "namespaces") and event.type == "ADDED":
            self._queue.append(lambda: self._namespace_defaults(name))
        elif key == ("apps", "deployments") and event.type != "DELETED":
            self._queue.append(lambda: self._reconcile_deployment(ns, name))
        elif key == ("apps", "replicasets") and event.type != "DELETED":
            self._queue.append(lambda: self._reconcile_replicaset(ns, name))
            for ref in event.obj["metadata"].get("ownerReferences") or []:
                if isinstance(ref, dict) and ref.get("kind") == "Deployment" and ref.get("name"):
                    self._queue.append(lambda dep=ref["name"]: self._reconcile_deployment(ns, dep))
        elif key == ("apps", "statefulsets") and event.type != "DELETED":
            self._queue.append(lambda: self._reconcile_statefulset(ns, name))
        elif key == ("", "pods"):
            if event.type == "ADDED":
                pod = event.obj
                self._queue.append(lambda: self._kubelet_start(pod))
            for ref in event.obj["metadata"].get("ownerReferences") or []:
                if not isinstance(ref, dict) or not ref.get("name"):
                    continue
                owner = ref["name"]
                if ref.get("kind") == "ReplicaSet":
                    self._queue.append(lambda owner=owner: self._reconcile_replicaset(ns, owner))
                elif ref.get("kind") == "StatefulSet":
                    self._queue.append(lambda owner=owner: self._reconcile_statefulset(ns, owner))
        if self._draining:
            return
        self._draining = True
        try:
            while self._queue:
                job = self._queue.popleft()
                try:
                    job()
                except (ApiError, KeyError, TypeError, ValueError, AttributeError) as exc:
                    # Like a real controller, a malformed object stalls only its own
                    # reconciliation; the API write that triggered it has already succeeded.
                    # Only the exception type is logged: messages may quote object content.
                    log.warning("controller could not reconcile an object (%s)", type(exc).__name__)
        finally:
            self._draining = False

    def deleted(self, res: Resource, obj: dict) -> None:
        if (res.group, res.name) == ("", "pods"):
            meta = obj["metadata"]
            shutil.rmtree(self.cluster.sandbox_dir(meta["namespace"], meta["name"]), ignore_errors=True)
        elif (res.group, res.name) == ("", "namespaces"):
            shutil.rmtree(self.cluster.state_dir / "sandbox" / obj["metadata"]["name"], ignore_errors=True)

    # -- namespace controller ----------------------------------------------------------------

    def _namespace_defaults(self, ns: str) -> None:
        if self.cluster.find("", "namespaces", "", ns) is None:
            return
        if self.cluster.find("", "serviceaccounts", ns, "default") is None:
            self.cluster.create(self._res("", "serviceaccounts"), ns,
                                {"metadata": {"name": "default", "namespace": ns}})
        if self.cluster.ca_pem and self.cluster.find("", "configmaps", ns, "kube-root-ca.crt") is None:
            self.cluster.create(self._res("", "configmaps"), ns, {
                "metadata": {"name": "kube-root-ca.crt", "namespace": ns,
                             "annotations": {"kubernetes.io/description": (
                                 "Contains a CA bundle that can be used to verify the kube-apiserver "
                                 "when using internal endpoints such as the internal service IP or "
                                 "kubernetes.default.svc. No other usage is guaranteed across "
                                 "distributions of Kubernetes clusters.")}},
                "data": {"ca.crt": self.cluster.ca_pem},
            })

    # -- events ------------------------------------------------------------------------------

    def record_event(self, obj: dict, reason: str, message: str, component: str,
                     field_path: str | None = None, host: str | None = None) -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        if self.cluster.find("", "namespaces", "", ns) is None:
            return
        ts = now_rfc3339()
        involved = {
            "kind": obj["kind"], "namespace": ns, "name": meta["name"], "uid": meta.get("uid", ""),
            "apiVersion": obj["apiVersion"], "resourceVersion": meta.get("resourceVersion", ""),
        }
        if field_path:
            involved["fieldPath"] = field_path
        source = {"component": component, **({"host": host} if host else {})}
        name = f"{meta['name']}.{hashlib.sha256((meta.get('uid', '') + reason + message).encode()).hexdigest()[:16]}"
        if self.cluster.find("", "events", ns, name) is not None:
            return
        self.cluster.create(self._res("", "events"), ns, {
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "source": source,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
            "type": "Normal",
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": host or "",
        })

    # -- kubelet -----------------------------------------------------------------------------

    def _kubelet_start(self, pod: dict) -> None:
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        current = self.cluster.find("", "pods", ns, name)
        if current is None or current["metadata"].get("uid") != meta.get("uid"):
            return
        sandbox = self.cluster.sandbox_dir(ns, name)
        logs = sandbox / ".logs"
        logs.mkdir(parents=True, exist_ok=True)
        annotations = meta.get("annotations") or {}
        spec = pod.get("spec", {})
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            path = logs / f"{c['name']}.log"
            if not path.exists():
                text = annotations.get(LOG_ANNOTATION)
                path.write_text(text if text is not None else default_log(pod, c["name"]))
        files = annotations.get(FILES_ANNOTATION)
        if files:
            try:
                mapping = json.loads(files)
            except ValueError:
                mapping = {}
            if isinstance(mapping, dict):
                for rel, content in mapping.items():
                    target = safe_join(sandbox, str(rel))
                    if target is None or not isinstance(content, str):
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(content)
        if (pod.get("status") or {}).get("phase") != "Running":
            return
        node = spec.get("nodeName", DEFAULT_NODE)
        self.record_event(pod, "Scheduled", f"Successfully assigned {ns}/{name} to {node}", "default-scheduler")
        for c in spec.get("containers") or []:
            fp = f"spec.containers{{{c['name']}}}"
            self.record_event(pod, "Pulled", f'Container image "{c["image"]}" already present on machine',
                              "kubelet", fp, node)
            self.record_event(pod, "Created", f"Created container: {c['name']}", "kubelet", fp, node)
            self.record_event(pod, "Started", f"Started container {c['name']}", "kubelet", fp, node)

    # -- workload controllers ----------------------------------------------------------------

    def _pods_of(self, owner: dict) -> list[dict]:
        ns = owner["metadata"]["namespace"]
        return [p for p in self.cluster.objects("", "pods", ns) if owned_by(p, owner)]

    @staticmethod
    def _ready(pod: dict) -> bool:
        status = pod.get("status") or {}
        return status.get("phase") == "Running" and all(
            cs.get("ready") for cs in status.get("containerStatuses") or [{}])

    def _pod_from_template(self, owner: dict, name: str, extra_labels: dict) -> dict:
        template = owner["spec"].get("template") or {}
        tmeta = template.get("metadata") or {}
        meta = {
            "name": name,
            "generateName": f"{owner['metadata']['name']}-",
            "namespace": owner["metadata"]["namespace"],
            "labels": {**(tmeta.get("labels") or {}), **extra_labels},
            "ownerReferences": [owner_ref(owner)],
        }
        if tmeta.get("annotations"):
            meta["annotations"] = dict(tmeta["annotations"])
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                "spec": json.loads(json.dumps(template.get("spec") or {}))}

    def _reconcile_replicaset(self, ns: str, name: str) -> None:
        rs = self.cluster.find("apps", "replicasets", ns, name)
        if rs is None:
            return
        want = int(rs.get("spec", {}).get("replicas", 1) or 0)
        pods = self._pods_of(rs)
        pods_res = self._res("", "pods")
        n = 0
        while len(pods) < want:
            pod_name = f"{name}-{stable_suffix(f'{ns}/{name}/{n}')}"
            n += 1
            if self.cluster.find("", "pods", ns, pod_name) is not None:
                continue
            pod = self._pod_from_template(rs, pod_name, {})
            try:
                pods.append(self.cluster.create(pods_res, ns, pod))
            except errors.ApiError:
                return
        if len(pods) > want:
            for pod in sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True)[: len(pods) - want]:
                self.cluster.delete(pods_res, ns, pod["metadata"]["name"])
            pods = self._pods_of(rs)
        ready = sum(1 for p in pods if self._ready(p))
        status = {"replicas": len(pods), "fullyLabeledReplicas": len(pods), "readyReplicas": ready,
                  "availableReplicas": ready, "observedGeneration": rs["metadata"].get("generation", 1)}
        if not ready:
            del status["readyReplicas"], status["availableReplicas"]
        self.cluster.set_status(self._res("apps", "replicasets"), rs, status)

    def _reconcile_deployment(self, ns: str, name: str) -> None:
        dep = self.cluster.find("apps", "deployments", ns, name)
        if dep is None:
            return
        spec = dep.get("spec") or {}
        want = int(spec.get("replicas", 1) or 0)
        template = spec.get("template") or {}
        rs_res = self._res("apps", "replicasets")
        owned = [rs for rs in self.cluster.objects("apps", "replicasets", ns) if owned_by(rs, dep)]
        h = template_hash(template)
        rs_name = f"{name}-{h}"
        revisions = [int((rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", 0))
                     for rs in owned]
        current = next((rs for rs in owned if rs["metadata"]["name"] == rs_name), None)
        for rs in owned:
            if rs is not current and rs["spec"].get("replicas", 0) != 0:
                self.cluster.update(rs_res, ns, rs["metadata"]["name"],
                                    {**rs, "spec": {**rs["spec"], "replicas": 0}}, check_rv=False)
        if current is None:
            revision = str(max(revisions, default=0) + 1)
            tmeta = dict(template.get("metadata") or {})
            labels = {**(tmeta.get("labels") or {}), "pod-template-hash": h}
            selector = json.loads(json.dumps(spec.get("selector") or {}))
            selector.setdefault("matchLabels", {})["pod-template-hash"] = h
            rs = {
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name, "namespace": ns, "labels": labels,
                    "annotations": {"deployment.kubernetes.io/desired-replicas": str(want),
                                    "deployment.kubernetes.io/max-replicas": str(want + max(1, want // 4)),
                                    "deployment.kubernetes.io/revision": revision},
                    "ownerReferences": [owner_ref(dep)],
                },
                "spec": {"replicas": want, "selector": selector,
                         "template": {**template, "metadata": {**tmeta, "labels": labels}}},
            }
            self.cluster.create(rs_res, ns, rs)
            self.record_event(dep, "ScalingReplicaSet",
                              f"Scaled up replica set {rs_name} from 0 to {want}", "deployment-controller")
        else:
            revision = (current["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "1")
            if current["spec"].get("replicas") != want:
                before = current["spec"].get("replicas")
                annotations = {**(current["metadata"].get("annotations") or {}),
                               "deployment.kubernetes.io/desired-replicas": str(want)}
                self.cluster.update(rs_res, ns, rs_name, {
                    **current, "metadata": {**current["metadata"], "annotations": annotations},
                    "spec": {**current["spec"], "replicas": want}}, check_rv=False)
                verb = "up" if want > (before or 0) else "down"
                self.record_event(dep, "ScalingReplicaSet",
                                  f"Scaled {verb} replica set {rs_name} from {before} to {want}",
                                  "deployment-controller")
        dep = self.cluster.find("apps", "deployments", ns, name)
        if dep is None:
            return
        annotations = dep["metadata"].get("annotations") or {}
        if annotations.get("deployment.kubernetes.io/revision") != revision:
            dep = self.cluster.update(self._res("apps", "deployments"), ns, name, {
                **dep, "metadata": {**dep["metadata"],
                                    "annotations": {**annotations, "deployment.kubernetes.io/revision": revision}}},
                check_rv=False)
        self._deployment_status(dep, want, rs_name)

    def _deployment_status(self, dep: dict, want: int, rs_name: str) -> None:
        old = dep.get("status") or {}
        now = now_rfc3339()

        def condition(ctype: str, reason: str, message: str) -> dict:
            prev = next((c for c in old.get("conditions") or [] if c.get("type") == ctype), None)
            if prev and prev.get("reason") == reason and prev.get("message") == message:
                return prev
            return {"type": ctype, "status": "True", "lastUpdateTime": now, "lastTransitionTime": now,
                    "reason": reason, "message": message}

        status: dict = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": want,
            "updatedReplicas": want,
            "readyReplicas": want,
            "availableReplicas": want,
            "conditions": [
                condition("Available", "MinimumReplicasAvailable", "Deployment has minimum availability."),
                condition("Progressing", "NewReplicaSetAvailable",
                          f'ReplicaSet "{rs_name}" has successfully progressed.'),
            ],
        }
        if want == 0:
            for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"):
                del status[k]
        self.cluster.set_status(self._res("apps", "deployments"), dep, status)

    def _reconcile_statefulset(self, ns: str, name: str) -> None:
        sts = self.cluster.find("apps", "statefulsets", ns, name)
        if sts is None:
            return
        want = int(sts.get("spec", {}).get("replicas", 1) or 0)
        revision = f"{name}-{template_hash(sts['spec'].get('template') or {})}"
        pods_res = self._res("", "pods")
        for i in range(want):
            pod_name = f"{name}-{i}"
            if self.cluster.find("", "pods", ns, pod_name) is None:
                pod = self._pod_from_template(sts, pod_name, {
                    "controller-revision-hash": revision,
                    "statefulset.kubernetes.io/pod-name": pod_name,
                    "apps.kubernetes.io/pod-index": str(i),
                })
                pod["spec"].setdefault("hostname", pod_name)
                if sts["spec"].get("serviceName"):
                    pod["spec"].setdefault("subdomain", sts["spec"]["serviceName"])
                self.cluster.create(pods_res, ns, pod)
        for pod in self._pods_of(sts):
            suffix = pod["metadata"]["name"].rsplit("-", 1)[-1]
            if not suffix.isdigit() or int(suffix) >= want:
                self.cluster.delete(pods_res, ns, pod["metadata"]["name"])
        pods = self._pods_of(sts)
        ready = sum(1 for p in pods if self._ready(p))
        status = {"observedGeneration": sts["metadata"].get("generation", 1), "replicas": len(pods),
                  "readyReplicas": ready, "currentReplicas": len(pods), "updatedReplicas": len(pods),
                  "availableReplicas": ready, "currentRevision": revision, "updateRevision": revision,
                  "collisionCount": 0}
        self.cluster.set_status(self._res("apps", "statefulsets"), sts, status)
