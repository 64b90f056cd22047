"""manage.py verify_audit [--anchors FILE ...] [--anchor SEQ:HASH ...]"""

import argparse
import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from audit.anchors import AnchorFileError, read_file
from audit.chain import verify_chain

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
        "Reads AIRLOCK_AUDIT_ANCHOR_FILE when it is set."
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

    def handle(self, *args, anchors, anchor, **options):
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
