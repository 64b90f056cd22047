"""Which masker a response gets, decided from the request and the response headers only."""

from __future__ import annotations

from typing import Protocol

from kube.media import media_type
from kube.vocabulary import STREAM_SUBRESOURCES
from masking.base import MaskingError, MaskReport
from masking.detectors import Detectors
from masking.jsonstream import JsonMasker
from masking.objects import ObjectMasker
from masking.text import TextMasker

JSON = "application/json"
# Non-resource paths that only describe the API (no object, no free text from workloads).
DISCOVERY_PATHS = frozenset({"/api", "/apis", "/version", "/openapi/v2", "/healthz", "/livez", "/readyz"})
DISCOVERY_PREFIXES = ("/api/", "/apis/", "/openapi/", "/healthz/", "/livez/", "/readyz/")


class BodyMasker(Protocol):
    """What the proxy drives: ``feed`` per chunk, ``close`` at the end (both may raise MaskingError)."""

    report: MaskReport

    def feed(self, chunk: bytes) -> bytes: ...

    def close(self) -> bytes: ...


class TextBodyMasker:
    """A :class:`TextMasker` behind the BodyMasker interface (logs, proxied workload HTTP).

    ``flush`` releases held bytes mid-stream (for ``logs -f`` after an idle pause).
    """

    def __init__(self, detectors: Detectors):
        self._text = TextMasker(detectors)
        self.report = self._text.report

    def feed(self, chunk: bytes) -> bytes:
        return self._text.feed(chunk)

    def flush(self) -> bytes:
        return self._text.flush()

    def close(self) -> bytes:
        return self._text.flush()


def is_discovery(path: str) -> bool:
    return path in DISCOVERY_PATHS or path.startswith(DISCOVERY_PREFIXES)


def response_masker(info, status: int, content_type: str | None, *, mask_secrets: bool, detectors: Detectors,
                    values=None) -> BodyMasker | None:
    """The masker for this response, None when nothing in it can carry a secret value.

    ``values`` (:class:`masking.values.SecretValues`) are masked in every string of a
    JSON body and anywhere in a text body.  Raises MaskingError (before anything is sent) when
    the response should carry Kubernetes objects but is not JSON: protobuf, CBOR, YAML or a
    missing Content-Type are refused.
    """
    if status < 200 or status in (204, 304):
        return None
    media = media_type(content_type)
    text = detectors.with_values(values)
    if not info.is_resource_request:
        if is_discovery(info.path):
            return None
        return TextBodyMasker(text) if text.enabled else None
    if info.verb == "proxy" or info.subresource == "proxy":
        return TextBodyMasker(text) if text.enabled else None
    log = info.resource == "pods" and info.subresource == "log"
    if (log and status < 400) or (media != JSON and (log or info.subresource in STREAM_SUBRESOURCES)):
        return TextBodyMasker(text) if text.enabled else None
    if media != JSON:
        shown = media or "none"
        raise MaskingError(
            f"airlock: the cluster answered with Content-Type {shown[:60]}, which the gateway cannot "
            "inspect for secrets; refused"
        )
    if not mask_secrets and not detectors.enabled and not values:
        return None
    masker = ObjectMasker.for_request(info, mask_secrets=mask_secrets, detectors=detectors)
    return JsonMasker(masker, watch=info.verb == "watch", values=values)


def text_stream_masker(detectors: Detectors) -> TextMasker:
    """For pods/log (also ``-f``) and one exec/attach output stream (stdout, stderr separately)."""
    return TextMasker(detectors)
