"""manage.py export_audit [--anchors] [--since T] [--until T] [--after-seq N] [-o FILE|-] [--http URL]"""

import os
import sys
from datetime import UTC, datetime, time

import argparse

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime

from audit.export import ExportError, HttpSink, iter_anchor_lines, iter_lines, post_lines, select_events, write_lines


def moment(value: str) -> datetime:
    """ISO 8601 date or date-time; a time without a zone is UTC."""
    parsed = parse_datetime(value)
    if parsed is None:
        day = parse_date(value)
        if day is None:
            raise argparse.ArgumentTypeError(f"expected an ISO 8601 date or date-time, got {value[:40]!r}")
        parsed = datetime.combine(day, time())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class TextSink:
    """Binary lines onto the command's (text) stdout."""

    def __init__(self, stdout):
        self.stdout = stdout

    def write(self, line: bytes) -> None:
        self.stdout.write(line.decode("utf-8"), ending="")


class Command(BaseCommand):
    help = (
        "Export audit events as JSON Lines (audit.k8s.io/v1 Events, gateway fields under 'airlock', "
        "hashes included) to a file, stdout or an HTTP endpoint; with --anchors, the signed chain heads instead."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", type=moment, help="Events received at or after this time.")
        parser.add_argument("--until", type=moment, help="Events received before this time.")
        parser.add_argument("--after-seq", type=int, help="Events after this seq (resume a previous export).")
        destination = parser.add_mutually_exclusive_group()
        destination.add_argument("-o", "--output", default="-", help="File to write, or - for stdout (default).")
        destination.add_argument("--http", metavar="URL", help="POST batches of lines to this URL (a SIEM).")
        parser.add_argument("--batch-size", type=int, default=500, help="Events per HTTP request.")
        parser.add_argument("--retries", type=int, default=5, help="Retries per HTTP batch.")
        parser.add_argument(
            "--token-env", default="AIRLOCK_AUDIT_EXPORT_TOKEN",
            help="Environment variable holding the endpoint's bearer token (default %(default)s).",
        )
        parser.add_argument("--recordings", action="store_true", help="Include exec recordings (asciicast).")
        parser.add_argument(
            "--anchors", action="store_true",
            help="Export the anchors (signed chain heads, the anchor file's format) instead of events; "
                 "keep them where the database's writers cannot reach and give them to verify_audit --anchors.",
        )

    def handle(self, *args, since, until, after_seq, output, http, batch_size, retries, token_env,
               recordings, anchors, **options):
        if batch_size < 1 or retries < 0:
            raise CommandError("--batch-size must be at least 1 and --retries at least 0")
        if anchors:
            if since or until or recordings:
                raise CommandError("--anchors takes --after-seq, not --since, --until or --recordings")
            lines = iter_anchor_lines(after_seq=after_seq)
        else:
            lines = iter_lines(select_events(since=since, until=until, after_seq=after_seq), include_casts=recordings)
        if http:
            try:
                sink = HttpSink(http, token=os.environ.get(token_env) or None, retries=retries)
            except ExportError as exc:
                raise CommandError(str(exc)) from None
            try:
                count, first, last = post_lines(lines, sink, batch_size=batch_size)
            except ExportError as exc:
                raise CommandError(str(exc)) from None
            finally:
                sink.close()
        elif output == "-":
            try:
                count, first, last, _ = write_lines(lines, TextSink(self.stdout))
                self.stdout.flush()
            except BrokenPipeError:
                # The reader went away (`| head`): stop reading rows, and keep Python from
                # failing again when it flushes stdout at exit.
                lines.close()
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise CommandError("stdout was closed before the export finished") from None
        else:
            try:
                with open(output, "wb") as stream:
                    count, first, last, _ = write_lines(lines, stream)
            except OSError as exc:
                raise CommandError(f"cannot write {output}: {exc.strerror}") from None
        span = f" (#{first}..#{last})" if count else ""
        self.stderr.write(f"exported {count} {'anchors' if anchors else 'events'}{span}")
