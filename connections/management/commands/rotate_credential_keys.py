"""Re-encrypt every stored credential under the first key of AIRLOCK_FIELD_ENCRYPTION_KEYS."""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from connections import crypto
from connections.models import Connection

CREDENTIAL_FIELDS = {"token_ciphertext": "bearer token", "client_key_ciphertext": "client key"}


class Command(BaseCommand):
    help = (
        "Re-encrypt all connection credentials under the first key in AIRLOCK_FIELD_ENCRYPTION_KEYS "
        "(all in one transaction), or print a new key with --generate."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--generate", action="store_true", help="print a fresh key and how to install it, and change nothing"
        )

    def handle(self, *args, generate=False, **options):
        if generate:
            self._generate()
        else:
            self._rotate()

    def _generate(self):
        key = crypto.generate_key()
        self.stdout.write(key)
        self.stderr.write(
            "To rotate keys:\n"
            f'  1. prepend the key: AIRLOCK_FIELD_ENCRYPTION_KEYS="{key},$AIRLOCK_FIELD_ENCRYPTION_KEYS"\n'
            "     and restart every Airlock process (web, gateway, workers) with it;\n"
            "  2. run `manage.py rotate_credential_keys` to re-encrypt stored credentials under it;\n"
            "  3. remove the old keys from AIRLOCK_FIELD_ENCRYPTION_KEYS and restart again.\n"
        )

    def _rotate(self):
        connections = credentials = 0
        with transaction.atomic():
            for row in Connection.objects.select_for_update().order_by("pk").values("pk", "name", *CREDENTIAL_FIELDS):
                changes = {}
                for field, label in CREDENTIAL_FIELDS.items():
                    if row[field]:
                        try:
                            changes[field] = crypto.rotate(row[field], label=f"{label} of connection {row['name']!r}")
                        except crypto.CredentialDecryptionError as exc:
                            raise CommandError(f"{exc}; nothing was changed") from None
                if changes:
                    # update(), not save(): the plaintext is unchanged, so updated_at and
                    # the gateway caches keyed by it stay as they are.
                    Connection.objects.filter(pk=row["pk"]).update(**changes)
                    connections += 1
                    credentials += len(changes)
        self.stdout.write(
            f"Re-encrypted {credentials} credential(s) of {connections} connection(s) under the first key."
        )
