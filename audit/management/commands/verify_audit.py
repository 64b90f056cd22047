"""manage.py verify_audit [--anchors FILE ...] [--anchor SEQ:HASH ...] [--in-flight-minutes N]"""

import argparse
import os
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from audit import journal
from audit.anchors import AnchorFileError, read_file
from audit.chain import missing_completions, verify_chain

# Exit status when the chain is intact but requests lack their completion (tampering exits 1).
INCOMPLETE = 3
LISTED = 20

NOT_COVERED = (
    "not covered by the chain: review and lease decisions (who approved or denied, votes, reasons, lease "
    "grants) live in the approvals tables; an event names its review_id or lease_id, not its approvers, so a "
    "database writer can change a decision there without this check noticing"
)


def anchor(value: str) -> tuple[int, str]:
    seq, sep, digest = value.partition(":")
    if not sep or not seq.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise argparse.ArgumentTypeError("an anchor looks like SEQ:HASH (64 lower-case hex digits)")
    return int(seq), digest


class Command(BaseCommand):
    help = (
        "Walk the audit chain and exit non-zero, naming the first bad event and what was done to it "
        "(edited, re-hashed, deleted, reordered, truncated, forged), if the trail was tampered with. "
        "Reads AIRLOCK_AUDIT_ANCHOR_FILE when it is set. An intact chain in which requests have a "
        f"RequestReceived event but no completion exits {INCOMPLETE}, naming them."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--anchors", action="append", default=[], metavar="FILE",
            help="A file of signed anchors (the anchor file, or export_audit --anchors) kept outside the "
                 "database; catches deleted newest events.  May be repeated.",
        )
        parser.add_argument(
            "--anchor", action="append", default=[], type=anchor, metavar="SEQ:HASH",
            help="A (seq, hash) pair kept elsewhere (an export, a SIEM); catches deleted newest events.",
        )
        parser.add_argument(
            "--in-flight-minutes", type=float, default=None, metavar="N",
            help="A request received less than N minutes ago may still be in flight: its missing completion is "
                 "not reported (default AIRLOCK_AUDIT_IN_FLIGHT_MINUTES). Requests in flight in a live gateway's "
                 "journal under AIRLOCK_AUDIT_JOURNAL_DIR are never reported.",
        )

    def handle(self, *args, anchors, anchor, in_flight_minutes, **options):
        paths = list(anchors)
        configured = settings.AIRLOCK_AUDIT_ANCHOR_FILE
        if configured and configured not in paths and os.path.exists(configured):
            paths.append(configured)  # absent until the first anchor is written
        records = []
        for path in paths:
            try:
                records.extend(read_file(path))
            except AnchorFileError as exc:
                raise CommandError(f"audit chain NOT VERIFIED: {exc}") from None
        result = verify_chain(anchors_from=records, pins=dict(anchor), files_checked=bool(paths))
        if not result.ok:
            raise CommandError(result.summary())
        self.stdout.write(result.summary())
        self.stdout.write(NOT_COVERED)
        minutes = settings.AIRLOCK_AUDIT_IN_FLIGHT_MINUTES if in_flight_minutes is None else in_flight_minutes
        missing = missing_completions(timezone.now() - timedelta(minutes=minutes),
                                      in_flight=journal.in_flight(settings.AIRLOCK_AUDIT_JOURNAL_DIR))
        if missing:
            listed = ", ".join(f"#{seq} {audit_id} (received {received.isoformat(timespec='seconds')})"
                               for seq, audit_id, received in missing[:LISTED])
            more = f" and {len(missing) - LISTED} more" if len(missing) > LISTED else ""
            raise CommandError(
                f"audit trail INCOMPLETE: {len(missing)} requests have a RequestReceived event but no completion "
                f"event, received over {minutes:g} minutes ago and in flight in no live gateway here: {listed}{more}. "
                "A gateway process died and its journal was not replayed (run manage.py recover_audit on its "
                "journal directory), or the completion events were deleted.",
                returncode=INCOMPLETE,
            )
        self.stdout.write(f"every request received over {minutes:g} minutes ago has its completion event")
