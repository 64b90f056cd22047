"""manage.py api_token USERNAME [--reset]: the REST API key of a reviewer (DRF token authentication).

Prints only the key, so a script can take it: ``TOKEN=$(manage.py api_token rita)``; then
``curl -H "Authorization: Token $TOKEN" https://GATEWAY/approvals/api/reviews/``.  The same key
``manage.py drf_create_token`` makes; this command also refuses users whose key would open
nothing (inactive, or without any approvals permission).
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token

from approvals.api import LEASE_READERS, REVIEW_READERS


class Command(BaseCommand):
    help = "Print (creating it if needed) the REST API key of a user with the reviewer role."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--reset", action="store_true", help="Replace the user's key (the old one stops working).")

    def handle(self, *args, username, reset, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        if not user.is_active:
            raise CommandError(f"user {username!r} is inactive")
        if not any(user.has_perm(p) for p in (*REVIEW_READERS, *LEASE_READERS)):
            raise CommandError(f"user {username!r} may not use the approvals API: add them to the reviewers group "
                               "(the admin, /admin/auth/user/)")
        if reset:
            Token.objects.filter(user=user).delete()
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
