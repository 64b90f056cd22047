"""The MCP tools, each translated into Kubernetes API requests sent through the gateway.

Long because each tool is a short translation (arguments -> the exact requests -> a trimmed text
for the model) and they share one failure vocabulary: kept in one place, a reader sees that no
tool reaches the cluster other than through ``client`` (mcpfront.inprocess.GatewayClient: the
gateway's own pipeline, with the agent's token).

A tool returns text.  A request the gateway refused becomes :class:`ToolFailure` with the Status
message words (the MCP tool error); a request a review rule holds becomes :class:`Pending`, which
the server answers at once with what is pending, the review's URL and how to wait and retry.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

import yaml

from kube import bodies
from mcpfront import kubeapi
from mcpfront.inprocess import Answer, Call
from mcpfront.kubeapi import Resource, ToolInputError

FIELD_MANAGER = "airlock-mcp"
MAX_LIST = 500
MAX_LOG_BYTES = 256 * 1024
MAX_EXEC_OUTPUT = 64 * 1024
MAX_EXEC_SECONDS = 120
MAX_MANIFEST_BYTES = 512 * 1024


class ToolFailure(Exception):
    """The gateway (or the cluster, through it) refused: the message is the Status message."""

    def __init__(self, message: str, code: int = 0, retry_after: str = ""):
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class Pending(Exception):
    """A review rule holds the request: nothing was done yet."""

    def __init__(self, review_id: int, message: str, done: str = ""):
        super().__init__(message)
        self.review_id = review_id
        self.message = message
        self.done = done  # what earlier steps of the same tool call already did (the dry-run diff)


def _review_id(answer: Answer) -> int | None:
    status = answer.status_object() or {}
    details = status.get("details") or {}
    if details.get("group") == "airlock.dev" and details.get("kind") == "reviews":
        try:
            return int(details.get("name"))
        except (TypeError, ValueError):
            return None
    return None


_PENDING = re.compile(r"airlock: review \d+ (is waiting for a reviewer|is still pending)")


def check(answer: Answer, what: str) -> Answer:
    """``answer`` when it is a success; else Pending (a held request) or ToolFailure (its Status message)."""
    if answer.ok:
        return answer
    message = answer.message()
    review = _review_id(answer)
    if answer.status == 403 and review is not None and _PENDING.search(message):
        raise Pending(review, message)
    retry = answer.headers.get("retry-after", "")
    again = f" (retry after {retry} s)" if retry else ""
    raise ToolFailure(f"{what} failed with {answer.status}: {message}{again}", answer.status, retry)


@dataclass(frozen=True)
class Manifest:
    obj: dict
    body: bytes  # exactly what is sent (sorted keys: the same manifest is the same request, for approvals)


def parse_manifest(manifest) -> Manifest:
    """One object from YAML or JSON text (measured like any request body first) or a mapping."""
    if isinstance(manifest, str):
        raw = manifest.encode("utf-8")
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ToolInputError(f"the manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            bodies.check("application/yaml", raw)
            documents = [d for d in yaml.safe_load_all(raw) if d is not None]
        except (bodies.BodyRefused, yaml.YAMLError) as exc:
            raise ToolInputError(f"the manifest cannot be read: {str(exc)[:200]}") from None
        if len(documents) != 1:
            raise ToolInputError(f"give exactly one object per call (the manifest has {len(documents)})")
        obj = documents[0]
    else:
        obj = manifest
    if not isinstance(obj, dict):
        raise ToolInputError("the manifest must be one Kubernetes object (a mapping)")
    for key in ("apiVersion", "kind"):
        if not isinstance(obj.get(key), str) or not obj[key]:
            raise ToolInputError(f"the manifest has no {key}")
    if not isinstance((obj.get("metadata") or {}).get("name"), str):
        raise ToolInputError("the manifest has no metadata.name (generateName cannot be applied)")
    try:
        body = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ToolInputError(f"the manifest is not plain data: {exc}") from None
    if len(body) > MAX_MANIFEST_BYTES:
        raise ToolInputError(f"the manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    bodies.check("application/json", body)
    return Manifest(obj, body)


def _query(**params) -> str:
    pairs = []
    for name, value in params.items():
        if value is None or value == "" or value is False:
            continue
        if isinstance(value, (list, tuple)):
            pairs.extend((name, str(v)) for v in value)
        else:
            pairs.append((name, "true" if value is True else str(value)))
    return urlencode(pairs, quote_via=quote)


class Tools:
    """The tools for one application: ``client`` sends requests through the gateway."""

    def __init__(self, client, *, discovery_cache=None):
        self.client = client
        self._discovery = {} if discovery_cache is None else discovery_cache

    # -- resolving names -------------------------------------------------------------------

    async def resource(self, call: Call, name: str, api_version: str = "") -> Resource:
        """``pods``, ``deploy``, ``deployments.apps`` or ``Deployment``; ``api_version`` for others."""
        if not isinstance(name, str) or not name.strip():
            raise ToolInputError("name a resource, e.g. pods or deployments")
        found = kubeapi.builtin(name) if not api_version else None
        if found is not None:
            return found
        plural, _, group_hint = name.strip().partition(".")
        groups = await self._group_versions(call, api_version, group_hint)
        for group, version in groups:
            document = await self._resource_list(call, group, version)
            found = kubeapi.from_discovery(document, group, version, name=plural, kind=name.strip())
            if found is not None:
                return found
        raise ToolInputError(f"the cluster serves no resource called {json.dumps(name)}"
                             + (f" in {api_version}" if api_version else ""))

    async def resource_of(self, call: Call, api_version: str, kind: str) -> Resource:
        found = kubeapi.builtin_kind(api_version, kind)
        if found is not None:
            return found
        group, _, version = api_version.rpartition("/")
        document = await self._resource_list(call, group, version)
        found = kubeapi.from_discovery(document, group, version, kind=kind)
        if found is None:
            raise ToolInputError(f"the cluster serves no kind {kind} in {api_version}")
        return found

    async def _group_versions(self, call: Call, api_version: str, group_hint: str) -> list[tuple[str, str]]:
        if api_version:
            group, _, version = api_version.rpartition("/")
            return [(group, version)]
        answer = check(await self.client.request(call, "GET", "/apis"), "discovery")
        groups = []
        for group in (answer.json() or {}).get("groups") or ():
            name = group.get("name", "")
            if group_hint and name != group_hint:
                continue
            preferred = (group.get("preferredVersion") or {}).get("version")
            if preferred:
                groups.append((name, preferred))
        return ([("", "v1")] if not group_hint else []) + groups

    async def _resource_list(self, call: Call, group: str, version: str):
        key = (call.connection, group, version)
        if key not in self._discovery:
            path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            answer = await self.client.request(call, "GET", path)
            if answer.status == 404:
                return None
            self._discovery[key] = check(answer, "discovery").json()
        return self._discovery[key]

    # -- reads ----------------------------------------------------------------------------

    async def list(self, call: Call, resource: str, namespace: str = "", label_selector: str = "",
                   field_selector: str = "", limit: int = 100, continue_token: str = "", api_version: str = "") -> str:
        kind = await self.resource(call, resource, api_version)
        limit = max(1, min(int(limit), MAX_LIST))
        query = _query(labelSelector=label_selector, fieldSelector=field_selector, limit=limit,
                       **{"continue": continue_token})
        answer = check(await self.client.request(call, "GET", kubeapi.collection_path(kind, namespace), query),
                       f"list {kind.label}")
        return kubeapi.trim(kubeapi.list_lines(answer.json(), kind), hint="use a selector or a smaller limit")

    async def get(self, call: Call, resource: str, name: str, namespace: str = "", api_version: str = "") -> str:
        kind = await self.resource(call, resource, api_version)
        answer = check(await self.client.request(call, "GET", kubeapi.object_path(kind, name, namespace)),
                       f"get {kind.label} {name}")
        return kubeapi.trim(kubeapi.to_yaml(kubeapi.clean(answer.json())))

    async def _events_for(self, call: Call, namespace: str, name: str = "", kind: str = "", limit: int = 100):
        selector = ",".join(p for p in (f"involvedObject.name={name}" if name else "",
                                        f"involvedObject.kind={kind}" if kind else "") if p)
        path = kubeapi.collection_path(kubeapi.builtin("events"), namespace)
        answer = check(await self.client.request(call, "GET", path, _query(fieldSelector=selector, limit=limit)),
                       "list events")
        return [e for e in (answer.json() or {}).get("items") or () if isinstance(e, dict)]

    async def describe(self, call: Call, resource: str, name: str, namespace: str = "", api_version: str = "") -> str:
        kind = await self.resource(call, resource, api_version)
        answer = check(await self.client.request(call, "GET", kubeapi.object_path(kind, name, namespace)),
                       f"get {kind.label} {name}")
        obj = answer.json() or {}
        obj.setdefault("kind", kind.kind)
        events = await self._events_for(call, namespace, name, kind.kind) if kind.namespaced else []
        return kubeapi.trim(kubeapi.describe(obj, events))

    async def events(self, call: Call, namespace: str = "", object_name: str = "", limit: int = 50) -> str:
        events = await self._events_for(call, namespace, object_name, limit=max(1, min(int(limit), MAX_LIST)))
        return kubeapi.trim(kubeapi.event_lines(events, limit=max(1, min(int(limit), MAX_LIST))))

    async def logs(self, call: Call, pod: str, namespace: str, container: str = "", tail_lines: int = 200,
                   limit_bytes: int = 64 * 1024, previous: bool = False) -> str:
        path = kubeapi.object_path(kubeapi.builtin("pods"), pod, namespace, "log")
        query = _query(container=container, tailLines=max(1, min(int(tail_lines), 10_000)),
                       limitBytes=max(1, min(int(limit_bytes), MAX_LOG_BYTES)), previous=bool(previous))
        answer = check(await self.client.request(call, "GET", path, query), f"logs of pod {pod}")
        text = answer.body.decode("utf-8", "replace")
        return kubeapi.trim(text or "(no log lines)", hint="ask for fewer tail_lines")

    # -- changes --------------------------------------------------------------------------

    async def apply(self, call: Call, manifest, namespace: str = "", confirm: bool = False) -> str:
        """Server-side apply: always a dry run and its diff first; the change itself only with ``confirm``."""
        parsed = parse_manifest(manifest)
        obj = parsed.obj
        kind = await self.resource_of(call, obj["apiVersion"], obj["kind"])
        namespace = (obj.get("metadata") or {}).get("namespace") or namespace or ""
        if kind.namespaced and not namespace:
            raise ToolInputError(f"{kind.kind} is namespaced: give a namespace (argument or metadata.namespace)")
        path = kubeapi.object_path(kind, obj["metadata"]["name"], namespace if kind.namespaced else None)
        current = await self.client.request(call, "GET", path)
        live = None if current.status == 404 else check(current, f"get {kind.label}").json()
        dry = check(await self.client.request(call, "PATCH", path, _query(fieldManager=FIELD_MANAGER, dryRun="All"),
                                              parsed.body, "application/apply-patch+yaml"),
                    f"dry run of apply {kind.label}")
        diff = "dry-run diff (server-side apply, dryRun=All; nothing changed yet):\n" + kubeapi.dry_run_diff(
            live, dry.json() or {})
        if not confirm:
            return kubeapi.trim(diff + "\n\nTo make this change, call apply_manifest again with the same manifest "
                                       "and confirm=true.")
        try:
            check(await self.client.request(call, "PATCH", path, _query(fieldManager=FIELD_MANAGER), parsed.body,
                                            "application/apply-patch+yaml"), f"apply {kind.label}")
        except Pending as pending:
            pending.done = diff
            raise
        return kubeapi.trim(diff + f"\n\napplied: {kind.kind} {obj['metadata']['name']}"
                            + (f" in namespace {namespace}" if kind.namespaced else ""))

    async def delete(self, call: Call, resource: str, name: str, namespace: str = "", api_version: str = "") -> str:
        kind = await self.resource(call, resource, api_version)
        path = kubeapi.object_path(kind, name, namespace)
        check(await self.client.request(call, "DELETE", path), f"delete {kind.label} {name}")
        return f"deleted {kind.label} {name}" + (f" in namespace {namespace}" if kind.namespaced else "")

    async def scale(self, call: Call, resource: str, name: str, namespace: str, replicas: int) -> str:
        kind = await self.resource(call, resource)
        if int(replicas) < 0:
            raise ToolInputError("replicas must be 0 or more")
        body = json.dumps({"spec": {"replicas": int(replicas)}}, separators=(",", ":")).encode()
        path = kubeapi.object_path(kind, name, namespace, "scale")
        check(await self.client.request(call, "PATCH", path, "", body, "application/merge-patch+json"),
              f"scale {kind.label} {name}")
        return f"scaled {kind.label} {name} in namespace {namespace} to {int(replicas)} replicas"

    async def rollout_restart(self, call: Call, resource: str, name: str, namespace: str,
                              restarted_at: str = "") -> str:
        kind = await self.resource(call, resource)
        if kind.name not in ("deployments", "statefulsets", "daemonsets"):
            raise ToolInputError("rollout restart works on deployments, statefulsets and daemonsets")
        stamp = restarted_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp):
            raise ToolInputError("restarted_at must look like 2026-01-31T12:00:00Z")
        body = json.dumps({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": stamp}}}}}, separators=(",", ":")).encode()
        path = kubeapi.object_path(kind, name, namespace)
        try:
            check(await self.client.request(call, "PATCH", path, _query(fieldManager=FIELD_MANAGER), body,
                                            "application/strategic-merge-patch+json"), f"restart {kind.label} {name}")
        except Pending as pending:
            pending.done = (f"To repeat exactly the request the reviewer approves, call rollout_restart again with "
                            f"restarted_at={json.dumps(stamp)}.")
            raise
        return f"restarted {kind.label} {name} in namespace {namespace} (restartedAt {stamp})"

    async def exec(self, call: Call, pod: str, namespace: str, command: list[str], container: str = "",
                   timeout_seconds: int = 30) -> str:
        if not isinstance(command, list) or not command or not all(isinstance(w, str) and w for w in command):
            raise ToolInputError("command is a list of words, e.g. [\"cat\", \"/etc/hostname\"]")
        path = kubeapi.object_path(kubeapi.builtin("pods"), pod, namespace, "exec")
        query = _query(command=command, container=container, stdout=True, stderr=True)
        result = await self.client.exec(call, path, query, timeout=max(1, min(int(timeout_seconds), MAX_EXEC_SECONDS)),
                                        max_output=MAX_EXEC_OUTPUT)
        if result.refused is not None:
            check(result.refused, f"exec in pod {pod}")
        status = result.status or {}
        exit_code = 0 if status.get("status") == "Success" else None
        for cause in (status.get("details") or {}).get("causes") or ():
            if cause.get("reason") == "ExitCode":
                try:
                    exit_code = int(cause.get("message"))
                except (TypeError, ValueError):
                    pass
        if status and status.get("status") != "Success" and exit_code is None:
            raise ToolFailure(f"exec in pod {pod} failed: {status.get('message', 'no exit status')}",
                              int(status.get("code") or 0))
        out = [f"exit code: {exit_code if exit_code is not None else 'unknown (the session ended early)'}"]
        if result.truncated:
            out.append(f"(output cut at {MAX_EXEC_OUTPUT} bytes or {timeout_seconds} s)")
        out.append("stdout:\n" + result.stdout.decode("utf-8", "replace"))
        if result.stderr:
            out.append("stderr:\n" + result.stderr.decode("utf-8", "replace"))
        return kubeapi.trim("\n".join(out))

    # -- what the agent may do ------------------------------------------------------------

    async def can_i(self, call: Call, verb: str, resource: str, namespace: str = "", name: str = "",
                    subresource: str = "") -> str:
        kind = await self.resource(call, resource)
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {
            "resourceAttributes": {k: v for k, v in {
                "verb": verb, "group": kind.group, "version": kind.version, "resource": kind.name,
                "subresource": subresource, "namespace": namespace, "name": name}.items() if v}}}
        answer = check(await self.client.request(
            call, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "",
            json.dumps(review, separators=(",", ":")).encode(), "application/json"), "can-i")
        status = (answer.json() or {}).get("status") or {}
        words = "yes" if status.get("allowed") else "no"
        reason = status.get("reason") or status.get("evaluationError") or ""
        return f"{words}" + (f": {reason}" if reason else "")
