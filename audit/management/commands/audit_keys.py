"""manage.py audit_keys [--generate]"""

from django.core.management.base import BaseCommand

from audit import keys


class Command(BaseCommand):
    help = (
        "List the ids of the audit chain keys configured in AIRLOCK_AUDIT_KEYS (the first signs), "
        "or print a new key with --generate.  To rotate: put the new key first and keep the old ones "
        "for as long as events, checkpoints or anchors they signed are kept."
    )

    def add_arguments(self, parser):
        parser.add_argument("--generate", action="store_true", help="Print a new random key (32 bytes, base64).")

    def handle(self, *args, generate: bool, **options):
        if generate:
            self.stdout.write(keys.generate())
            return
        ring = keys.keyring()
        for key_id in ring.ids:
            self.stdout.write(f"{key_id} (signs)" if key_id == ring.active.key_id else f"{key_id} (verifies)")
