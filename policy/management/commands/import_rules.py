"""manage.py import_rules --connection NAME FILE [--replace]"""

import sys

from django.core.management.base import BaseCommand, CommandError

from policy import rulesets
from policy.management.commands.apply_preset import get_connection


class Command(BaseCommand):
    help = (
        "Import a RuleSet YAML document into a connection. Everything is validated first and "
        "written in one transaction: on any error nothing changes."
    )

    def add_arguments(self, parser):
        parser.add_argument("--connection", required=True, help="Connection name.")
        parser.add_argument("file", help='RuleSet YAML file, or "-" for standard input.')
        parser.add_argument(
            "--replace", action="store_true", help="Delete the connection's existing rules first."
        )

    def handle(self, *args, connection, file, replace, **options):
        target = get_connection(connection)
        try:
            if file == "-":
                text = sys.stdin.read()
            else:
                with open(file, encoding="utf-8") as fh:
                    text = fh.read()
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise CommandError(f"cannot read {file}: not UTF-8 text") from None
        try:
            created = rulesets.import_text(target, text, replace=replace)
        except rulesets.RuleSetError as exc:
            raise CommandError("nothing was written:\n" + "\n".join(exc.errors)) from None
        self.stdout.write(f"imported {len(created)} rule(s) into connection {target.name}")
