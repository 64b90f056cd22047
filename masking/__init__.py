"""Secret masking for everything that comes back from the cluster, as sans-IO units.

No sockets and no Django here: the proxy feeds bytes in and sends what comes out.

Interfaces::

    PLACEHOLDER = "**AIRLOCK-MASKED**"
        replaces every masked value.  Secret ``data`` values become PLACEHOLDER_B64, the
        base64 of the placeholder (``KipBSVJMT0NLLU1BU0tFRCoq``), so clients that decode them
        still work and print the placeholder; ``stringData`` values, tokens and free-text hits
        become the plain placeholder.

    class MaskingError(Exception)
        fail closed: the proxy answers a 502 Status and passes none of the body on.
    class WriteRefused(Exception)          (``code`` 422, ``reason`` "Invalid")
        a write that would store the placeholder; the message says where and what to do.

    @dataclass MaskReport: counts: dict[str, int]
        masked values by kind, for the audit record, never values.  Kinds: "secret-data",
        "secret-stringData", "last-applied-configuration" (unparsable annotation of a Secret
        replaced whole), "token-request", and one per detector name ("jwt", "keyword", ...).

    response_masker(info, status, content_type, *, mask_secrets, detectors) -> BodyMasker | None
        decided at response-header time; None when nothing in the response can carry a
        secret value (1xx/204/304, discovery and health paths, or masking turned off and no
        detectors).  Raises MaskingError before anything is sent when a response that may
        carry objects is not ``application/json`` (params allowed).  Every resource request
        is treated as able to carry objects, except ``pods/log`` (text), ``*/proxy`` and
        other non-resource paths (text, detectors only) and exec/attach/portforward error
        bodies that are not JSON (text).

    BodyMasker: feed(chunk: bytes) -> bytes; close() -> bytes; report: MaskReport
        ``feed`` returns what is safe to send now (b"" while a JSON value is incomplete);
        ``close`` returns the rest and raises MaskingError for invalid, truncated or
        non-UTF-8 JSON.  JSON bodies are re-serialised (compact) from what was inspected.

    text_stream_masker(detectors) -> TextMasker
        for pods/log (also ``-f``) and each exec/attach output stream.
    TextMasker: feed(data: bytes) -> bytes; flush() -> bytes; report: MaskReport
        holds back only bytes that may still be the start of a secret; guarantees masking
        of secrets up to MAX_SECRET_BYTES (16 KiB) however the stream is split, and masks
        longer ones from where the hold limit cuts them.

    check_write(info, content_type, body) -> None
        raises WriteRefused for a create/update/patch body holding the placeholder (plain or
        base64) anywhere, e.g. ``kubectl get secret -o yaml | kubectl replace -f -``.
    mask_request_body_for_record(info, content_type, body) -> bytes
        a request body safe for the audit trail (Secret data/stringData, last-applied
        annotation, detector hits); JSON and YAML bodies come back as compact JSON.

    Detectors.default() / Detectors.none() / Detectors.from_config(config)
        which free-text detectors run; config ``{"enabled": "all" | [names], "disabled":
        [names], "extra": [{"name", "pattern", "ignore_case"}]}``.
    Detectors.with_values(values) -> Detectors
        the same detectors plus exact matching of the cluster's Secret values (text streams).

    SecretValues.build(secrets) -> SecretValues        (masking/values.py)
        the values to mask wherever they appear (kind "secret-value"), the exclusion rule for
        values too short or too common to be secrets, and their raw, escaped and base64 forms;
        ``response_masker(..., values=...)`` masks them in every JSON string and text body.
    mask_values_in_record(body, values) -> bytes
        a recorded request body with those values masked.
"""

from masking.base import MaskingError, MaskReport, WriteRefused
from masking.detectors import BUILTIN_NAMES, MAX_SECRET_BYTES, DetectorConfigError, Detectors
from masking.placeholder import PLACEHOLDER, PLACEHOLDER_B64
from masking.responses import BodyMasker, response_masker, text_stream_masker
from masking.text import TextMasker
from masking.values import SecretValues, mask_values_in_record
from masking.writes import check_write, mask_request_body_for_record

__all__ = [
    "BUILTIN_NAMES",
    "MAX_SECRET_BYTES",
    "PLACEHOLDER",
    "PLACEHOLDER_B64",
    "BodyMasker",
    "DetectorConfigError",
    "Detectors",
    "MaskReport",
    "MaskingError",
    "SecretValues",
    "TextMasker",
    "WriteRefused",
    "check_write",
    "mask_request_body_for_record",
    "mask_values_in_record",
    "response_masker",
    "text_stream_masker",
]
