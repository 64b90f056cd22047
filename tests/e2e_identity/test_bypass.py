"""Bypass suite: every forbidden action, tried in every alternative form, is refused and never reaches the cluster.

The real gateway (uvicorn, TLS) in front of kubesim; the agent ``viewer-1`` (group ``viewers``,
development static token) may do everything except what the rules below forbid.  Requests go out
byte for byte (tests/e2e_identity/rawhttp.py), so nothing normalises the path, the method or the
headers on the way.  Each form must be answered with the expected refusal (403 naming the rule,
or 400 before policy) and kubesim's request log must show that it was not forwarded.
"""

import re

import pytest

from gateway.secretvalues import USER_AGENT
from kubesim.requestlog import header
from policy.presets import DISCOVERY_URLS
from tests.e2e_identity import rawhttp

pytestmark = pytest.mark.django_db(transaction=True)

VIEWER_TOKEN = "viewer-token-2b9d"  # viewer-1, group viewers (tests.gateway_harness.AGENT_TOKENS)
SHOP = "/api/v1/namespaces/shop"
PAYMENTS = "/api/v1/namespaces/payments"
SECRET = f"{SHOP}/secrets/shop-db"
SECRETS = f"{SHOP}/secrets"
WEB = "/apis/apps/v1/namespaces/shop/deployments/web"
EXEC = f"{PAYMENTS}/pods/debug-shell/exec"
EXEC_QUERY = "?command=sh&stdin=true&stdout=true&tty=true"
WATCH_VALUES = ("1", "true", "TRUE", "", "yes")

RULES = [
    dict(name="no-shop-secrets", order=10, effect="deny", verbs=["get", "list", "watch"], api_groups=[""],
         resources=["secrets"], namespaces=["shop"], names=["*"]),
    dict(name="keep-web", order=20, effect="deny", verbs=["delete"], api_groups=["apps"],
         resources=["deployments"], namespaces=["shop"], names=["web"]),
    dict(name="no-exec", order=30, effect="deny", verbs=["create"], api_groups=[""], resources=["pods/exec"],
         namespaces=["*"], names=["*"]),
    dict(name="no-proxy", order=40, effect="deny", verbs=["*"], api_groups=[""], resources=["*/proxy"],
         namespaces=["*"], names=["*"]),
    dict(name="no-cluster-wide-pods", order=50, effect="deny", verbs=["list", "watch"], api_groups=[""],
         resources=["pods"], namespaces=[""], names=["*"]),
    dict(name="keep-payments", order=60, effect="deny", verbs=["delete", "deletecollection", "update", "patch"],
         api_groups=["*"], resources=["*"], namespaces=["payments"], names=["*"]),
    dict(name="no-payments-events", order=70, effect="deny", verbs=["get", "list", "watch"], api_groups=[""],
         resources=["events"], namespaces=["payments"], names=["*"]),
    dict(name="viewers-everything-else", order=1000, effect="allow", verbs=["*"], api_groups=["*"],
         resources=["*", "*/*"], namespaces=["*"], names=["*"]),
    dict(name="viewers-discovery", order=1010, effect="allow", verbs=["get", "head"],
         non_resource_urls=DISCOVERY_URLS),
]


@pytest.fixture
def probe(gateway, kubesim):
    """probe(method, path, headers=(), prefix=True) -> the raw Response, with ``forwarded`` kubesim records."""
    from policy.models import Rule

    for fields in RULES:
        Rule.objects.create(connection=gateway.connection, groups=["viewers"], **fields)
    port = int(gateway.url.rsplit(":", 1)[1])
    prefix = f"/k8s/{gateway.connection.name}"

    def send(method, path, headers=(), *, token=VIEWER_TOKEN, prefixed=True, body=b""):
        before = len(kubesim.requests())
        auth = [("Authorization", f"Bearer {token}")] if token else []
        response = rawhttp.request("127.0.0.1", port, gateway.ca_file, method, (prefix if prefixed else "") + path,
                                   [*auth, *headers], body)
        # The gateway's own list and watch of Secrets (masking by value) is not the agent's request.
        response.forwarded = [r for r in kubesim.requests()[before:] if header(r, "user-agent") != [USER_AGENT]]
        return response

    return send


_RULE = re.compile(r'by rule "([^"]+)"')


def outcome(response, method="GET"):
    """("403", rule) for a policy refusal, ("400", None) for a refusal before policy, else the status.

    A HEAD response has no body, so only its status code can be compared (rule "?").
    """
    if method.upper() == "HEAD":
        return (str(response.status), "?" if response.status == 403 else None)
    status = response.status_object()
    if status is None:
        return (f"{response.status} (no Status)", None)
    if response.status == 403:
        found = _RULE.search(status["message"])
        return ("403", found.group(1) if found else status["message"])
    return (str(response.status), None)


def assert_refused(probe, forms, expected):
    """Try each form; fail listing every form that was not refused as expected or that reached kubesim."""
    failures = []
    for form in forms:
        method, path, *rest = form
        response = probe(method, path, rest[0] if rest else ())
        got = outcome(response, method)
        wanted = ("403", "?") if method == "HEAD" and expected[0] == "403" else expected
        if got != wanted or response.forwarded:
            reached = [f"{r['method']} {r['path']}?{r['query']}" for r in response.forwarded]
            failures.append(f"{method} {path}: {got}" + (f", reached kubesim as {reached}" if reached else ""))
    assert not failures, "\n".join(["not refused as expected:", *failures])


def test_reading_a_shop_secret(probe, kubesim):
    forms = [
        ("GET", SECRET), ("HEAD", SECRET), ("GET", SECRET + "/"),
        ("GET", SECRETS), ("HEAD", SECRETS), ("GET", SECRETS + "/"),
        ("GET", SECRETS + "?fieldSelector=metadata.name%3Dshop-db"),
        ("GET", SECRETS + "?fieldSelector=metadata.name=shop-db"),
        ("GET", SECRETS + "?fieldSelector=metadata.name%3D%3Dshop-db"),
        ("GET", SECRETS + "?fieldSelector=metadata.name%3Dshop-db,type%3DOpaque"),
        ("GET", SECRETS + "?labelSelector=app&fieldSelector=metadata.name%3Dshop-db"),
        ("GET", "/api/v1/watch/namespaces/shop/secrets/shop-db"),
        ("GET", "/api/v1/watch/namespaces/shop/secrets"),
        ("GET", "/api/v1/watch/namespaces/shop/secrets?fieldSelector=metadata.name%3Dshop-db"),
        *[("GET", f"{SECRETS}?watch={value}") for value in WATCH_VALUES],
        *[("GET", f"{SECRETS}?watch={value}&fieldSelector=metadata.name%3Dshop-db") for value in WATCH_VALUES],
        *[("GET", f"{SECRET}?watch={value}") for value in WATCH_VALUES],
        ("GET", SECRETS + "?watch=false&watch=true"),
        ("GET", SECRETS + "?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
                          "&allowWatchBookmarks=true"),
        ("GET", SECRETS + "?resourceVersion=0&limit=1"),
        ("GET", SECRET, [("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")]),
        ("GET", SECRET, [("X-HTTP-Method-Override", "PATCH")]),
        ("GET", SECRET + "#fragment"),  # the HTTP server drops a fragment: the same request
        # cluster-wide instead of namespaced: the list covers shop's secrets too
        ("GET", "/api/v1/secrets"),
        ("GET", "/api/v1/secrets/"),
        ("GET", "/api/v1/secrets?fieldSelector=metadata.namespace%3Dshop"),
        ("GET", "/api/v1/secrets?fieldSelector=metadata.name%3Dshop-db"),
        ("GET", "/api/v1/watch/secrets"),
        *[("GET", f"/api/v1/secrets?watch={value}") for value in WATCH_VALUES],
        # deletecollection answers with the objects it deleted
        ("DELETE", SECRETS + "?fieldSelector=metadata.name%3Dshop-db"),
        ("DELETE", "/api/v1/secrets?fieldSelector=metadata.namespace%3Dshop"),
    ]
    assert_refused(probe, forms, ("403", "no-shop-secrets"))
    allowed = probe("GET", f"{PAYMENTS}/secrets/payments-db")  # the rule is about shop only
    assert allowed.status == 200 and [r["path"] for r in allowed.forwarded] == [f"{PAYMENTS}/secrets/payments-db"]


def test_deleting_deployment_web(probe, kubectl):
    collection = "/apis/apps/v1/namespaces/shop/deployments"
    forms = [
        ("DELETE", WEB), ("DELETE", WEB + "/"), ("DELETE", WEB + "?propagationPolicy=Orphan"),
        ("DELETE", WEB + "?dryRun=All"),
        # other group-versions of the same resource
        ("DELETE", "/apis/apps/v1beta1/namespaces/shop/deployments/web"),
        ("DELETE", "/apis/apps/v1beta2/namespaces/shop/deployments/web"),
        ("DELETE", "/apis/extensions/v1beta1/namespaces/shop/deployments/web"),
        # deletecollection instead of delete
        ("DELETE", collection),
        ("DELETE", collection + "/"),
        ("DELETE", collection + "?labelSelector=app%3Dweb"),
        ("DELETE", collection + "?fieldSelector=metadata.name%3Dweb"),
        ("DELETE", "/apis/extensions/v1beta1/namespaces/shop/deployments?labelSelector=app%3Dweb"),
        ("DELETE", "/apis/apps/v1/deployments"),
        ("DELETE", "/apis/apps/v1/deployments?fieldSelector=metadata.name%3Dweb"),
        # deleting the namespace deletes everything in it
        ("DELETE", SHOP),
        ("DELETE", SHOP + "?propagationPolicy=Background"),
        ("DELETE", "/api/v1/namespaces"),
        ("DELETE", "/api/v1/namespaces?fieldSelector=metadata.name%3Dshop"),
    ]
    assert_refused(probe, forms, ("403", "keep-web"))
    kubectl("get", "deployment", "web", "-n", "shop")  # still there (cluster admin's view)
    scaled = probe("GET", WEB + "/scale")  # everything else stays allowed
    assert scaled.status == 200 and scaled.forwarded


def test_exec(probe):
    ws, spdy = rawhttp.websocket_headers, rawhttp.spdy_headers
    forms = [
        ("GET", EXEC + EXEC_QUERY, ws()),
        ("GET", EXEC + EXEC_QUERY, ws("v4.channel.k8s.io")),
        ("GET", EXEC + EXEC_QUERY, ws("base64.channel.k8s.io")),
        ("POST", EXEC + EXEC_QUERY, spdy()),
        ("POST", EXEC + EXEC_QUERY),
        ("GET", EXEC + EXEC_QUERY),
        ("HEAD", EXEC + EXEC_QUERY),
        ("PUT", EXEC + EXEC_QUERY),
        ("GET", EXEC + "/" + EXEC_QUERY, ws()),
        ("POST", EXEC + "/extra" + EXEC_QUERY, spdy()),
        ("GET", "/api/v1/watch/namespaces/payments/pods/debug-shell/exec" + EXEC_QUERY, ws()),
        ("GET", "/api/v1/namespaces/payments/pods/debug-shell/exec?command=sh&command=-c&command=id", ws()),
    ]
    assert_refused(probe, forms, ("403", "no-exec"))
    spdy_refusal = probe("POST", EXEC + EXEC_QUERY, spdy())
    assert "SPDY" not in spdy_refusal.status_object()["message"]  # policy first, transport second


def test_proxy(probe):
    forms = [
        ("GET", f"{SHOP}/pods/web-1/proxy/"),
        ("GET", f"{SHOP}/pods/web-1:80/proxy/metrics"),
        ("GET", f"{SHOP}/pods/https:web-1:443/proxy/"),
        *[(method, f"{SHOP}/pods/web-1/proxy/admin") for method in ("POST", "PUT", "PATCH", "DELETE", "HEAD")],
        ("GET", f"{SHOP}/services/web/proxy/"),
        ("GET", f"{SHOP}/services/http:web:80/proxy/x"),
        ("GET", "/api/v1/nodes/kubesim-node-1/proxy/metrics"),
        ("GET", "/api/v1/nodes/kubesim-node-1:10250/proxy/pods"),
        # the legacy proxy verb path
        ("GET", "/api/v1/proxy/namespaces/shop/pods/web-1/"),
        ("GET", "/api/v1/proxy/namespaces/shop/pods/web-1/admin/x"),
        ("POST", "/api/v1/proxy/namespaces/shop/services/web/api"),
        ("GET", "/api/v1/proxy/nodes/kubesim-node-1/metrics"),
        ("GET", "/api/v1/watch/namespaces/shop/pods/web-1/proxy"),
        ("GET", f"{SHOP}/pods/web-1/proxy/", rawhttp.websocket_headers("")),
    ]
    assert_refused(probe, forms, ("403", "no-proxy"))


def test_cluster_wide_pod_list(probe):
    forms = [
        ("GET", "/api/v1/pods"), ("HEAD", "/api/v1/pods"), ("GET", "/api/v1/pods/"),
        ("GET", "/api/v1/pods?limit=1"), ("GET", "/api/v1/pods?resourceVersion=0"),
        ("GET", "/api/v1/pods?fieldSelector=metadata.namespace%3Dshop"),
        ("GET", "/api/v1/pods?labelSelector=app%3Dweb"),
        ("GET", "/api/v1/pods", [("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")]),
        ("GET", "/api/v1/watch/pods"),
        *[("GET", f"/api/v1/pods?watch={value}") for value in WATCH_VALUES],
        ("DELETE", "/api/v1/pods"),
        ("DELETE", "/api/v1/pods?labelSelector=app%3Dweb"),
    ]
    assert_refused(probe, forms, ("403", "no-cluster-wide-pods"))
    for path in (f"{SHOP}/pods", f"{SHOP}/pods?watch=0", "/api/v1/namespaces/payments/pods?limit=1"):
        allowed = probe("GET", path)
        assert allowed.status == 200 and allowed.forwarded, path


def test_namespace_as_a_name(probe):
    forms = [
        ("DELETE", PAYMENTS),
        ("DELETE", PAYMENTS + "/"),
        ("PATCH", PAYMENTS, [("Content-Type", "application/merge-patch+json")]),
        ("PUT", PAYMENTS + "/finalize"),
        ("PUT", PAYMENTS + "/status"),
        ("DELETE", PAYMENTS + "/pods"),
        ("DELETE", "/apis/apps/v1/namespaces/payments/deployments/api"),
        ("DELETE", "/apis/apps/v1/namespaces/payments/deployments?labelSelector=app%3Dapi"),
        # cluster-wide deletecollections cover payments too
        ("DELETE", "/api/v1/configmaps?fieldSelector=metadata.namespace%3Dpayments"),
        ("DELETE", "/apis/batch/v1/jobs"),
    ]
    # Deleting every namespace is refused by keep-web (order 20) first: see test_deleting_deployment_web.
    assert_refused(probe, forms, ("403", "keep-payments"))
    allowed = probe("DELETE", f"{SHOP}/configmaps/web-config")
    assert allowed.status == 200 and allowed.forwarded


def test_api_group_aliases(probe):
    forms = [
        ("GET", f"{PAYMENTS}/events"),
        ("GET", "/apis/events.k8s.io/v1/namespaces/payments/events"),
        ("GET", "/apis/events.k8s.io/v1beta1/namespaces/payments/events"),
        ("GET", "/apis/events.k8s.io/v1/watch/namespaces/payments/events"),
        ("GET", "/apis/events.k8s.io/v1/events"),
        ("GET", "/api/v1/events?fieldSelector=metadata.namespace%3Dpayments"),
    ]
    assert_refused(probe, forms, ("403", "no-payments-events"))
    allowed = probe("GET", "/apis/events.k8s.io/v1/namespaces/shop/events")
    assert allowed.status == 200 and allowed.forwarded


IMPERSONATION = [
    ("Impersonate-User", "system:admin"),
    ("Impersonate-Group", "system:masters"),
    ("IMPERSONATE-GROUP", "agents"),
    ("impersonate-uid", "0"),
    ("Impersonate-Extra-Scopes", "cluster-admin"),
]
FRONT_PROXY = [("X-Remote-User", "system:admin"), ("X-Remote-Group", "system:masters")]


def test_client_impersonation_headers_gain_nothing(probe):
    """The principal comes from the token alone: any Impersonate-* header is a 403 naming impersonation,
    before policy, allowed request or not; X-Remote-* headers never reach the cluster."""
    for path in (SECRET, EXEC + EXEC_QUERY, f"{SHOP}/pods"):
        for asked in ([h] for h in IMPERSONATION):
            refused = probe("GET", path, asked + FRONT_PROXY)
            assert refused.status == 403 and not refused.forwarded, (path, asked)
            assert refused.status_object()["message"].startswith("airlock: impersonation is not allowed"), asked
    unauthenticated = probe("GET", f"{SHOP}/pods", IMPERSONATION, token=None)
    assert unauthenticated.status == 401 and not unauthenticated.forwarded

    allowed = probe("GET", f"{SHOP}/pods", FRONT_PROXY)
    assert allowed.status == 200
    [record] = allowed.forwarded
    assert record["user"] == "kubesim-admin"  # the gateway's own credential, nobody impersonated
    assert record["impersonated_user"] is None and record["impersonated_groups"] == []
    sent = {name.lower() for name, _ in record["headers"]}
    assert not [name for name in sent if name.startswith(("impersonate-", "x-remote-"))]


ENCODED_AND_DOTTED = [
    f"{SHOP}/secrets%2Fshop-db",
    f"{SHOP}/secrets%2fshop-db",
    f"{SECRET}%2F",
    f"{SHOP}/pods/%2e%2e/secrets/shop-db",
    f"{SHOP}/pods/%2E%2E/secrets",
    f"{SHOP}/pods/%2e/secrets",
    f"{SHOP}/pods/../secrets/shop-db",
    "/api/v1/namespaces/default/../shop/secrets",
    f"{SHOP}/./secrets/shop-db",
    f"{SHOP}/secrets/./shop-db",
    "//api/v1/namespaces/shop/secrets",
    "/api/v1//namespaces/shop/secrets",
    f"{SHOP}//secrets/shop-db",
    f"{SECRET}//",
    f"{SECRET}/.",
    f"{SECRET}/..",
    f"{SECRET}%00",
    f"{SECRET}%0a",
    f"{SECRET}%252F..",
    f"{SECRET}%5C..",
    f"{SECRET}\\..",
    f"{SECRET}%C0%AE",
    f"{SHOP}/secr%65ts/shop-db",
    f"{SHOP}/secrets/shop%2Ddb",
    # Kubernetes names, groups and versions are lower case; another spelling is never the same request
    f"{SHOP}/Secrets/shop-db",
    f"{SHOP}/SECRETS",
    "/api/v1/namespaces/SHOP/secrets/shop-db",
    "/api/V1/namespaces/shop/secrets",
    "/apis/APPS/v1/namespaces/shop/deployments/web",
    f"{PAYMENTS}/pods/debug-shell/Exec",
]


def test_encoded_dotted_and_mis_cased_paths_are_refused_before_policy(probe):
    failures = []
    for path in ENCODED_AND_DOTTED:
        for token in (VIEWER_TOKEN, None):  # 400 even without a token: parsing comes first
            response = probe("GET", path, token=token)
            if outcome(response) != ("400", None) or response.forwarded:
                failures.append(f"{path} (token: {bool(token)}): {outcome(response)}")
    assert not failures, "\n".join(failures)


def test_tricks_around_the_connection_prefix(probe):
    forms = [
        "/k8s/kubesim/../kubesim" + SECRET,
        "/k8s/kubesim/./" + SECRET.lstrip("/"),
        "/k8s//kubesim" + SECRET,
        "/k8s/kubesim%2F.." + SECRET,
        "/k8s/%6bubesim" + SECRET,
        "/K8S/kubesim" + SECRET,
        "/k8s/KUBESIM" + SECRET,
    ]
    failures = []
    for path in forms:
        response = probe("GET", path, prefixed=False)
        if response.status not in (400, 404) or response.status_object() is None or response.forwarded:
            failures.append(f"{path}: {outcome(response)}")
    assert not failures, "\n".join(failures)


def test_method_case_is_refused_by_the_http_server(probe):
    for method in ("get", "Get", "delete", "pOST"):
        response = probe(method, SECRET if method.lower() == "get" else WEB)
        assert response.status == 400 and not response.forwarded, method
