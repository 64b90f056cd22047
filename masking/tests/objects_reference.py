"""The ObjectMasker as it was before its per-element fast paths (commit 3517915), kept as the oracle.

masking/tests/test_masking_objects_oracle.py checks that masking/objects.py masks every object, list,
event and request exactly as this does (same result, same counts), so a shortcut taken for speed
cannot change what is masked.  Do not optimise this copy.
"""

from __future__ import annotations

import base64
import binascii
import json

from kube import jsonfast
from kube.bodies import MAX_DEPTH, loads_json
from masking.base import MaskReport
from masking.detectors import Detectors, name_is_secret
from masking.placeholder import PLACEHOLDER, PLACEHOLDER_B64

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

POD_SPEC_PATHS = (
    ("spec",),
    ("spec", "template", "spec"),
    ("spec", "jobTemplate", "spec", "template", "spec"),
    ("template", "spec"),
)
TEMPLATE_METADATA_PATHS = (
    ("spec", "template", "metadata"),
    ("spec", "jobTemplate", "metadata"),
    ("spec", "jobTemplate", "spec", "template", "metadata"),
    ("template", "metadata"),
)
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
CONTAINER_STATUS_LISTS = ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")

# Kind of an object in a response or request body that does not say, by request resource.
_KIND_BY_RESOURCE = {
    ("", "secrets", ""): "Secret",
    ("", "configmaps", ""): "ConfigMap",
    ("", "pods", ""): "Pod",
    ("", "events", ""): "Event",
    ("events.k8s.io", "events", ""): "Event",
    ("", "serviceaccounts", "token"): "TokenRequest",
}


def default_kind(info) -> str:
    """The kind a request's objects have when they do not say (None-safe for non-resource)."""
    if not getattr(info, "is_resource_request", False):
        return ""
    return _KIND_BY_RESOURCE.get((info.api_group, info.resource, info.subresource), "")


def _dig(obj, path):
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


class ObjectMasker:
    """Masks objects of one request/response; counts go to ``report``.

    Detector fields: ConfigMap ``data``/``binaryData`` values, every annotation (the
    last-applied annotation is parsed and masked as the object it describes), container
    ``env[].value``, ``command``, ``args``, probe and lifecycle ``exec.command``, probe HTTP
    header values, termination/waiting messages, ``status.message`` and condition messages,
    Event ``message``/``note``, Status ``message`` and causes, Table cells.
    """

    def __init__(self, *, mask_secrets: bool, detectors: Detectors, kind: str = "", report: MaskReport | None = None):
        self.mask_secrets = mask_secrets
        self.detectors = detectors
        self.detect = detectors.enabled
        self.kind = kind
        self.report = report if report is not None else MaskReport()
        self.counts = self.report.counts

    @classmethod
    def for_request(cls, info, *, mask_secrets: bool, detectors: Detectors, report: MaskReport | None = None):
        return cls(mask_secrets=mask_secrets, detectors=detectors, kind=default_kind(info), report=report)

    # -- entry points ------------------------------------------------------------------------

    def document(self, value) -> None:
        """A whole response body (object, list, Table, Status)."""
        if isinstance(value, dict):
            self.object(value, self.kind)
        elif isinstance(value, list):
            for item in value:
                self.object(item, self.kind)

    def event(self, value) -> None:
        """One value of a watch stream: ``{"type", "object"}``, or a bare Status."""
        if isinstance(value, dict) and isinstance(value.get("type"), str) and "object" in value:
            self.object(value["object"], self.kind)
        else:
            self.document(value)

    def list_item(self, item, list_kind: str) -> None:
        self.object(item, _item_kind(list_kind, ""))

    def table_row(self, row) -> None:
        if not isinstance(row, dict):
            return
        cells = row.get("cells")
        if self.detect and isinstance(cells, list):
            for i, cell in enumerate(cells):
                if isinstance(cell, str):
                    cells[i] = self.detectors.mask_text(cell, self.counts)
        self.object(row.get("object"), self.kind)

    # -- objects -----------------------------------------------------------------------------

    def object(self, obj, hint: str = "", force_secret: bool = False) -> None:
        if not isinstance(obj, dict):
            return
        kind = obj.get("kind")
        if not isinstance(kind, str):
            kind = ""
        items = obj.get("items")
        if isinstance(items, list) and (kind.endswith("List") or not kind):
            item_kind = _item_kind(kind, hint if not kind else "")
            for item in items:
                self.object(item, item_kind)
            if kind:
                return
        rows = obj.get("rows")
        if kind == "Table" and isinstance(rows, list):
            for row in rows:
                self.table_row(row)
            return
        effective = kind or hint
        if effective == "Status":
            self._status_object(obj)
            return
        secret = (
            force_secret
            or effective == "Secret"
            or (self.kind == "Secret" and effective == "PartialObjectMetadata")
            or (not effective and ("data" in obj or "stringData" in obj))
        )
        if secret:
            if self.mask_secrets:
                self._secret(obj)
        elif effective == "ConfigMap" and self.detect:
            self._configmap(obj)
        if effective == "TokenRequest" and self.mask_secrets:
            self._token_request(obj)
        metadata = obj.get("metadata")
        if isinstance(metadata, dict):
            self._metadata(metadata, secret)
        if self.detect:
            self._workload(obj)
            self._status_messages(obj.get("status"))
            if effective == "Event":
                for field in ("message", "note"):
                    if isinstance(obj.get(field), str):
                        obj[field] = self.detectors.mask_text(obj[field], self.counts)

    def _secret(self, obj: dict) -> None:
        for field, placeholder, kind in (
            ("data", PLACEHOLDER_B64, "secret-data"),
            ("stringData", PLACEHOLDER, "secret-stringData"),
        ):
            values = obj.get(field)
            if isinstance(values, dict):
                masked = 0
                for key, value in values.items():
                    if value is not None:
                        values[key] = placeholder
                        masked += 1
                if masked:
                    self.report.add(kind, masked)
            elif values is not None:
                obj[field] = placeholder
                self.report.add(kind)

    def _token_request(self, obj: dict) -> None:
        status = obj.get("status")
        if isinstance(status, dict) and status.get("token"):
            status["token"] = PLACEHOLDER
            self.report.add("token-request")

    def _configmap(self, obj: dict) -> None:
        data = obj.get("data")
        if isinstance(data, dict):
            for key, value in data.items():
                if isinstance(value, str):
                    data[key] = self.detectors.mask_pair(str(key), value, self.counts)
        binary = obj.get("binaryData")
        if isinstance(binary, dict):
            for key, value in binary.items():
                if isinstance(value, str):
                    binary[key] = self._binary_value(str(key), value)

    def _binary_value(self, key: str, value: str) -> str:
        if "keyword" in self.detectors.names and name_is_secret(key):
            self.report.add("keyword")
            return PLACEHOLDER_B64
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return self.detectors.mask_text(value, self.counts)
        masked = self.detectors.mask_bytes(raw, self.counts)
        return value if masked is raw else base64.b64encode(masked).decode()

    def _metadata(self, metadata: dict, secret: bool) -> None:
        annotations = metadata.get("annotations")
        if not isinstance(annotations, dict):
            return
        for key, value in annotations.items():
            if not isinstance(value, str):
                continue
            if key == LAST_APPLIED:
                annotations[key] = self._last_applied(value, secret)
            elif self.detect:
                annotations[key] = self.detectors.mask_pair(str(key), value, self.counts)

    def _last_applied(self, value: str, secret: bool) -> str:
        """The manifest kubectl applied, masked as the object it is (a Secret's always as Secret)."""
        if not self.mask_secrets and not self.detect:
            return value
        structural = secret and self.mask_secrets
        manifest, fast = _load_manifest(value)
        if not isinstance(manifest, dict):
            if structural:
                self.report.add("last-applied-configuration")
                return PLACEHOLDER
            return self.detectors.mask_text(value, self.counts)
        before = self.report.total
        self.object(manifest, "", force_secret=secret)
        if self.report.total == before:
            return value
        if fast:
            text = jsonfast.dumps(manifest).decode("ascii")  # the bytes json.dumps writes (FiniteFloat)
        else:
            text = json.dumps(manifest, separators=(",", ":"))
        return text + ("\n" if value.endswith("\n") else "")

    def _workload(self, obj: dict) -> None:
        if "spec" not in obj and "template" not in obj:
            return
        for path in POD_SPEC_PATHS:
            spec = _dig(obj, path)
            if isinstance(spec, dict):
                for field in CONTAINER_LISTS:
                    containers = spec.get(field)
                    if isinstance(containers, list):
                        for container in containers:
                            if isinstance(container, dict):
                                self._container(container)
        for path in TEMPLATE_METADATA_PATHS:
            metadata = _dig(obj, path)
            if isinstance(metadata, dict):
                self._metadata(metadata, False)

    def _container(self, container: dict) -> None:
        d, counts = self.detectors, self.counts
        env = container.get("env")
        if isinstance(env, list):
            for var in env:
                if isinstance(var, dict) and isinstance(var.get("value"), str):
                    name = var.get("name")
                    var["value"] = d.mask_pair(name if isinstance(name, str) else "", var["value"], counts)
        for field in ("command", "args"):
            argv = container.get(field)
            if isinstance(argv, list):
                d.mask_argv(argv, counts)
        handlers = [container.get(p) for p in PROBES]
        lifecycle = container.get("lifecycle")
        if isinstance(lifecycle, dict):
            handlers += [lifecycle.get("postStart"), lifecycle.get("preStop")]
        for handler in handlers:
            command = _dig(handler, ("exec", "command"))
            if isinstance(command, list):
                d.mask_argv(command, counts)
            headers = _dig(handler, ("httpGet", "httpHeaders"))
            if isinstance(headers, list):
                for header in headers:
                    if isinstance(header, dict) and isinstance(header.get("value"), str):
                        name = header.get("name")
                        header["value"] = d.mask_pair(name if isinstance(name, str) else "", header["value"], counts)
                        if isinstance(name, str) and name.lower() in ("authorization", "proxy-authorization"):
                            if header["value"] != PLACEHOLDER:
                                header["value"] = PLACEHOLDER
                                self.report.add("authorization-header")

    def _status_messages(self, status) -> None:
        if not isinstance(status, dict):
            return
        d, counts = self.detectors, self.counts
        if isinstance(status.get("message"), str):
            status["message"] = d.mask_text(status["message"], counts)
        conditions = status.get("conditions")
        if isinstance(conditions, list):
            for condition in conditions:
                if isinstance(condition, dict) and isinstance(condition.get("message"), str):
                    condition["message"] = d.mask_text(condition["message"], counts)
        for field in CONTAINER_STATUS_LISTS:
            statuses = status.get(field)
            if not isinstance(statuses, list):
                continue
            for cs in statuses:
                for state in ("state", "lastState"):
                    for phase in ("terminated", "waiting"):
                        detail = _dig(cs, (state, phase))
                        if isinstance(detail, dict) and isinstance(detail.get("message"), str):
                            detail["message"] = d.mask_text(detail["message"], counts)

    def _status_object(self, obj: dict) -> None:
        if not self.detect:
            return
        d, counts = self.detectors, self.counts
        if isinstance(obj.get("message"), str):
            obj["message"] = d.mask_text(obj["message"], counts)
        causes = _dig(obj, ("details", "causes"))
        if isinstance(causes, list):
            for cause in causes:
                if isinstance(cause, dict) and isinstance(cause.get("message"), str):
                    cause["message"] = d.mask_text(cause["message"], counts)


def _load_manifest(value: str) -> tuple[object, bool]:
    """The last-applied manifest as ``loads_json`` reads it (no deeper than MAX_DEPTH; None if
    it cannot be read), and whether msgspec decoded it (its floats are jsonfast.FiniteFloat).
    msgspec when the text has too few brackets to be too deep; the stdlib for the rest and for
    what msgspec refuses (NaN, lone surrogates, ...), so both read the same."""
    if value.count("{") + value.count("[") <= MAX_DEPTH:
        try:
            return jsonfast.loads(value), True
        except (ValueError, RecursionError):
            pass
    try:
        return loads_json(value), False  # depth-checked: the annotation is attacker-supplied text
    except ValueError:
        return None, False


def _item_kind(list_kind: str, fallback: str) -> str:
    """``SecretList`` -> ``Secret``; a plain ``List`` (mixed kinds) tells nothing."""
    if list_kind.endswith("List") and len(list_kind) > 4:
        return list_kind[:-4]
    return fallback
