"""Create (or with --update, refresh) a Connection from a kubeconfig context."""

from pathlib import Path

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
        "have a static credential: a token, tokenFile, or a client certificate and key."
    )

    def add_arguments(self, parser):
        parser.add_argument("--kubeconfig", required=True, type=Path, metavar="FILE")
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


def _messages(error: ValidationError) -> str:
    if hasattr(error, "error_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in error.message_dict.items())
    return " ".join(error.messages)
