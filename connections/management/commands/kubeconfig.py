"""Write an agent's kubeconfig: the gateway as the cluster, an OIDC exec plugin as the user.

The kubeconfig holds no credential at all: the cluster entry is the gateway
(``<gateway-url>/k8s/<connection>``) and its CA, and the user entry runs
identity/credential_plugin.py, which gets a short-lived token from the identity
provider on the agent's machine.  The client secret stays in a file or an
environment variable there; this command never reads it.
"""

import base64
import ipaddress
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from connections.models import Connection
from connections.validation import NAME_HELP, NAME_RE

PLUGIN = Path(__file__).resolve().parents[3] / "identity" / "credential_plugin.py"
EXEC_API_GROUP = "client.authentication.k8s.io/"
# v1 for kubectl and client-go (>= 1.22); v1beta1 for clients that know no other, such as lightkube.
EXEC_API_VERSIONS = ("v1", "v1beta1")


def _loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def check_url(url, what, allow_path=True):
    """https, or http on loopback; no credentials, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise CommandError(f"{what} is not a valid URL") from None
    if not host or parts.username or parts.password or parts.query or parts.fragment:
        raise CommandError(f"{what} must be a plain URL (no credentials, query or fragment)")
    if not (parts.scheme == "https" or (parts.scheme == "http" and _loopback(host))):
        raise CommandError(f"{what} must use https (plain http only on loopback)")
    if not allow_path and parts.path not in ("", "/"):
        raise CommandError(f"{what} must not have a path")
    return url.rstrip("/")


def ca_data(path):
    """The PEM certificates of a CA file, re-encoded so nothing else (such as a key) can slip in."""
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read the gateway CA file: {exc.strerror}") from None
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CommandError("the gateway CA file holds no PEM certificate") from None
    bundle = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
    return base64.b64encode(bundle).decode()


def build_kubeconfig(*, connection, gateway_url, ca, plugin_command, plugin_args, interactive_mode,
                     exec_api_version="v1"):
    name = f"airlock-{connection}"
    prefix = getattr(settings, "AIRLOCK_GATEWAY_PREFIX", "/k8s/")
    cluster = {"server": f"{gateway_url}{prefix}{connection}"}
    if ca is not None:
        cluster["certificate-authority-data"] = ca
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{
            "name": name,
            "user": {
                "exec": {
                    "apiVersion": EXEC_API_GROUP + exec_api_version,
                    "command": plugin_command,
                    "args": plugin_args,
                    "interactiveMode": interactive_mode,
                    "provideClusterInfo": False,
                    "installHint": "Airlock's credential plugin needs python3 and a copy of "
                                   "identity/credential_plugin.py from the Airlock server.",
                },
            },
        }],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "preferences": {},
    }


def write_private(path, text, force):
    """Write atomically with mode 0600; refuse to replace a file unless forced."""
    path = Path(path)
    if path.exists() and not force:
        raise CommandError(f"{path} exists; pass --force to replace it")
    fd, tmp = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class Command(BaseCommand):
    help = (
        "Write a kubeconfig for an agent: the cluster is the gateway's endpoint for CONNECTION, the user "
        "is Airlock's OIDC credential plugin. It contains no credential; the client secret stays on the "
        "agent's machine in a file or an environment variable."
    )

    def add_arguments(self, parser):
        parser.add_argument("--connection", required=True, metavar="NAME")
        parser.add_argument("--client-id", required=True, metavar="ID")
        secret = parser.add_mutually_exclusive_group()
        secret.add_argument("--client-secret-file", metavar="FILE",
                            help="absolute path of the client secret on the agent's machine")
        secret.add_argument("--client-secret-env", metavar="VAR",
                            help="environment variable holding the client secret on the agent's machine")
        parser.add_argument("--device", action="store_true",
                            help="a person signs in with the device flow (public client)")
        parser.add_argument("--issuer", required=True, metavar="URL")
        parser.add_argument("--audience", metavar="AUD", help="the gateway's audience at the identity provider")
        parser.add_argument("--scope", help="scopes to request, space-separated")
        parser.add_argument("--gateway-url", required=True, metavar="URL")
        parser.add_argument("--gateway-ca", metavar="FILE", help="PEM CA of the gateway (default: system trust)")
        parser.add_argument("--idp-ca", metavar="FILE",
                            help="CA bundle for the identity provider, as a path on the agent's machine")
        parser.add_argument("--plugin", default=str(PLUGIN), metavar="PATH",
                            help="path of credential_plugin.py on the agent's machine (default: this server's)")
        parser.add_argument("--python", default="python3", help="interpreter that runs the plugin")
        parser.add_argument("--exec-api-version", choices=EXEC_API_VERSIONS, default="v1",
                            help="client.authentication.k8s.io version of the exec entry (default v1; "
                                 "v1beta1 for lightkube)")
        parser.add_argument("-o", "--output", required=True, metavar="FILE")
        parser.add_argument("--force", action="store_true", help="replace an existing output file")

    def handle(self, *args, **options):
        connection = options["connection"]
        if not NAME_RE.match(connection):
            raise CommandError(f"connection names use {NAME_HELP}")
        if not Connection.objects.filter(name=connection).exists():
            raise CommandError(f"no connection named {connection!r}")
        gateway_url = check_url(options["gateway_url"], "--gateway-url")
        check_url(options["issuer"], "--issuer")
        ca = ca_data(options["gateway_ca"]) if options["gateway_ca"] else None

        plugin_args = [options["plugin"], "--issuer", options["issuer"], "--client-id", options["client_id"]]
        if options["client_secret_file"]:
            if not os.path.isabs(options["client_secret_file"]):
                raise CommandError("--client-secret-file must be an absolute path (kubectl does not resolve it)")
            plugin_args += ["--client-secret-file", options["client_secret_file"]]
        elif options["client_secret_env"]:
            plugin_args += ["--client-secret-env", options["client_secret_env"]]
        elif not options["device"]:
            raise CommandError("give --client-secret-file or --client-secret-env, or --device")
        if options["device"]:
            plugin_args.append("--device")
        for option, flag in (("audience", "--audience"), ("scope", "--scope"), ("idp_ca", "--ca-file")):
            if options[option]:
                plugin_args += [flag, options[option]]
        if options["exec_api_version"] != "v1":
            # For clients that run the plugin without KUBERNETES_EXEC_INFO (lightkube, kr8s).
            plugin_args += ["--api-version", EXEC_API_GROUP + options["exec_api_version"]]

        config = build_kubeconfig(
            connection=connection,
            gateway_url=gateway_url,
            ca=ca,
            plugin_command=options["python"],
            plugin_args=plugin_args,
            interactive_mode="IfAvailable" if options["device"] else "Never",
            exec_api_version=options["exec_api_version"],
        )
        write_private(options["output"], yaml.safe_dump(config, sort_keys=False), options["force"])
        self.stdout.write(f"wrote {options['output']} for connection {connection!r}")
