"""manage.py audit_writer [--journal-dir DIR] [--socket PATH] [--idle-exit SECONDS]"""

import asyncio

import uvloop
from django.core.management.base import BaseCommand

from audit.writer import AuditWriter


class Command(BaseCommand):
    help = (
        "Run the audit writer: the one process of a pod that appends its gateway processes' audit events to the "
        "chain (AIRLOCK_AUDIT_WRITER=process). Gateway processes start it themselves unless "
        "AIRLOCK_AUDIT_WRITER_SPAWN is off; a second writer for the same journal directory exits at once. "
        "SIGTERM: it commits what its gateway processes send until they have gone, anchors the chain head and exits."
    )

    def add_arguments(self, parser):
        parser.add_argument("--journal-dir", help="The journal directory (default AIRLOCK_AUDIT_JOURNAL_DIR).")
        parser.add_argument("--socket", help="The socket (default AIRLOCK_AUDIT_WRITER_SOCKET, or writer.sock in "
                                             "the journal directory).")
        parser.add_argument("--idle-exit", type=float, help="Exit after this many seconds without a gateway process "
                                                            "(default: run until stopped).")
        parser.add_argument("--batch-size", type=int, help="Default AIRLOCK_AUDIT_WRITER_BATCH_SIZE.")

    def handle(self, *args, journal_dir, socket, idle_exit, batch_size, **options):
        writer = AuditWriter(journal_dir=journal_dir, socket_path=socket, idle_exit=idle_exit, batch_size=batch_size)
        # uvloop, as the gateway processes: its loop wakes up (epoll, and the database thread handing a
        # result back) for less CPU than asyncio's, and the writer wakes up for every read and commit.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(writer.serve())
        self.stdout.write(f"audit writer done: {writer.stats.events} events in {writer.stats.batches} batches, "
                          f"{writer.stats.recovered} dead journal segments replayed")
