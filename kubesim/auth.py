"""Authentication, authorization and impersonation, shaped like kube-apiserver's filters.

Authorization model (deliberately small, see README): an *admin* may do everything (users of
tokens flagged ``admin`` and members of ``system:masters``); any other authenticated identity is a
*viewer* (get/list/watch on everything except Secrets and the exec/attach/portforward/proxy/token
subresources, plus the self-review APIs); ``system:anonymous`` may only read /version and the
health endpoints. SelfSubjectAccessReview and SelfSubjectRulesReview answer from the same rules.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import unquote

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from . import errors

API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
ISSUER = "https://kubernetes.default.svc.cluster.local"
LEGACY_ISSUER = "kubernetes/serviceaccount"
ANONYMOUS = "system:anonymous"
PUBLIC_PATHS = {"/version", "/version/", "/healthz", "/livez", "/readyz"}
VIEW_VERBS = frozenset({"get", "list", "watch"})
VIEW_SUBRESOURCES = frozenset({"", "log", "status", "scale"})
SELF_REVIEWS = {
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
}


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict:
        out: dict = {"username": self.name}
        if self.uid:
            out["uid"] = self.uid
        if self.groups:
            out["groups"] = list(self.groups)
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra.items()}
        return out


ANONYMOUS_USER = UserInfo(ANONYMOUS, ("system:unauthenticated",))


@dataclass(frozen=True)
class StaticToken:
    token: str
    user: str
    groups: tuple[str, ...]
    admin: bool


def parse_token_spec(spec: str) -> StaticToken:
    """``TOKEN=user:group1,group2[:admin]``; groups may contain colons (``system:masters``)."""
    token, sep, rest = spec.partition("=")
    if not sep or not token or not rest:
        raise ValueError("expected TOKEN=user:group1,group2[:admin]")
    admin = False
    if rest.endswith(":admin"):
        admin, rest = True, rest[: -len(":admin")]
    user, _, groups = rest.partition(":")
    if not user:
        raise ValueError("the user name is empty")
    return StaticToken(token, user, tuple(g for g in groups.split(",") if g), admin)


@dataclass(frozen=True)
class Attributes:
    """What is being asked, like authorizer.Attributes."""

    verb: str
    resource_request: bool
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""


def credential_fingerprint(credential: str) -> str:
    return "sha256:" + hashlib.sha256(credential.encode()).hexdigest()


class Auth:
    """Token/cert authentication, the authorizer and impersonation."""

    def __init__(self, tokens: list[StaticToken], signing_key: ec.EllipticCurvePrivateKey,
                 *, anonymous: bool = True) -> None:
        self._tokens = {t.token: t for t in tokens}
        self.admin_users = {t.user for t in tokens if t.admin}
        self._key = signing_key
        self._public = signing_key.public_key()
        self._kid = hashlib.sha256(
            self._public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        ).hexdigest()[:32]
        self.anonymous = anonymous
        self.cluster = None  # set by the server: service-account tokens must name a live account

    # -- tokens ------------------------------------------------------------------------------

    def issue_token(self, namespace: str, sa_name: str, sa_uid: str, *, audiences: list[str] | None = None,
                    expiration_seconds: int | None = 3600, secret_name: str = "",
                    bound: dict | None = None) -> tuple[str, int | None]:
        now = int(time.time())
        claims: dict = {
            "iss": ISSUER,
            "sub": f"system:serviceaccount:{namespace}:{sa_name}",
            "aud": audiences or [API_AUDIENCE],
            "iat": now,
            "nbf": now,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": sa_name, "uid": sa_uid}},
        }
        exp = None
        if expiration_seconds:
            exp = now + expiration_seconds
            claims["exp"] = exp
        if secret_name:
            claims["kubernetes.io"]["secret"] = {"name": secret_name}
        if bound:
            claims["kubernetes.io"][bound["kind"].lower()] = {"name": bound.get("name", ""),
                                                              "uid": bound.get("uid", "")}
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self._kid}), exp

    def _service_account_user(self, token: str) -> UserInfo | None:
        try:
            claims = jwt.decode(token, self._public, algorithms=["ES256"], issuer=ISSUER,
                                audience=API_AUDIENCE, options={"require": ["sub", "iat"]})
        except jwt.PyJWTError:
            return None
        k8s = claims.get("kubernetes.io") or {}
        ns = k8s.get("namespace", "")
        sa = (k8s.get("serviceaccount") or {}).get("name", "")
        if claims.get("sub") != f"system:serviceaccount:{ns}:{sa}":
            return None
        if self.cluster is not None:
            live = self.cluster.find("", "serviceaccounts", ns, sa)
            if live is None or live["metadata"].get("uid") != (k8s.get("serviceaccount") or {}).get("uid"):
                return None
            secret = (k8s.get("secret") or {}).get("name")
            if secret and self.cluster.find("", "secrets", ns, secret) is None:
                return None
        return UserInfo(claims["sub"], ("system:serviceaccounts", f"system:serviceaccounts:{ns}",
                                        "system:authenticated"),
                        uid=(k8s.get("serviceaccount") or {}).get("uid", ""))

    def authenticate(self, authorization: str | None, peer: tuple[str, list[str]] | None) -> UserInfo:
        """Identity of a request; raises 401 for bad credentials (kube-apiserver's union order)."""
        if authorization:
            scheme, _, credential = authorization.partition(" ")
            credential = credential.strip()
            if scheme.lower() != "bearer" or not credential:
                raise errors.unauthorized()
            static = self._tokens.get(credential)
            if static is not None:
                groups = tuple(dict.fromkeys(static.groups + ("system:authenticated",)))
                return UserInfo(static.user, groups)
            user = self._service_account_user(credential)
            if user is None:
                raise errors.unauthorized()
            return user
        if peer is not None:
            name, groups = peer
            return UserInfo(name, tuple(dict.fromkeys(tuple(groups) + ("system:authenticated",))))
        if not self.anonymous:
            raise errors.unauthorized()
        return ANONYMOUS_USER

    # -- authorization -----------------------------------------------------------------------

    def is_admin(self, user: UserInfo) -> bool:
        return user.name in self.admin_users or "system:masters" in user.groups

    def allowed(self, user: UserInfo, attrs: Attributes) -> bool:
        if self.is_admin(user):
            return True
        if user.name == ANONYMOUS or "system:unauthenticated" in user.groups:
            return not attrs.resource_request and attrs.verb in ("get", "head") and attrs.path in PUBLIC_PATHS
        if not attrs.resource_request:
            return attrs.verb in ("get", "head")
        if attrs.verb == "create" and not attrs.subresource and (attrs.group, attrs.resource) in SELF_REVIEWS:
            return True
        if attrs.verb not in VIEW_VERBS or attrs.subresource not in VIEW_SUBRESOURCES:
            return False
        return not (attrs.group == "" and attrs.resource == "secrets")

    def rules(self, user: UserInfo, resources: list[tuple[str, str, tuple[str, ...]]]) -> dict:
        """SelfSubjectRulesReview status for ``user``; ``resources`` = (group, name, subresources)."""
        if self.is_admin(user):
            return {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": False}
        if user.name == ANONYMOUS:
            return {"resourceRules": [],
                    "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": sorted(PUBLIC_PATHS)}],
                    "incomplete": False}
        by_group: dict[str, list[str]] = {}
        for group, name, subs in resources:
            if (group, name) == ("", "secrets"):
                continue
            names = by_group.setdefault(group, [])
            if name not in names:
                names.append(name)
            for sub in subs:
                if sub in VIEW_SUBRESOURCES and f"{name}/{sub}" not in names:
                    names.append(f"{name}/{sub}")
        rules = [
            {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
             "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
            {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]},
        ]
        rules += [{"verbs": sorted(VIEW_VERBS), "apiGroups": [g], "resources": names}
                  for g, names in by_group.items()]
        return {"resourceRules": rules, "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["*"]}],
                "incomplete": False}

    @staticmethod
    def forbidden_message(user: UserInfo, attrs: Attributes) -> str:
        if not attrs.resource_request:
            return f'User "{user.name}" cannot {attrs.verb} path "{attrs.path}"'
        resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
        if attrs.namespace:
            return (f'User "{user.name}" cannot {attrs.verb} resource "{resource}" in API group '
                    f'"{attrs.group}" in the namespace "{attrs.namespace}"')
        return f'User "{user.name}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.group}" at the cluster scope'

    def authorize(self, user: UserInfo, attrs: Attributes) -> None:
        if not self.allowed(user, attrs):
            raise errors.forbidden(attrs.group, attrs.resource, attrs.name, self.forbidden_message(user, attrs))

    # -- impersonation -----------------------------------------------------------------------

    def impersonate(self, requester: UserInfo, headers) -> UserInfo | None:
        """Apply Impersonate-* headers (a CIMultiDict); None when the request impersonates nobody."""
        user = headers.get("Impersonate-User")
        groups = list(headers.getall("Impersonate-Group", []))
        uid = headers.get("Impersonate-Uid")
        extra: dict[str, list[str]] = {}
        for key, value in headers.items():
            lower = key.lower()
            if lower.startswith("impersonate-extra-"):
                extra.setdefault(unquote(lower[len("impersonate-extra-"):]), []).append(value)
        if not user:
            if groups or uid or extra:
                asked = [f"Group={g}" for g in groups] + ([f"UID={uid}"] if uid else []) + [
                    f"Extra[{k}]={v}" for k, vs in extra.items() for v in vs]
                raise errors.bad_request(f"requested [{', '.join(asked)}] without impersonating a user")
            return None
        checks: list[Attributes] = []
        if user.startswith("system:serviceaccount:") and user.count(":") == 3:
            _, _, ns, name = user.split(":")
            checks.append(Attributes("impersonate", True, "", "serviceaccounts", namespace=ns, name=name))
        else:
            checks.append(Attributes("impersonate", True, "", "users", name=user))
        checks += [Attributes("impersonate", True, "", "groups", name=g) for g in groups]
        if uid:
            checks.append(Attributes("impersonate", True, "authentication.k8s.io", "uids", name=uid))
        for key, values in extra.items():
            checks += [Attributes("impersonate", True, "authentication.k8s.io", "userextras", subresource=key,
                                  name=v) for v in values]
        for attrs in checks:
            self.authorize(requester, attrs)
        if user.startswith("system:serviceaccount:") and user.count(":") == 3 and not groups:
            ns = user.split(":")[2]
            groups = ["system:serviceaccounts", f"system:serviceaccounts:{ns}"]
        if user != ANONYMOUS and not {"system:authenticated", "system:unauthenticated"} & set(groups):
            groups.append("system:authenticated")
        return UserInfo(user, tuple(groups), uid=uid or "", extra={k: tuple(v) for k, v in extra.items()})
