"""manage.py export_rules --connection NAME [-o FILE]"""

from django.core.management.base import BaseCommand

from policy import rulesets
from policy.management.commands.apply_preset import get_connection


class Command(BaseCommand):
    help = "Export a connection's rules as a RuleSet YAML document (airlock.dev/v1)."

    def add_arguments(self, parser):
        parser.add_argument("--connection", required=True, help="Connection name.")
        parser.add_argument("-o", "--output", help="Write to this file instead of standard output.")

    def handle(self, *args, connection, output, **options):
        text = rulesets.export_connection(get_connection(connection))
        if output:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text)
        else:
            self.stdout.write(text, ending="")
