"""manage.py prune_audit --archive FILE [--days N] [--dry-run]"""

import hashlib
import os
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from audit.chain import prune_boundary, prune_through, verify_chain
from audit.export import iter_lines, select_events, write_lines


class Command(BaseCommand):
    help = (
        "Retention: archive the events older than the retention period (JSON Lines with recordings), "
        "then delete them behind a signed checkpoint so that verify_audit starts from it. "
        "Only a verified prefix of the chain is ever removed."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days", type=int, default=None,
            help="Keep events received in the last N days (default AIRLOCK_AUDIT_RETENTION_DAYS; 0 keeps all).",
        )
        parser.add_argument("--archive", help="New file to write the pruned events to (required unless --dry-run).")
        parser.add_argument("--dry-run", action="store_true", help="Report what would be pruned; change nothing.")

    def handle(self, *args, days, archive, dry_run, **options):
        days = settings.AIRLOCK_AUDIT_RETENTION_DAYS if days is None else days
        if days < 0:
            raise CommandError("--days must not be negative")
        if days == 0:
            self.stdout.write("retention is off (0 days): nothing pruned")
            return
        now = timezone.now()
        through = prune_boundary(now - timedelta(days=days))
        if through is None:
            self.stdout.write(f"no events older than {days} days: nothing pruned")
            return
        if dry_run:
            count = select_events(through_seq=through).count()
            self.stdout.write(f"would prune {count} events through #{through}")
            return
        if not archive:
            raise CommandError("--archive FILE is required: pruned events are archived first")
        check = verify_chain()
        if not check.ok:
            raise CommandError(f"refusing to prune a chain that does not verify: {check.summary()}")
        try:
            with open(archive, "xb") as stream:
                count, _, _, _ = write_lines(iter_lines(select_events(through_seq=through), include_casts=True), stream)
                stream.flush()
                os.fsync(stream.fileno())
        except OSError as exc:
            raise CommandError(f"cannot write the archive {archive}: {exc.strerror}") from None
        with open(archive, "rb") as stream:
            archive_sha256 = hashlib.file_digest(stream, "sha256").hexdigest()
        try:
            checkpoint = prune_through(through, archive_sha256=archive_sha256, now=now)
        except ValueError as exc:
            raise CommandError(f"nothing pruned: {exc}") from None
        self.stdout.write(
            f"pruned {checkpoint.events_pruned} events through #{through} "
            f"(archive {archive}, sha256 {archive_sha256}); the chain now starts after this checkpoint"
        )
