"""A Connection is a Kubernetes cluster the gateway can reach at /k8s/<name>/."""

from django.core.exceptions import ValidationError
from django.db import models

from connections import crypto, validation
from gateway.policy import check_detectors


class ImpersonationMode(models.TextChoices):
    OFF = "off", "Off: requests run as the connection's own credential"
    IMPERSONATE = "impersonate", "Impersonate: forward the agent's identity (Impersonate-User/-Group)"


class CredentialKind(models.TextChoices):
    TOKEN = "token", "Bearer token"
    CLIENT_CERTIFICATE = "client_certificate", "Client certificate"


class Connection(models.Model):
    """The bearer token and client key are stored encrypted (connections.crypto).

    Read and write them through the `bearer_token` and `client_key` properties;
    the *_ciphertext columns are never shown or returned.
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
        validators=[validation.validate_server_url],
        help_text="https://host[:port] of the API server, optionally followed by a path prefix.",
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
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def bearer_token(self) -> str:
        """The decrypted token, or "" when none is stored."""
        if not self.token_ciphertext:
            return ""
        return crypto.decrypt(self.token_ciphertext, label=f"bearer token of connection {self.name!r}")

    @bearer_token.setter
    def bearer_token(self, value: str) -> None:
        self.token_ciphertext = crypto.encrypt(value) if value else ""

    @property
    def client_key(self) -> str:
        """The decrypted PEM client key, or "" when none is stored."""
        if not self.client_key_ciphertext:
            return ""
        return crypto.decrypt(self.client_key_ciphertext, label=f"client key of connection {self.name!r}")

    @client_key.setter
    def client_key(self, value: str) -> None:
        value = validation.normalize_pem(value)
        self.client_key_ciphertext = crypto.encrypt(value) if value else ""

    @property
    def credential_kind(self) -> str:
        """CredentialKind value, or "" when the credentials are not exactly one complete kind."""
        has_token = bool(self.token_ciphertext)
        has_cert = bool(self.client_certificate or self.client_key_ciphertext)
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
                validation.validate_token(self.bearer_token)
            elif not has_key:
                raise ValidationError({"client_certificate": "A client certificate needs its client key."})
            elif not has_cert:
                raise ValidationError("A client key needs its client certificate.")
            else:
                key = validation.load_private_key(self.client_key)
                try:
                    leaf = validation.load_certificates(self.client_certificate, "client certificate")[0]
                except ValidationError:
                    return  # already reported by the client_certificate field validator
                validation.validate_key_matches_certificate(leaf, key)
        except crypto.CredentialDecryptionError as exc:
            raise ValidationError(f"{exc}; enter the credential again.") from None
