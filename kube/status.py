"""Kubernetes ``Status`` objects for every error the gateway itself returns.

kubectl and client-go decode a ``Status`` body and print its message
("Error from server (Forbidden): ..."), so the gateway never answers with
plain text or an HTML error page.
"""

import json

# The ASGI scope extension in which the HTTP server (airlock.server) tells the application how it
# answered a request whose body it cut off (too slow, not valid HTTP/1.1): (code, reason, message).
SERVER_ANSWER = "airlock.server_answer"

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_object(code: int, message: str, reason: str | None = None, details: dict | None = None) -> dict:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, ""),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def status_bytes(code: int, message: str, reason: str | None = None, details: dict | None = None) -> bytes:
    """Compact JSON ending with a newline, byte for byte as kube-apiserver (Go's json.Encoder) writes it."""
    return json.dumps(status_object(code, message, reason, details), separators=(",", ":")).encode() + b"\n"


def warning_header(text: str) -> tuple[bytes, bytes]:
    """An RFC 9111 ``Warning`` (code 299, as kube-apiserver sends), which client-go prints on stderr
    for any response, an error too."""
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return b"warning", f'299 - "{quoted}"'.encode("utf-8")


class GatewayError(Exception):
    """An error the gateway answers itself, as a Kubernetes Status.

    ``message`` is shown to the client, so it must never carry credentials or
    secret values.
    ``warn`` repeats the message in a ``Warning`` header, for refusals a client may meet first in
    API discovery: client-go reads discovery answers raw and prints a refusal there as
    "Error from server (Forbidden): unknown", but prints every warning.
    """

    def __init__(self, code: int, message: str, *, reason: str | None = None, details=None, warn: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "")
        self.details = details
        self.warn = warn

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The Status answer's headers."""
        headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
        if self.warn:
            headers.append(warning_header(self.message))
        return headers

    def body(self) -> bytes:
        return status_bytes(self.code, self.message, self.reason, self.details)
