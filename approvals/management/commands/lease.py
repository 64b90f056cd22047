"""manage.py lease request|grant|deny|revoke|list: just-in-time leases from the command line.

    manage.py lease request --connection prod --subject agent-1 --duration 30m --reason "INC-42" [--rule NAME ...]
    manage.py lease grant 7 --by rita [--reason "ok"]
    manage.py lease deny 7 --by rita --reason "use the runbook"
    manage.py lease revoke 7 --by rita --reason "incident closed"
    manage.py lease list [--state granted] [--connection prod]

``--by`` names the Django user acting; the same rules as in the dashboard and
API apply (the reviewer role, nobody grants their own lease).
"""

import getpass

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from approvals import leases
from approvals.models import Lease, LeaseState
from approvals.reviews import ApprovalError


class Command(BaseCommand):
    help = "Request, grant, deny, revoke or list just-in-time leases."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        request = actions.add_parser("request", help="Ask for a lease.")
        request.add_argument("--connection", required=True)
        holder = request.add_mutually_exclusive_group(required=True)
        holder.add_argument("--subject", help="The agent's subject or username.")
        holder.add_argument("--group", help="Every member of this IdP group.")
        request.add_argument("--issuer", default="", help="Only tokens from this issuer.")
        request.add_argument("--rule", action="append", default=[], dest="rules",
                             help="A lease-gated rule it covers (repeat; default: all of the connection's).")
        request.add_argument("--duration", required=True, help='Seconds, or like "30m", "2h", "1h30m".')
        request.add_argument("--reason", required=True)
        request.add_argument("--by", help="Django user requesting (default: the operating-system user).")
        for name, text in (("grant", "Grant a requested lease."), ("deny", "Deny a requested lease."),
                           ("revoke", "End a lease now (its live sessions are cut).")):
            sub = actions.add_parser(name, help=text)
            sub.add_argument("lease_id", type=int)
            sub.add_argument("--by", required=True, help="The Django user deciding.")
            sub.add_argument("--reason", default="")
        listing = actions.add_parser("list", help="List leases.")
        listing.add_argument("--state", choices=LeaseState.values)
        listing.add_argument("--connection")

    def handle(self, *args, action, **options):
        try:
            if action == "request":
                lease = leases.request_lease(
                    connection=options["connection"], subject=options["subject"] or "",
                    group=options["group"] or "", issuer=options["issuer"], rules=options["rules"],
                    duration=options["duration"], reason=options["reason"],
                    requested_by=options["by"] or f"cli:{getpass.getuser()}",
                )
            elif action == "list":
                self.list(options["state"], options["connection"])
                return
            elif action == "revoke":
                lease = leases.revoke(options["lease_id"], self.user(options["by"]), reason=options["reason"])
            else:
                lease = leases.decide(options["lease_id"], self.user(options["by"]), grant=action == "grant",
                                      reason=options["reason"])
        except ApprovalError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(self.line(lease))

    def user(self, username):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        return user

    def list(self, state, connection):
        rows = Lease.objects.all()
        if state:
            rows = rows.filter(state=state)
        if connection:
            rows = rows.filter(connection=connection)
        for lease in rows[:500]:
            self.stdout.write(self.line(lease))

    @staticmethod
    def line(lease) -> str:
        until = f" until {lease.expires_at.isoformat(timespec='seconds')}" if lease.expires_at else ""
        rules = f" rules {','.join(lease.rules)}" if lease.rules else ""
        return (f"lease {lease.pk} {lease.state}: {lease.holder} on {lease.connection}{rules} "
                f"for {lease.duration_seconds}s{until} — {lease.reason}")
