"""manage.py apply_preset --connection NAME PRESET [--replace]"""

from django.core.management.base import BaseCommand, CommandError

from connections.models import Connection
from gateway import presets, rulesets


class Command(BaseCommand):
    help = "Load a built-in rule preset into a connection (all or nothing)."

    def add_arguments(self, parser):
        parser.add_argument("--connection", required=True, help="Connection name.")
        parser.add_argument("preset", choices=sorted(presets.PRESETS))
        parser.add_argument(
            "--replace", action="store_true", help="Delete the connection's existing rules first."
        )

    def handle(self, *args, connection, preset, replace, **options):
        target = get_connection(connection)
        try:
            created = presets.apply_preset(target, preset, replace=replace)
        except rulesets.RuleSetError as exc:
            raise CommandError("nothing was written:\n" + "\n".join(exc.errors)) from None
        self.stdout.write(f"applied preset {preset}: {len(created)} rule(s) written to connection {target.name}")


def get_connection(name: str) -> Connection:
    try:
        return Connection.objects.get(name=name)
    except Connection.DoesNotExist:
        raise CommandError(f"connection {name!r} does not exist") from None
