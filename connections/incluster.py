"""The in-cluster credential: the gateway pod's own service account, read from files the kubelet keeps.

A connection of kind ``in_cluster`` stores no credential.  Its bearer token is the pod's projected
service-account token (settings.AIRLOCK_IN_CLUSTER_TOKEN_FILE), which the kubelet replaces before it
expires; the API server's CA is the pod's ca.crt (AIRLOCK_IN_CLUSTER_CA_FILE); the server, unless
the connection names one, is https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.

:class:`TokenFile` follows the rotation without reading the file per request: at most once per
AIRLOCK_IN_CLUSTER_TOKEN_CHECK_SECONDS it compares the file's identity (device, inode, size,
mtime: the kubelet swaps a symlink, so a new token is a new inode) with the one it read, and reads
it again when that changed or when what it holds is older than :data:`MAX_TOKEN_AGE`.  After a 401
from the cluster the data path asks it to look at once (:meth:`TokenFile.reread`): a new file is
read, an unchanged one is not, so a flood of 401s costs a stat each and no reads.

The token is never logged: messages name the file, not what is in it.
"""

import ipaddress
import logging
import os
import threading
import time

from django.core.exceptions import ValidationError

from connections import validation

log = logging.getLogger(__name__)

DEFAULT_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
DEFAULT_CA_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
# A token held this long is read again even if the file looks unchanged (a rotation the stat missed).
MAX_TOKEN_AGE = 60.0
MAX_TOKEN_BYTES = 64 * 1024


class InClusterUnavailable(Exception):
    """The pod's service-account files or the API server's address cannot be used (the message names
    which, never their content)."""


def server_url_from_environment(environ=None) -> str:
    """https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, as every pod has them."""
    environ = os.environ if environ is None else environ
    host = environ.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = environ.get("KUBERNETES_SERVICE_PORT", "").strip()
    if not host or not port:
        raise InClusterUnavailable(
            "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: the gateway is not running in a "
            "pod; give the in-cluster connection a server URL"
        )
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    url = f"https://{host}:{port}"
    try:
        validation.validate_server_url(url)
    except ValidationError:
        raise InClusterUnavailable("KUBERNETES_SERVICE_HOST/PORT do not make a valid https URL") from None
    return url


def read_ca_file(path: str) -> str:
    """The cluster CA bundle (PEM certificates), checked like a stored CA bundle."""
    try:
        with open(path, encoding="utf-8") as handle:
            pem = validation.normalize_pem(handle.read(1024 * 1024))
    except (OSError, UnicodeError) as exc:
        raise InClusterUnavailable(f"cannot read the cluster CA file {path}: {type(exc).__name__}") from None
    try:
        validation.validate_ca_bundle(pem)
    except ValidationError:
        raise InClusterUnavailable(f"the cluster CA file {path} does not hold PEM certificates") from None
    return pem


def _identity(stat: os.stat_result) -> tuple:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


class TokenFile:
    """The current token in a file that is replaced while it is used (a projected service-account token).

    :meth:`token` is cheap enough for every request: memory, plus a ``stat`` at most once per
    ``check_seconds`` and a read only when the file changed or the token is ``max_age`` old.
    """

    def __init__(self, path: str, *, check_seconds: float = 5.0, max_age: float = MAX_TOKEN_AGE,
                 clock=time.monotonic):
        self.path = path
        self._check_seconds = check_seconds
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._identity: tuple | None = None
        self._read_at = self._checked_at = float("-inf")
        self._load(initial=True)

    def __repr__(self) -> str:
        return f"TokenFile({self.path!r})"  # never the token

    def token(self) -> str:
        now = self._clock()
        if now - self._checked_at >= self._check_seconds:
            with self._lock:
                if now - self._checked_at >= self._check_seconds:
                    self._checked_at = now
                    if now - self._read_at >= self._max_age or self._stat() != self._identity:
                        self._load()
        return self._token

    def reread(self) -> bool:
        """The cluster refused the token: read the file now if it changed.  True when the token did."""
        with self._lock:
            self._checked_at = self._clock()
            if self._stat() == self._identity:
                return False
            before = self._token
            self._load()
            return self._token != before

    def _stat(self) -> tuple | None:
        try:
            return _identity(os.stat(self.path))
        except OSError:
            return None

    def _load(self, initial: bool = False) -> None:
        """Read the file; a missing or malformed token keeps the one held (it may still be valid)."""
        try:
            with open(self.path, "rb") as handle:
                identity = _identity(os.fstat(handle.fileno()))
                raw = handle.read(MAX_TOKEN_BYTES + 1)
            token = raw.decode("ascii").strip()
            if len(raw) > MAX_TOKEN_BYTES:
                raise ValueError("too long")
            validation.validate_token(token)
        except (OSError, UnicodeError, ValueError, ValidationError) as exc:
            problem = f"cannot use the service-account token file {self.path}: {type(exc).__name__}"
            if initial:
                raise InClusterUnavailable(problem) from None
            log.warning("%s; keeping the token read before", problem)
            return
        self._token, self._identity, self._read_at = token, identity, self._clock()
