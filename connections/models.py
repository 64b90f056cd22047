"""A Connection is a Kubernetes cluster the gateway can reach at /k8s/<name>/."""

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.views.decorators.debug import sensitive_variables

from connections import crypto, validation
from connections.timeouts import DEFAULT_TIMEOUTS
from identity.proxies import ProxyGrant
from masking.config import check_detectors


class ImpersonationMode(models.TextChoices):
    OFF = "off", "Off: requests run as the connection's own credential"
    IMPERSONATE = "impersonate", "Impersonate: forward the agent's identity (Impersonate-User/-Group)"


class CredentialKind(models.TextChoices):
    TOKEN = "token", "Bearer token"
    CLIENT_CERTIFICATE = "client_certificate", "Client certificate"
    IN_CLUSTER = "in_cluster", "In-cluster service account"


class WriteOnlyCredential(AttributeError):
    """A credential attribute was read: they are write-only.  Templates render it as nothing."""

    silent_variable_failure = True


def _write_only(name: str):
    def read(self):
        raise WriteOnlyCredential(f"Connection.{name} is write-only; the data path uses decrypt_{name}()")

    return read


class Connection(models.Model):
    """The bearer token and client key are stored encrypted (connections.crypto) and are write-only.

    Assigning `bearer_token` or `client_key` encrypts into the *_ciphertext
    columns; reading them raises WriteOnlyCredential, so nothing that
    renders model attributes (admin read-only views, templates, serializers)
    can show a credential.  The plaintext is only returned by
    decrypt_bearer_token() and decrypt_client_key(), for the data path
    (connections.registry) and for validation.
    """

    name = models.SlugField(
        max_length=63,
        unique=True,
        validators=[validation.validate_name],
        help_text=f"URL segment: agents use https://<gateway>/k8s/<name>/. {validation.NAME_HELP.capitalize()}.",
    )
    description = models.TextField(blank=True)
    server_url = models.CharField(
        "server URL",
        max_length=2048,
        blank=True,
        validators=[validation.validate_server_url],
        help_text="https://host[:port] of the API server, optionally followed by a path prefix. "
        "An in-cluster connection may leave it empty: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.",
    )
    ca_bundle = models.TextField(
        "CA bundle",
        blank=True,
        validators=[validation.validate_ca_bundle],
        help_text="PEM certificates trusted for the API server; empty uses the system trust store.",
    )
    token_ciphertext = models.TextField(blank=True, default="", editable=False)
    client_certificate = models.TextField(
        blank=True,
        validators=[validation.validate_client_certificate],
        help_text="PEM client certificate (leaf first, then any intermediates).",
    )
    client_key_ciphertext = models.TextField(blank=True, default="", editable=False)
    in_cluster = models.BooleanField(
        "in-cluster credential",
        default=False,
        editable=False,
        help_text="The gateway pod's service account is the credential: its projected token and CA file, "
        "read from the pod (connections.incluster), never stored.",
    )
    verify_tls = models.BooleanField("verify TLS", default=True)
    impersonation_mode = models.CharField(
        max_length=16, choices=ImpersonationMode.choices, default=ImpersonationMode.OFF
    )
    impersonation_user_prefix = models.CharField(
        max_length=64,
        default="airlock:",
        validators=[validation.validate_user_prefix],
        help_text="Prepended to the agent's username in impersonation mode, so it cannot name a cluster user.",
    )
    masking_detectors = models.JSONField(
        default=dict, blank=True,
        help_text='Free-text secret detectors for this cluster\'s responses and streams, e.g. '
        '{"disabled": ["jwt"]} or {"extra": [{"name": "ticket", "pattern": "TCK-[0-9]{8}"}]}; '
        "empty = every built-in detector. A rule can override it.",
    )
    connect_timeout = models.FloatField(
        "connect timeout (s)",
        default=DEFAULT_TIMEOUTS.connect,
        validators=[MinValueValidator(0.1), MaxValueValidator(300)],
        help_text="Seconds to open the TCP and TLS connection to the API server; slower is a 504 for the agent.",
    )
    first_byte_timeout = models.FloatField(
        "first-byte timeout (s)",
        default=DEFAULT_TIMEOUTS.first_byte,
        validators=[MinValueValidator(0.1), MaxValueValidator(3600)],
        help_text="Seconds from sending a request (connecting included) until the API server's answer starts; "
        "slower is a 504. kube-apiserver's long-running requests (watch, logs, exec, attach, port-forward, proxy) are exempt. "
        "kube-apiserver ends other requests itself after its --request-timeout (60 s by default).",
    )
    idle_timeout = models.FloatField(
        "idle timeout (s)",
        default=DEFAULT_TIMEOUTS.idle,
        validators=[MinValueValidator(0.1), MaxValueValidator(3600)],
        help_text="Seconds an answer may stall before it is complete; a stall is a 504 (or a cut connection once "
        "the answer has started). Watches and streams may be silent for longer, but a dead connection to the "
        "API server is found by TCP keepalive probes within about this time (at least 4 s).",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @sensitive_variables("value")
    def _set_bearer_token(self, value: str) -> None:
        self.token_ciphertext = crypto.encrypt(value) if value else ""

    @sensitive_variables("value")
    def _set_client_key(self, value: str) -> None:
        value = validation.normalize_pem(value)
        self.client_key_ciphertext = crypto.encrypt(value) if value else ""

    bearer_token = property(_write_only("bearer_token"), _set_bearer_token, doc="Assigning encrypts the token.")
    client_key = property(_write_only("client_key"), _set_client_key, doc="Assigning encrypts the PEM client key.")

    def decrypt_bearer_token(self) -> str:
        """The plaintext token, or "" when none is stored: for the data path and validation only."""
        if not self.token_ciphertext:
            return ""
        return crypto.decrypt(self.token_ciphertext, label=f"bearer token of connection {self.name!r}")

    def decrypt_client_key(self) -> str:
        """The plaintext PEM client key, or "" when none is stored: for the data path and validation only."""
        if not self.client_key_ciphertext:
            return ""
        return crypto.decrypt(self.client_key_ciphertext, label=f"client key of connection {self.name!r}")

    # Templates render attributes by calling them; these must never be called from one.
    decrypt_bearer_token.alters_data = True
    decrypt_client_key.alters_data = True

    @property
    def credential_kind(self) -> str:
        """CredentialKind value, or "" when the credentials are not exactly one complete kind."""
        has_token = bool(self.token_ciphertext)
        has_cert = bool(self.client_certificate or self.client_key_ciphertext)
        if self.in_cluster:
            return CredentialKind.IN_CLUSTER if not (has_token or has_cert) else ""
        if has_token and not has_cert:
            return CredentialKind.TOKEN
        if has_cert and not has_token and self.client_certificate and self.client_key_ciphertext:
            return CredentialKind.CLIENT_CERTIFICATE
        return ""

    def clean(self):
        detector_error = check_detectors(self.masking_detectors)
        if detector_error:
            raise ValidationError({"masking_detectors": detector_error})
        self.server_url = validation.normalize_server_url(self.server_url)
        self.ca_bundle = validation.normalize_pem(self.ca_bundle)
        self.client_certificate = validation.normalize_pem(self.client_certificate)
        has_token = bool(self.token_ciphertext)
        has_cert = bool(self.client_certificate)
        has_key = bool(self.client_key_ciphertext)
        if self.in_cluster:
            if has_token or has_cert or has_key:
                raise ValidationError(
                    "An in-cluster connection uses the gateway pod's service account: store no token, "
                    "client certificate or key with it."
                )
            if self.ca_bundle:
                raise ValidationError({"ca_bundle": "An in-cluster connection trusts the pod's cluster CA file; "
                                                    "leave the CA bundle empty."})
            return
        if not self.server_url:
            raise ValidationError({"server_url": "A server URL is required (only an in-cluster connection may "
                                                 "leave it empty)."})
        if has_token and (has_cert or has_key):
            raise ValidationError(
                "Configure exactly one credential: a bearer token, or a client certificate and key, not both."
            )
        if not (has_token or has_cert or has_key):
            raise ValidationError(
                "Configure a credential: a bearer token, or a client certificate and its key."
            )
        try:
            if has_token:
                validation.validate_token(self.decrypt_bearer_token())
            elif not has_key:
                raise ValidationError({"client_certificate": "A client certificate needs its client key."})
            elif not has_cert:
                raise ValidationError("A client key needs its client certificate.")
            else:
                key = validation.load_private_key(self.decrypt_client_key())
                try:
                    leaf = validation.load_certificates(self.client_certificate, "client certificate")[0]
                except ValidationError:
                    return  # already reported by the client_certificate field validator
                validation.validate_key_matches_certificate(leaf, key)
        except crypto.CredentialDecryptionError as exc:
            raise ValidationError(f"{exc}; enter the credential again.") from None


class TrustedProxy(models.Model):
    """A proxy (an MCP server acting for its users, for example) that may name the end user it acts for
    on one connection with ``Impersonate-User`` and ``Impersonate-Group`` (identity.proxies).

    The proxy authenticates with its own token like any agent; it is this registration's proxy when the
    token's issuer is ``issuer`` and its subject is ``subject`` and/or it is in ``group`` (both when both
    are set).  It may assert only users and groups matching the patterns; the end user's own rules then
    decide.  Saving or deleting one refreshes the connection in every gateway process (its ``updated_at``).
    """

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="trusted_proxies")
    name = models.SlugField(max_length=63, validators=[validation.validate_name],
                            help_text=f"Names this registration in refusals and the admin: {validation.NAME_HELP}.")
    description = models.TextField(blank=True)
    issuer = models.CharField(
        max_length=2048, validators=[validation.validate_proxy_principal_field],
        help_text="The issuer (iss) of the proxy's own token, exactly as the gateway trusts it.",
    )
    subject = models.CharField(
        max_length=1024, blank=True, validators=[validation.validate_proxy_principal_field],
        help_text="The subject (sub) of the proxy's token, exactly. Empty: any subject in the group below.",
    )
    group = models.CharField(
        max_length=1024, blank=True, validators=[validation.validate_proxy_principal_field],
        help_text="A group the proxy's token must carry, exactly. Empty: the subject alone identifies the proxy.",
    )
    users = models.JSONField(
        default=list, validators=[validation.validate_proxy_patterns],
        help_text='Globs of the users it may assert (Impersonate-User), e.g. ["*@example.com"]. '
        'Names starting with "system:" are never allowed.',
    )
    groups = models.JSONField(
        default=list, blank=True, validators=[validation.validate_proxy_patterns],
        help_text='Globs of the groups it may assert (Impersonate-Group), e.g. ["team-*"]; empty: none. '
        'Names starting with "system:" are never allowed.',
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["connection__name", "name"]
        verbose_name = "trusted proxy"
        verbose_name_plural = "trusted proxies"
        constraints = [models.UniqueConstraint(fields=["connection", "name"], name="connections_trustedproxy_name")]

    def __str__(self):
        return f"{self.name} on {self.connection.name}"

    def clean(self):
        if not (self.subject or self.group):
            raise ValidationError("Identify the proxy by its token's subject, a group, or both.")
        if not self.users:
            raise ValidationError({"users": "A proxy needs at least one pattern of users it may assert."})

    def grant(self):
        """The registration as the gateway's hot path reads it (identity.proxies.ProxyGrant)."""
        return ProxyGrant(name=self.name, issuer=self.issuer, subject=self.subject, group=self.group,
                          users=tuple(self.users), groups=tuple(self.groups))
