"""Create (or with --update, refresh) a Connection from a kubeconfig context, or an in-cluster one."""

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from connections import kubeconfig
from connections.models import Connection, CredentialKind


TIMEOUT_FLAGS = {"--connect-timeout": "connect_timeout", "--first-byte-timeout": "first_byte_timeout",
                 "--idle-timeout": "idle_timeout"}


class Command(BaseCommand):
    help = (
        "Add a connection from a kubeconfig context (default: current-context). The context's user must "
        "have a static credential: a token, tokenFile, or a client certificate and key. Or, with "
        "--in-cluster NAME, a connection to the cluster the gateway runs in, as the gateway pod's own "
        "service account (its projected token and CA file, read from the pod; nothing is stored)."
    )

    def add_arguments(self, parser):
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--kubeconfig", type=Path, metavar="FILE")
        source.add_argument("--in-cluster", metavar="NAME", dest="in_cluster",
                            help="add connection NAME using the pod's service account "
                                 "(AIRLOCK_IN_CLUSTER_TOKEN_FILE, AIRLOCK_IN_CLUSTER_CA_FILE)")
        parser.add_argument("--server", metavar="URL",
                            help="with --in-cluster: the API server's URL (default: none stored; the gateway uses "
                                 "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT of its pod)")
        parser.add_argument("--context", help="kubeconfig context to import (default: current-context)")
        parser.add_argument("--name", help="connection name (default: derived from the context name)")
        parser.add_argument(
            "--insecure-skip-tls-verify",
            action="store_true",
            help="do not verify the API server's certificate (required if the kubeconfig cluster sets it)",
        )
        parser.add_argument("--update", action="store_true", help="replace the settings of an existing connection")
        for flag, field in TIMEOUT_FLAGS.items():
            parser.add_argument(flag, type=float, metavar="SECONDS", dest=field,
                                help=f"{Connection._meta.get_field(field).help_text} (default: "
                                     f"{Connection._meta.get_field(field).default:g}; --update keeps the current value)")

    def handle(self, *args, **options):
        if options["in_cluster"]:
            return self.add_in_cluster(options)
        if options["server"]:
            raise CommandError("--server is for --in-cluster; a kubeconfig names its server")
        path = options["kubeconfig"]
        try:
            config = kubeconfig.load(path)
            imported = kubeconfig.resolve(config, path.resolve().parent, options["context"])
            name = options["name"] or kubeconfig.default_name(imported.context)
        except kubeconfig.KubeconfigError as exc:
            raise CommandError(str(exc)) from None
        insecure = options["insecure_skip_tls_verify"]
        if imported.insecure_skip_tls_verify and not insecure:
            raise CommandError(
                f"the cluster of context {imported.context!r} sets insecure-skip-tls-verify; pass "
                "--insecure-skip-tls-verify to import it without TLS verification (not recommended), "
                "or give the cluster a certificate-authority"
            )

        with transaction.atomic():
            connection = Connection.objects.select_for_update().filter(name=name).first()
            created = connection is None
            if created:
                description = f"Imported from kubeconfig context {imported.context!r}."
                connection = Connection(name=name, description=description)
            elif not options["update"]:
                raise CommandError(f"connection {name!r} already exists; pass --update to replace its settings")
            connection.server_url = imported.server_url
            connection.ca_bundle = imported.ca_bundle
            connection.verify_tls = not insecure
            connection.in_cluster = False
            connection.bearer_token = imported.bearer_token
            connection.client_certificate = imported.client_certificate
            connection.client_key = imported.client_key
            for field in TIMEOUT_FLAGS.values():
                if options[field] is not None:
                    setattr(connection, field, options[field])
            try:
                connection.full_clean()
            except ValidationError as exc:
                raise CommandError(f"connection {name!r} is invalid: {_messages(exc)}") from None
            connection.save()

        self.stdout.write(
            f"{'Created' if created else 'Updated'} connection {name!r}: {connection.server_url}, "
            f"credential: {CredentialKind(connection.credential_kind).label.lower()}, "
            f"TLS verification: {'on' if connection.verify_tls else 'OFF'}"
            + (", CA bundle from the kubeconfig" if connection.ca_bundle else ", system trust store")
        )


    def add_in_cluster(self, options):
        name = options["in_cluster"]
        if options["context"] or options["insecure_skip_tls_verify"]:
            raise CommandError("--context and --insecure-skip-tls-verify are for --kubeconfig")
        with transaction.atomic():
            connection = Connection.objects.select_for_update().filter(name=name).first()
            created = connection is None
            if created:
                connection = Connection(name=name, description="The cluster the gateway runs in, as its service account.")
            elif not options["update"]:
                raise CommandError(f"connection {name!r} already exists; pass --update to replace its settings")
            connection.server_url = options["server"] or ""
            connection.ca_bundle = ""
            connection.verify_tls = True
            connection.in_cluster = True
            connection.bearer_token = ""
            connection.client_certificate = ""
            connection.client_key = ""
            for field in TIMEOUT_FLAGS.values():
                if options[field] is not None:
                    setattr(connection, field, options[field])
            try:
                connection.full_clean()
            except ValidationError as exc:
                raise CommandError(f"connection {name!r} is invalid: {_messages(exc)}") from None
            connection.save()
        self.stdout.write(
            f"{'Created' if created else 'Updated'} connection {name!r}: "
            f"{connection.server_url or 'https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT'}, "
            "credential: the gateway pod's service account (token and CA read from "
            f"{settings.AIRLOCK_IN_CLUSTER_TOKEN_FILE} and {settings.AIRLOCK_IN_CLUSTER_CA_FILE})"
        )


def _messages(error: ValidationError) -> str:
    if hasattr(error, "error_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in error.message_dict.items())
    return " ".join(error.messages)
