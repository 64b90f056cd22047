"""Who acted through whom: an event of a user a trusted proxy asserted names the proxy too
(identity.proxies); its hashed document says it as kube-apiserver does, and only then."""

import pytest

from audit.chain import verify_chain
from audit.document import event_document
from audit.events import prepare
from audit.models import AuditEvent
from audit.tests.factories import append, broken, event, tampering

PROXIED = {"user_username": "alice@example.com", "user_uid": "alice@example.com", "user_groups": ["team-a"],
           "user_issuer": "https://idp.example.test#proxy=mcp-server", "proxy_username": "mcp-server",
           "proxy_uid": "mcp-server", "proxy_issuer": "https://idp.example.test",
           "decision_effect": "allow", "decision_rule_name": "team-a-reads-pods"}


def document(fields):
    return event_document(AuditEvent(**prepare(fields, max_body=1024, max_recording=1024).fields, seq=1), None)


def test_the_document_names_the_proxy_as_user_and_the_end_user_as_impersonated():
    doc = document(event(0, **PROXIED))
    assert doc["user"] == {"username": "mcp-server", "uid": "mcp-server",
                           "extra": {"issuer": ["https://idp.example.test"]}}
    assert doc["impersonatedUser"] == {"username": "alice@example.com", "uid": "alice@example.com",
                                       "groups": ["team-a"],
                                       "extra": {"issuer": ["https://idp.example.test#proxy=mcp-server"]}}
    assert doc["airlock"]["decision"]["ruleName"] == "team-a-reads-pods"


def test_an_event_without_a_proxy_has_the_document_it_always_had():
    plain = document(event(0))
    assert "impersonatedUser" not in plain and plain["user"]["username"] == "agent-1"
    assert set(plain) == {"kind", "apiVersion", "level", "auditID", "stage", "requestURI", "verb", "user",
                          "sourceIPs", "userAgent", "requestReceivedTimestamp", "stageTimestamp", "objectRef",
                          "responseStatus", "annotations", "airlock"}


@pytest.mark.django_db
def test_proxied_events_are_stored_and_the_chain_verifies():
    append(event(0), event(1, **PROXIED))
    rows = list(AuditEvent.objects.order_by("seq").values_list("user_username", "proxy_username"))
    assert rows == [("agent-1", ""), ("alice@example.com", "mcp-server")]
    assert verify_chain().ok


@pytest.mark.django_db
def test_rewriting_who_acted_through_whom_is_named_by_verify():
    append(event(0, **PROXIED))
    with tampering("audit_auditevent") as cursor:
        cursor.execute("UPDATE audit_auditevent SET proxy_username = 'nobody' WHERE seq = 1")
    assert "edited: its content does not match its hash" in broken()


@pytest.mark.django_db
def test_a_user_through_a_proxy_has_sessions_of_their_own():
    """Sessions group by issuer and subject: the end user's issuer names the proxy (identity.proxies)."""
    from audit.models import Session
    from identity.principal import Principal
    from identity.proxies import asserted_issuer

    def proxy(subject):
        return Principal(subject=subject, username=subject, groups=(), issuer="https://idp.example.test",
                         expires_at=0.0, token_id="t")

    def through(subject):
        return PROXIED | {"user_issuer": asserted_issuer(proxy(subject)), "proxy_uid": subject,
                          "proxy_username": subject}

    direct = {"user_username": "alice@example.com", "user_uid": "alice@example.com",
              "user_issuer": "https://idp.example.test"}
    append(event(0, **through("mcp-server")), event(1, **direct), event(2, **through("other")),
           event(3, **through("mcp-server")))
    assert Session.objects.count() == 3
    by_session = {s.user_issuer: sorted(s.events.values_list("proxy_username", flat=True))
                  for s in Session.objects.all()}
    assert by_session == {"https://idp.example.test": [""],
                          "https://idp.example.test#proxy=mcp-server": ["mcp-server", "mcp-server"],
                          "https://idp.example.test#proxy=other": ["other"]}
