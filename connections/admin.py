"""Admin for connections: credentials can be set or replaced, never read back; and the trusted proxies
registered on each (who may send Impersonate-User/-Group there, identity.proxies).

Editors get write-only inputs (nothing is rendered into them); people who may
only view a connection get "set (hidden)" / "not set" instead of the fields.
"""

from django import forms
from django.contrib import admin
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from connections.models import Connection, CredentialKind, TrustedProxy

CREDENTIAL_INPUTS = ("bearer_token", "client_key")


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders a value (a PEM key needs line breaks, which <input> strips)."""

    def format_value(self, value):
        return None


class ConnectionForm(forms.ModelForm):
    """Credentials are write-only: the inputs never show the stored values, and empty keeps them."""

    credential_kind = forms.ChoiceField(
        choices=CredentialKind.choices,
        widget=forms.RadioSelect,
        help_text="Saving with one kind removes any stored credential of the other kinds. In-cluster: the "
        "gateway pod's own service account (its projected token and CA file, read from the pod and never "
        "stored); leave the server URL empty for the cluster the gateway runs in.",
    )
    bearer_token = forms.CharField(
        required=False,
        label="Bearer token",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    client_key = forms.CharField(
        required=False,
        label="Client key",
        widget=WriteOnlyTextarea(attrs={"autocomplete": "off", "spellcheck": "false", "rows": 4}),
    )

    class Meta:
        model = Connection
        fields = [
            "name",
            "description",
            "server_url",
            "verify_tls",
            "ca_bundle",
            "credential_kind",
            "bearer_token",
            "client_certificate",
            "client_key",
            "impersonation_mode",
            "impersonation_user_prefix",
            "connect_timeout",
            "first_byte_timeout",
            "idle_timeout",
            "enabled",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        instance = self.instance
        self.fields["credential_kind"].initial = instance.credential_kind or CredentialKind.TOKEN
        self.fields["bearer_token"].help_text = (
            "A token is stored; leave empty to keep it." if instance.token_ciphertext else "No token is stored."
        )
        self.fields["client_key"].help_text = (
            "PEM, unencrypted (Airlock encrypts it at rest). "
            + ("A key is stored; leave empty to keep it." if instance.client_key_ciphertext else "No key is stored.")
        )

    @sensitive_variables("cleaned")
    def clean(self):
        """Apply the credentials to the instance, so the model's clean() validates the result."""
        cleaned = super().clean()
        kind = cleaned.get("credential_kind")
        self.instance.in_cluster = kind == CredentialKind.IN_CLUSTER
        if kind in (CredentialKind.TOKEN, CredentialKind.IN_CLUSTER) and cleaned.get("client_key"):
            self.add_error("client_key", "Choose the client certificate credential kind to use a client key.")
        elif kind in (CredentialKind.CLIENT_CERTIFICATE, CredentialKind.IN_CLUSTER) and cleaned.get("bearer_token"):
            self.add_error("bearer_token", "Choose the bearer token credential kind to use a token.")
        elif kind == CredentialKind.IN_CLUSTER:
            self.instance.bearer_token = ""
            self.instance.client_key = ""
            cleaned["client_certificate"] = ""
        elif kind == CredentialKind.TOKEN:
            if cleaned.get("bearer_token"):
                self.instance.bearer_token = cleaned["bearer_token"]
            self.instance.client_key = ""
            cleaned["client_certificate"] = ""
        elif kind == CredentialKind.CLIENT_CERTIFICATE:
            if cleaned.get("client_key"):
                self.instance.client_key = cleaned["client_key"]
            self.instance.bearer_token = ""
        return cleaned


@admin.display(description="credential")
def credential(connection: Connection) -> str:
    kind = connection.credential_kind
    return CredentialKind(kind).label if kind else "incomplete"


def stored(ciphertext: str) -> str:
    return "set (hidden)" if ciphertext else "not set"


VIEW_ONLY = {"credential_kind": credential, "bearer_token": "stored_bearer_token", "client_key": "stored_client_key"}


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    form = ConnectionForm
    list_display = ["name", "server_url", credential, "verify_tls", "impersonation_mode", "enabled", "updated_at"]
    list_filter = ["enabled", "verify_tls", "impersonation_mode"]
    search_fields = ["name", "description", "server_url"]
    readonly_fields = ["created_at", "updated_at", credential, "stored_bearer_token", "stored_client_key"]
    fieldsets = [
        (None, {"fields": ["name", "description", "enabled"]}),
        ("API server", {"fields": ["server_url", "verify_tls", "ca_bundle"]}),
        ("Credential", {"fields": ["credential_kind", "bearer_token", "client_certificate", "client_key"]}),
        ("Identity", {"fields": ["impersonation_mode", "impersonation_user_prefix"]}),
        ("Timeouts", {"fields": ["connect_timeout", "first_byte_timeout", "idle_timeout"]}),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]

    def get_fieldsets(self, request, obj=None):
        """Without the change permission every field is rendered read-only from the model:
        the credential inputs become whether a credential is stored."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return fieldsets
        return [(name, {**options, "fields": [VIEW_ONLY.get(field, field) for field in options["fields"]]})
                for name, options in fieldsets]

    @admin.display(description="bearer token")
    def stored_bearer_token(self, connection: Connection) -> str:
        return stored(connection.token_ciphertext)

    @admin.display(description="client key")
    def stored_client_key(self, connection: Connection) -> str:
        return stored(connection.client_key_ciphertext)

    @method_decorator(sensitive_post_parameters(*CREDENTIAL_INPUTS))
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        """Error reports (the DEBUG page, mailed tracebacks) show the credential inputs as stars."""
        return super().changeform_view(request, object_id, form_url, extra_context)


@admin.register(TrustedProxy)
class TrustedProxyAdmin(admin.ModelAdmin):
    """Editors register and change proxies; staff with only the view permission read them (Django's own
    read-only change page).  Every save refreshes the connection in every gateway process."""

    list_display = ["name", "connection", "issuer", "subject", "group", "users", "groups", "enabled", "updated_at"]
    list_filter = ["enabled", "connection"]
    search_fields = ["name", "description", "subject", "group"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["connection", "name", "description", "enabled"]}),
        ("The proxy's own token", {"fields": ["issuer", "subject", "group"]}),
        ("Whom it may assert", {"fields": ["users", "groups"]}),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]
