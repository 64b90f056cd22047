"""Register (or with --update change, --remove delete, --list show) a trusted proxy on a connection."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from connections.models import Connection, TrustedProxy


class Command(BaseCommand):
    help = (
        "Register a trusted proxy on a connection: the holder of a token from --issuer with subject --subject "
        "and/or in group --member-of may send Impersonate-User and Impersonate-Group for users matching --user "
        "and groups matching --group (globs, repeatable); the end user's rules then decide. Names starting with "
        '"system:" are never allowed.'
    )

    def add_arguments(self, parser):
        parser.add_argument("--connection", help="the connection's name")
        parser.add_argument("--name", help="the registration's name (unique on the connection)")
        parser.add_argument("--issuer", help="the issuer (iss) of the proxy's own token")
        parser.add_argument("--subject", help="the subject (sub) of the proxy's token")
        parser.add_argument("--member-of", dest="member_of", metavar="GROUP",
                            help="a group the proxy's token must carry")
        parser.add_argument("--user", action="append", dest="users", metavar="PATTERN",
                            help="a glob of users the proxy may assert (repeatable)")
        parser.add_argument("--group", action="append", dest="groups", metavar="PATTERN",
                            help="a glob of groups the proxy may assert (repeatable; none: it asserts no groups)")
        parser.add_argument("--description", help="what the proxy is")
        parser.add_argument("--disable", action="store_true", help="store the registration disabled")
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--update", action="store_true",
                            help="change an existing registration (options not given keep their value)")
        action.add_argument("--remove", action="store_true", help="delete the registration")
        action.add_argument("--list", action="store_true", help="list the registrations (of --connection)")

    def handle(self, *args, **options):
        if options["list"]:
            return self.list(options["connection"])
        for required in ("connection", "name"):
            if not options[required]:
                raise CommandError(f"--{required} is required")
        with transaction.atomic():
            connection = Connection.objects.filter(name=options["connection"]).first()
            if connection is None:
                raise CommandError(f"connection {options['connection']!r} does not exist")
            proxy = TrustedProxy.objects.select_for_update().filter(connection=connection, name=options["name"]).first()
            if options["remove"]:
                if proxy is None:
                    raise CommandError(f"no proxy {options['name']!r} is registered on {connection.name!r}")
                proxy.delete()
                self.stdout.write(f"Removed trusted proxy {options['name']!r} from connection {connection.name!r}.")
                return
            if proxy is not None and not options["update"]:
                raise CommandError(f"proxy {options['name']!r} is already registered on {connection.name!r}; "
                                   "pass --update to change it")
            if proxy is None and options["update"]:
                raise CommandError(f"no proxy {options['name']!r} is registered on {connection.name!r}")
            created = proxy is None
            if created:
                proxy = TrustedProxy(connection=connection, name=options["name"])
            for option, field in (("issuer", "issuer"), ("subject", "subject"), ("member_of", "group"),
                                  ("description", "description"), ("users", "users"), ("groups", "groups")):
                if options[option] is not None:
                    setattr(proxy, field, options[option])
            proxy.enabled = not options["disable"]
            try:
                proxy.full_clean()
            except ValidationError as exc:
                raise CommandError("; ".join(f"{field}: {' '.join(errors)}" if field != "__all__" else " ".join(errors)
                                             for field, errors in exc.message_dict.items())) from None
            proxy.save()
        self.stdout.write(f"{'Registered' if created else 'Updated'} trusted proxy {proxy.name!r} on connection "
                          f"{connection.name!r}: {describe(proxy)}")

    def list(self, connection):
        proxies = TrustedProxy.objects.select_related("connection")
        if connection:
            proxies = proxies.filter(connection__name=connection)
        for proxy in proxies:
            self.stdout.write(f"{proxy.connection.name}/{proxy.name}: {describe(proxy)}")


def describe(proxy: TrustedProxy) -> str:
    who = " and ".join(filter(None, (f"subject {proxy.subject!r}" if proxy.subject else "",
                                     f"group {proxy.group!r}" if proxy.group else "")))
    return (f"tokens of {proxy.issuer!r} with {who} may assert users {proxy.users} and groups {proxy.groups}"
            f"{'' if proxy.enabled else ' (disabled)'}")
