"""manage.py recover_audit [--journal-dir DIR]"""

from django.core.management.base import BaseCommand

from audit.journal import recover_configured


class Command(BaseCommand):
    help = (
        "Replay the audit journals of dead gateway processes (a crashed or deleted pod's volume): append their "
        "completion events and close every request they left unfinished with a 'gateway crashed' completion. "
        "Journals of running processes are left alone; replaying twice adds nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--journal-dir", help="The journal directory (default AIRLOCK_AUDIT_JOURNAL_DIR).")

    def handle(self, *args, journal_dir, **options):
        self.stdout.write(str(recover_configured(journal_dir)))
