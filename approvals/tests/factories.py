"""Small builders shared by the approvals tests."""

from django.contrib.auth.models import Group, Permission, User
from django.test import AsyncClient

from gateway.pipeline import parse_request
from identity.principal import Principal

AGENT = Principal(subject="agent-1", username="agent-1", groups=("agents",), issuer="https://idp.test",
                  expires_at=float("inf"), token_id="t1")


def gateway_request(path, *, method="GET", query="", body=None, principal=AGENT, kind="http",
                    content_type="application/json", headers=()):
    headers = ([(b"content-type", content_type.encode())] if body else []) + [
        (name.encode(), value.encode()) for name, value in headers
    ]
    scope = {
        "type": kind, "method": method, "path": path, "raw_path": path.encode(), "query_string": query.encode(),
        "headers": headers, "client": ("127.0.0.1", 1),
    }
    request = parse_request(scope, "/k8s/").evolve(principal=principal)
    if body is not None:
        request = request.evolve(body=body)
    return request


def reviewers_group():
    """The "reviewers" group of migration 0002 (transactional tests flush it away)."""
    group, _ = Group.objects.get_or_create(name="reviewers")
    group.permissions.add(*Permission.objects.filter(
        content_type__app_label="approvals", codename__in=["decide_review", "grant_lease", "view_review", "view_lease"]
    ))
    return group


def reviewer(name, *groups, role=True):
    user = User.objects.create_user(name, password="pw-" + name)
    if role:
        user.groups.add(reviewers_group())
    for group in groups:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def connection(name="prod"):
    from connections.models import Connection

    row = Connection(name=name, server_url="https://cluster.test")
    row.bearer_token = "cluster-token-for-tests"
    row.full_clean()
    row.save()
    return row


def review_rule(conn, name="hold-deletes", **fields):
    from policy.models import Rule

    values = dict(
        connection=conn, order=5, name=name, effect="review", groups=["agents"], verbs=["delete", "create", "patch"],
        api_groups=["*"], resources=["*"], namespaces=["*"], names=["*"],
    )
    values.update(fields)
    return Rule.objects.create(**values)


class AgentAPIClient(AsyncClient):
    """Requests as the application (airlock.app) hands them to Django: the ASGI scope carries the
    authenticator the gateway uses (approvals.agent_api.AUTHENTICATOR), built from the current settings."""

    def _base_scope(self, **request):
        from approvals.agent_api import AUTHENTICATOR
        from identity.chain import build_authenticator

        return {**super()._base_scope(**request), AUTHENTICATOR: build_authenticator()}
