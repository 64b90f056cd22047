"""Dashboard sign-in with OIDC (mozilla-django-oidc), tightened for a security product.

mozilla-django-oidc runs the authorization-code flow (state, nonce, PKCE) and
checks the ID token's signature.  This backend adds what it leaves out: the
ID token's issuer and audience are checked, the userinfo ``sub`` must be the
ID token's, and people are matched by (issuer, subject) through
ReviewerProfile instead of by e-mail.  At every login the IdP groups are
stored (rules' ``reviewer_groups`` are matched against them) and membership
of the "reviewers" group follows AIRLOCK_DASHBOARD_OIDC_REVIEWER_GROUPS.
"""

import logging
import re

import jwt
import requests
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import Http404
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from approvals.models import ReviewerProfile

log = logging.getLogger(__name__)

REVIEWERS = "reviewers"
_USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")


def oidc_enabled() -> bool:
    return bool(getattr(settings, "OIDC_RP_CLIENT_ID", ""))


class ReviewerOIDCBackend(OIDCAuthenticationBackend):
    def authenticate(self, request, **kwargs):
        try:
            return super().authenticate(request, **kwargs)
        except (requests.RequestException, jwt.PyJWTError, SuspiciousOperation, ValueError, KeyError) as exc:
            # Messages may quote IdP responses; the type is enough to investigate.
            log.warning("dashboard OIDC login failed: %s", type(exc).__name__)
            return None

    def verify_token(self, token, **kwargs):
        payload = super().verify_token(token, **kwargs)
        audience = payload.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
        if payload.get("iss") != settings.OIDC_OP_ISSUER or self.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation("ID token issuer or audience mismatch")
        if not isinstance(payload.get("sub"), str) or not payload["sub"]:
            raise SuspiciousOperation("ID token without subject")
        return payload

    def get_userinfo(self, access_token, id_token, payload):
        claims = super().get_userinfo(access_token, id_token, payload)
        if not isinstance(claims, dict) or claims.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("userinfo subject differs from the ID token's")
        return claims

    def verify_claims(self, claims):
        return isinstance(claims.get("sub"), str) and bool(claims["sub"])

    def filter_users_by_claims(self, claims):
        return self.UserModel.objects.filter(
            reviewer_profile__issuer=settings.OIDC_OP_ISSUER, reviewer_profile__subject=claims["sub"]
        )

    def create_user(self, claims):
        base = _USERNAME_UNSAFE.sub("-", claims.get("preferred_username") or claims["sub"])[:140] or "user"
        username, suffix = base, 1
        while self.UserModel.objects.filter(username=username).exists():
            suffix += 1
            username = f"{base}-{suffix}"
        email = claims.get("email") if isinstance(claims.get("email"), str) else ""
        with transaction.atomic():
            user = self.UserModel.objects.create_user(username, email=email)
            user.set_unusable_password()
            user.save()
            ReviewerProfile.objects.create(user=user, issuer=settings.OIDC_OP_ISSUER, subject=claims["sub"])
        return self.update_user(user, claims)

    def update_user(self, user, claims):
        groups = claims.get(settings.AIRLOCK_DASHBOARD_OIDC_GROUPS_CLAIM, [])
        groups = sorted({g for g in groups if isinstance(g, str)}) if isinstance(groups, list) else []
        with transaction.atomic():
            profile = ReviewerProfile.objects.get(user=user)
            profile.idp_groups = groups
            profile.save(update_fields=["idp_groups", "updated_at"])
            reviewers, _ = Group.objects.get_or_create(name=REVIEWERS)
            if set(groups) & set(settings.AIRLOCK_DASHBOARD_OIDC_REVIEWER_GROUPS):
                user.groups.add(reviewers)
            else:
                user.groups.remove(reviewers)
        return user


class OIDCLogin(OIDCAuthenticationRequestView):
    """Start the OIDC login; 404 when the dashboard has no OIDC client configured."""

    def dispatch(self, request, *args, **kwargs):
        if not oidc_enabled():
            raise Http404("OIDC sign-in is not configured")
        return super().dispatch(request, *args, **kwargs)


class OIDCCallback(OIDCAuthenticationCallbackView):
    def dispatch(self, request, *args, **kwargs):
        if not oidc_enabled():
            raise Http404("OIDC sign-in is not configured")
        return super().dispatch(request, *args, **kwargs)

    @property
    def failure_url(self):
        return "/approvals/login/?sso=failed"
