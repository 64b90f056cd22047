"""manage.py verify_audit [--anchor SEQ:HASH ...]"""

import argparse

from django.core.management.base import BaseCommand, CommandError

from audit.chain import verify_chain


def anchor(value: str) -> tuple[int, str]:
    seq, sep, digest = value.partition(":")
    if not sep or not seq.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise argparse.ArgumentTypeError("an anchor looks like SEQ:HASH (64 lower-case hex digits)")
    return int(seq), digest


class Command(BaseCommand):
    help = (
        "Walk the audit hash chain and exit non-zero, naming the first bad event, if any event was "
        "edited, deleted or reordered."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--anchor", action="append", default=[], type=anchor, metavar="SEQ:HASH",
            help="A (seq, hash) pair kept elsewhere (an export, a SIEM); catches deleted newest events.",
        )

    def handle(self, *args, anchor, **options):
        result = verify_chain(anchors=dict(anchor))
        if not result.ok:
            raise CommandError(result.summary())
        self.stdout.write(result.summary())
