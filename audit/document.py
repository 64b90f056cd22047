"""The canonical document of an audit event, and the hash chain over those documents.

The document is what ``export_audit`` writes (plus ``airlock.prevHash`` and ``airlock.hash``):
a Kubernetes ``audit.k8s.io/v1`` Event with the gateway's own fields under ``airlock``.  Each
event's hash is::

    hash = SHA-256(bytes.fromhex(prev_hash) || RFC8785(document)).hexdigest()

with ``prev_hash`` of the first event (or the last pruned one, see Checkpoint) being 64 zeros.
So anyone holding an export can re-check the chain without this code: drop ``airlock.hash``,
``airlock.prevHash``, ``airlock.keyId``, ``airlock.mac``, ``airlock.recordingCast`` and
``airlock.recordingFrames`` from each line, canonicalise with any RFC 8785 implementation, hash.
The MAC (audit.keys) needs the key.  A recording kept as frames (audit/frames.py) is in the
document as ``framesSha256``: check it against the base64 of ``airlock.recordingFrames``.

Changing what goes into the document changes every hash: bump ``FORMAT`` and keep the old
builder if that is ever needed.  Optional keys, so events without them hash as before:
``airlock.clamped`` only when the recorder had to clamp a value (audit.events), ``airlock.dryRun``
(``true``) only for a dry run, ``airlock.parentId`` only on a request an MCP tool call caused, and
``airlock.mcpTool`` only on the tool call's own event.  So is ``impersonatedUser``:
when a trusted proxy asserted the user (identity.proxies) the document says it as kube-apiserver
does, ``user`` the proxy that authenticated and ``impersonatedUser`` the user the rules were
evaluated for (the ``user_*`` columns; the proxy's are ``proxy_*``).
"""

import base64
import hashlib
from datetime import UTC

import rfc8785

FORMAT = 1
GENESIS_HASH = "0" * 64


def timestamp(value) -> str:
    """RFC 3339 in UTC with microseconds, as kube-apiserver writes MicroTime.

    Through isoformat (a third cheaper than strftime, twice per event in the audit writer), but
    strftime's text before the year 1000, which it does not pad to four digits: hashed documents
    keep what they always had.  A UTC value (what the journal and Django give) as it is.
    """
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    if value.year < 1000:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


def body_document(data: bytes, size: int) -> dict | None:
    """A stored (masked, capped) body: text when it is UTF-8, base64 otherwise."""
    data = bytes(data)
    if not data and not size:
        return None
    try:
        encoding, text = "utf-8", data.decode("utf-8")
    except UnicodeDecodeError:
        encoding, text = "base64", base64.b64encode(data).decode("ascii")
    return {"size": size, "truncated": size > len(data), "encoding": encoding, "data": text}


def recording_document(recording) -> dict:
    """A recording in its event's document: the asciicast text, or (recordings kept as frames,
    audit/frames.py) the frames, through their SHA-256 and size; older documents are unchanged."""
    frames = bytes(getattr(recording, "frames", b"") or b"")
    if frames:
        content = {"framesSha256": hashlib.sha256(frames).hexdigest(), "framesBytes": len(frames)}
    else:
        cast = recording.asciicast.encode("utf-8")
        content = {"castSha256": hashlib.sha256(cast).hexdigest(), "castBytes": len(cast)}
    return {
        "kind": recording.kind,
        "namespace": recording.namespace,
        "pod": recording.pod,
        "container": recording.container,
        "command": list(recording.command),
        **content,
        "width": recording.width,
        "height": recording.height,
        "exitCode": recording.exit_code,
        "durationSeconds": recording.duration_s,
        "truncated": recording.truncated,
        "ports": list(recording.ports),
        "bytesToPod": recording.bytes_to_pod,
        "bytesFromPod": recording.bytes_from_pod,
    }


def _level(event) -> str:
    if event.response_body or event.response_body_size:
        return "RequestResponse"
    if event.request_body or event.request_body_size:
        return "Request"
    return "Metadata"


_EMPTY = ("", None, [], {})


def _without_empty(mapping: dict) -> dict:
    """``mapping`` without the values "", None, [] and {}.  A str (most values) is one of them only
    when it is "", so its truth says it without the four comparisons: a third of this function,
    which runs three times per event in the audit writer."""
    return {k: v for k, v in mapping.items() if (v if type(v) is str else v not in _EMPTY)}


def event_document(event, session_id: str | None, recording=None) -> dict:
    """The canonical document of ``event`` (an AuditEvent or anything with its attributes)."""
    user = _without_empty({
        "username": event.user_username,
        "uid": event.user_uid,
        "groups": list(event.user_groups),
        "extra": {"issuer": [event.user_issuer]} if event.user_issuer else None,
    })
    object_ref = _without_empty({
        "resource": event.object_resource,
        "namespace": event.object_namespace,
        "name": event.object_name,
        "apiGroup": event.object_api_group,
        "apiVersion": event.object_api_version,
        "subresource": event.object_subresource,
    })
    status = None
    if event.response_code is not None:
        status = {"metadata": {}, "code": event.response_code, **_without_empty({
            "status": "Failure" if event.response_code >= 400 else "",
            "reason": event.response_reason,
            "message": event.response_message,
        })}
    annotations = {}
    if event.decision_effect:
        annotations["authorization.k8s.io/decision"] = "allow" if event.decision_effect == "allow" else "forbid"
        annotations["authorization.k8s.io/reason"] = event.decision_reason
    document = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": _level(event),
        "auditID": str(event.audit_id),
        "stage": event.stage,
        "requestURI": event.request_uri,
        "verb": event.verb,
        "user": user,
        "sourceIPs": list(event.source_ips),
        "userAgent": event.user_agent,
        "requestReceivedTimestamp": timestamp(event.request_received_timestamp),
        "stageTimestamp": timestamp(event.stage_timestamp),
    }
    if object_ref:
        document["objectRef"] = object_ref
    if status:
        document["responseStatus"] = status
    if annotations:
        document["annotations"] = annotations
    document["airlock"] = {
        "format": FORMAT,
        "seq": event.seq,
        "connection": event.connection,
        "decision": {
            "effect": event.decision_effect,
            "ruleId": event.decision_rule_id,
            "ruleName": event.decision_rule_name,
            "reason": event.decision_reason,
        },
        "reviewId": event.review_id,
        "leaseId": event.lease_id,
        "maskingCounts": dict(event.masking_counts),
        "latencyMs": event.latency_ms,
        "bytesIn": event.bytes_in,
        "bytesOut": event.bytes_out,
        "transport": event.transport,
        "sessionId": session_id,
        "kubectlSession": event.kubectl_session,
        "requestBody": body_document(event.request_body, event.request_body_size),
        "responseBody": body_document(event.response_body, event.response_body_size),
        "recording": recording_document(recording) if recording is not None else None,
    }
    if event.clamped:
        document["airlock"]["clamped"] = list(event.clamped)
    if event.dry_run:
        document["airlock"]["dryRun"] = True
    if event.proxy_username or event.proxy_uid:
        # As kube-apiserver records impersonation: ``user`` authenticated, ``impersonatedUser`` acted.
        document["impersonatedUser"] = user
        document["user"] = _without_empty({
            "username": event.proxy_username,
            "uid": event.proxy_uid,
            "extra": {"issuer": [event.proxy_issuer]} if event.proxy_issuer else None,
        })
    if event.parent_id:
        document["airlock"]["parentId"] = event.parent_id
    if event.mcp_tool:
        document["airlock"]["mcpTool"] = event.mcp_tool
    return document


def chain_hash(prev_hash: str, document: dict) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + rfc8785.dumps(document)).hexdigest()


def strip_export_fields(line: dict) -> tuple[dict, str, str]:
    """Split an exported line into (document, prev_hash, hash), for verifying an export."""
    document = {**line, "airlock": dict(line["airlock"])}
    prev_hash = document["airlock"].pop("prevHash")
    digest = document["airlock"].pop("hash")
    document["airlock"].pop("recordingCast", None)
    document["airlock"].pop("recordingFrames", None)
    document["airlock"].pop("keyId", None)
    document["airlock"].pop("mac", None)
    return document, prev_hash, digest
