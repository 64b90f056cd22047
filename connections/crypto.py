"""Encryption of connection credentials at rest.

Explicit helpers on `cryptography`'s MultiFernet instead of a third-party
encrypted model field: the django-fernet-fields family is unmaintained (see
/work/shared/notes/python-stack.md section 6), and explicit calls keep
decryption lazy (listing or rotating connections never materialises a
plaintext) and let the caller name the connection when decryption fails.

Keys come from settings.FIELD_ENCRYPTION_KEYS (env
AIRLOCK_FIELD_ENCRYPTION_KEYS, comma-separated): the first key encrypts, every
key decrypts, so a new key is prepended, `manage.py rotate_credential_keys`
re-encrypts, and the old key is then removed.
"""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

KEYS_SETTING = "AIRLOCK_FIELD_ENCRYPTION_KEYS"


class CredentialDecryptionError(Exception):
    """A stored credential cannot be decrypted with any configured key.

    The message names what failed (e.g. which connection) but never contains
    the ciphertext or a key.
    """


@lru_cache(maxsize=8)
def _multifernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured(f"{KEYS_SETTING} is empty: no key to encrypt credentials with")
    fernets = []
    for index, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"{KEYS_SETTING} entry #{index} is not a Fernet key (32 url-safe base64-encoded bytes); "
                "generate one with `manage.py rotate_credential_keys --generate`"
            ) from None
    return MultiFernet(fernets)


def _current() -> MultiFernet:
    return _multifernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    """Encrypt under the first configured key."""
    return _current().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(ciphertext: str, *, label: str) -> str:
    """Decrypt with any configured key; `label` says what is being decrypted."""
    try:
        return _current().decrypt(ciphertext.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError):
        raise CredentialDecryptionError(
            f"cannot decrypt the {label}: no key in {KEYS_SETTING} matches it "
            "(was its key removed before `manage.py rotate_credential_keys` ran?)"
        ) from None


def rotate(ciphertext: str, *, label: str) -> str:
    """Re-encrypt under the first configured key, keeping the plaintext out of the caller's hands."""
    try:
        return _current().rotate(ciphertext.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError):
        raise CredentialDecryptionError(
            f"cannot re-encrypt the {label}: no key in {KEYS_SETTING} decrypts it"
        ) from None


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")
