"""Kubernetes ``Status`` errors with kube-apiserver's reasons and messages.

Messages follow k8s.io/apimachinery/pkg/api/errors so clients (kubectl) print the same text as
against a real cluster, e.g. ``pods "web" not found``.
"""

from __future__ import annotations


class ApiError(Exception):
    """A failure that is answered with a Kubernetes Status object."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict:
        return status_object(self.code, self.reason, self.message, self.details)


def status_object(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body: dict = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _details(group: str, resource: str, name: str | None = None) -> dict:
    d: dict = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    d["kind"] = resource
    return d


def qualified(group: str, resource: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(group: str, resource: str, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{qualified(group, resource)} "{name}" not found', _details(group, resource, name)
    )


def already_exists(group: str, resource: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified(group, resource)} "{name}" already exists',
        _details(group, resource, name),
    )


def conflict(group: str, resource: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(group, resource)} "{name}": {why}',
        _details(group, resource, name),
    )


MODIFIED_CONFLICT = "the object has been modified; please apply your changes to the latest version and try again"


def forbidden(group: str, resource: str, name: str, why: str) -> ApiError:
    if not resource:
        message = f"forbidden: {why}"
    elif name:
        message = f'{qualified(group, resource)} "{name}" is forbidden: {why}'
    else:
        message = f"{qualified(group, resource)} is forbidden: {why}"
    return ApiError(403, "Forbidden", message, _details(group, resource, name) if resource else {})


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(group: str, kind: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid; ``causes`` are (field, reason, message) like field.ErrorList entries."""
    gk = f"{kind}.{group}" if group else kind
    parts = [f"{fld}: {msg}" for fld, _, msg in causes]
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = {"name": name, **({"group": group} if group else {}), "kind": kind,
               "causes": [{"reason": r, "message": m, "field": f} for f, r, m in causes]}
    return ApiError(422, "Invalid", f'{gk} "{name}" is invalid: {summary}', details)


def method_not_allowed() -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {}
    )


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def not_acceptable(accepted: list[str]) -> ApiError:
    return ApiError(
        406, "NotAcceptable", f"only the following media types are accepted: {', '.join(accepted)}"
    )


def unsupported_media_type(accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(accepted)}",
    )


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {limit}")
