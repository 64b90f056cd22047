"""The audit chain's keys (``AIRLOCK_AUDIT_KEYS``) and everything they sign.

The hash chain (audit.document) alone proves nothing to someone who can write the database: they
can edit an event and recompute every later hash.  So each event also carries
``mac = HMAC-SHA256(key, "airlock audit event v1\\n" || hash)`` under a key the database never
holds; checkpoints and anchors are signed the same way.  HMAC rather than signatures: one HMAC
costs about 1.5 us where an Ed25519 signature costs about 30 us (and 85 us to verify), the writer
is on the gateway's hot path, and whoever runs ``verify_audit`` holds the gateway's environment
anyway.

``AIRLOCK_AUDIT_KEYS`` is a comma-separated list of base64 keys of at least 32 bytes; the first
signs, every one verifies.  Each key is known by its id, a hash of the key stored next to what it
signed, so rotating is: put a new key first, keep the old ones as long as anything they signed is
kept.
"""

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

MIN_KEY_BYTES = 32
EVENT_DOMAIN = b"airlock audit event v1\n"
ANCHOR_DOMAIN = b"airlock audit anchor v1\n"
CHECKPOINT_DOMAIN = b"airlock audit checkpoint v1\n"


def key_id_of(secret: bytes) -> str:
    return hashlib.sha256(b"airlock audit key id\n" + secret).hexdigest()[:16]


def generate() -> str:
    """A new key in the form AIRLOCK_AUDIT_KEYS takes."""
    return base64.urlsafe_b64encode(secrets.token_bytes(MIN_KEY_BYTES)).decode("ascii")


def decode(encoded: str, position: int) -> bytes:
    """Standard or URL-safe base64, strictly (a stray character is an error, not ignored)."""
    text = encoded.strip().translate({ord("-"): "+", ord("_"): "/"})
    try:
        secret = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ImproperlyConfigured(f"AIRLOCK_AUDIT_KEYS entry {position} is not base64") from None
    if len(secret) < MIN_KEY_BYTES:
        raise ImproperlyConfigured(
            f"AIRLOCK_AUDIT_KEYS entry {position} has {len(secret)} bytes; at least {MIN_KEY_BYTES} are needed"
        )
    return secret


@dataclass(frozen=True)
class AuditKey:
    key_id: str
    secret: bytes = field(repr=False)

    def mac(self, domain: bytes, message: bytes) -> str:
        return hmac.digest(self.secret, domain + message, "sha256").hex()

    def event_mac(self, digest: str) -> str:
        return self.mac(EVENT_DOMAIN, bytes.fromhex(digest))


class Keyring:
    def __init__(self, encoded: list[str]):
        if not encoded:
            raise ImproperlyConfigured("AIRLOCK_AUDIT_KEYS must hold at least one key")
        keys = [AuditKey(key_id_of(secret), secret) for secret in (decode(e, i + 1) for i, e in enumerate(encoded))]
        self.active = keys[0]
        self.by_id = {key.key_id: key for key in reversed(keys)}

    @property
    def ids(self) -> list[str]:
        return [self.active.key_id] + [k for k in self.by_id if k != self.active.key_id]

    def get(self, key_id: str) -> AuditKey | None:
        return self.by_id.get(key_id)

    def verify(self, key_id: str, domain: bytes, message: bytes, mac: str) -> bool | None:
        """True or False; None when ``key_id`` is not configured."""
        key = self.by_id.get(key_id)
        if key is None:
            return None
        return hmac.compare_digest(key.mac(domain, message).encode(), (mac or "").encode("utf-8", "replace"))

    def verify_event(self, key_id: str, digest: str, mac: str) -> bool | None:
        try:
            message = bytes.fromhex(digest)
        except (TypeError, ValueError):
            message = (digest or "").encode("utf-8", "replace")  # not a hash: cannot match any MAC
        return self.verify(key_id, EVENT_DOMAIN, message, mac)


_rings: dict[tuple, Keyring] = {}


def keyring() -> Keyring:
    """The keyring of the current settings (tests change them, so cached per value)."""
    encoded = tuple(settings.AIRLOCK_AUDIT_KEYS)
    ring = _rings.get(encoded)
    if ring is None:
        ring = _rings[encoded] = Keyring(list(encoded))
    return ring
