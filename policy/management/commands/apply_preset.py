"""manage.py apply_preset --connection NAME PRESET (--group G | --subject S ... | --everyone)
[--name-prefix P] [--replace]"""

from django.core.management.base import BaseCommand, CommandError

from connections.models import Connection
from policy import presets, rulesets


class Command(BaseCommand):
    help = (
        "Load a built-in rule preset into a connection (all or nothing), bound to IdP groups or "
        "subjects, or explicitly to everyone."
    )

    def add_arguments(self, parser):
        parser.add_argument("--connection", required=True, help="Connection name.")
        parser.add_argument("preset", choices=sorted(presets.PRESETS))
        parser.add_argument(
            "--group", action="append", default=[], metavar="GROUP", dest="groups",
            help="IdP group (or glob) the rules apply to; repeatable.",
        )
        parser.add_argument(
            "--subject", action="append", default=[], metavar="SUBJECT", dest="subjects",
            help="Username or subject (or glob) the rules apply to; repeatable.",
        )
        parser.add_argument(
            "--everyone", action="store_true", help="The rules apply to every authenticated principal."
        )
        parser.add_argument(
            "--name-prefix", default="", metavar="PREFIX",
            help="Put before each rule name, so several bound presets can live on one connection.",
        )
        parser.add_argument(
            "--replace", action="store_true", help="Delete the connection's existing rules first."
        )

    def handle(self, *args, connection, preset, groups, subjects, everyone, name_prefix, replace, **options):
        if everyone == bool(groups or subjects):
            raise CommandError(
                "say whom the preset applies to: --group GROUP and/or --subject SUBJECT (repeatable), "
                "or --everyone (but not both)"
            )
        target = get_connection(connection)
        try:
            created = presets.apply_preset(
                target, preset, subjects=subjects, groups=groups, name_prefix=name_prefix, replace=replace
            )
        except rulesets.RuleSetError as exc:
            hint = ""
            if any("already has a rule with this name" in error for error in exc.errors):
                hint = "\n(give --name-prefix to add the preset next to the existing rules)"
            raise CommandError("nothing was written:\n" + "\n".join(exc.errors) + hint) from None
        who = "everyone" if everyone else ", ".join(
            [f"group {g}" for g in groups] + [f"subject {s}" for s in subjects]
        )
        self.stdout.write(
            f"applied preset {preset}: {len(created)} rule(s) written to connection {target.name}, for {who}"
        )


def get_connection(name: str) -> Connection:
    try:
        return Connection.objects.get(name=name)
    except Connection.DoesNotExist:
        raise CommandError(f"connection {name!r} does not exist") from None
