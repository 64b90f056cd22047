"""What counts as a leak: a secret value in any form an attacker could read back.

A value the gateway should hide may come back raw, base64 (standard or URL-safe, at any of
the three byte alignments inside a longer blob), JSON-escaped (Python's form and Go's
HTML-safe ``\\u0026`` form), percent-encoded (upper- or lower-case hex) or as hex.
"""

import base64
import json
from urllib.parse import quote

# kubesim's seeded Secret values (kubesim/seed.yaml) and the gateway's own cluster credential's
# stand-ins are added per test (see conftest.secrets).
SEEDED = (
    "s3cr3t-db-password-4f9a", "sk_live_kubesim_51f0c2e9", "jwt-signing-key-b7d1", "m4il-p4ss-7c1e",
    "sa-token-deployer-8b2c", "kubesim-aws-secret-2d7f", "pay-db-pass-61c3",
)
PLACEHOLDER = "**AIRLOCK-MASKED**"


def _b64_inner(raw: bytes) -> set[str]:
    """The part of base64(raw) that is the same wherever ``raw`` starts inside a longer blob."""
    out = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        start = 4 if shift else 0
        usable = (len(raw) - (3 - shift) % 3) // 3 * 4
        inner = encoded[start:start + usable]
        if len(inner) >= 8:
            out |= {inner, inner.replace("+", "-").replace("/", "_")}
    return out


def go_json_escaped(value: str) -> str:
    """How Go's encoding/json writes a string (HTML-safe: <, > and & as \\u003c, \\u003e, \\u0026)."""
    text = json.dumps(value)[1:-1]
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def forms(value: str) -> set[str]:
    raw = value.encode()
    quoted = quote(value, safe="")
    return {
        value, json.dumps(value)[1:-1], go_json_escaped(value), value.replace("/", "\\/"),
        quoted, quoted.lower() if "%" in quoted else quoted, raw.hex(),
        base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("="),
        *_b64_inner(raw),
    }


def text_of(data) -> str:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data).decode("utf-8", "replace")
    if isinstance(data, (list, tuple)):
        return "\n".join(text_of(item) for item in data)
    return str(data)


def found(data, values) -> list[str]:
    """The values (shortened) whose forms occur in ``data``."""
    text = text_of(data)
    return [value[:6] + "..." for value in values if any(form in text for form in forms(value))]


def assert_clean(data, values=SEEDED, where="what the attacker received"):
    leaked = found(data, values)
    assert not leaked, f"secret values in {where}: {leaked}"
