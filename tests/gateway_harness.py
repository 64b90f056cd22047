"""pytest fixtures that run the real gateway (uvicorn, TLS) in front of kubesim.

The gateway runs in a thread of the test process so that it shares the
test database (transactional_db) with the test itself.
"""

import socket
from contextlib import contextmanager
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
import yaml
from django.conf import settings

from airlock.server import HttpToolsProtocol
from kubesim.certs import generate_tls

AGENT_TOKEN = "agent-dev-token-7c1e"  # development static token, never a cluster credential
AGENT_TOKENS = f"{AGENT_TOKEN}=agent-1:agents|dev,viewer-token-2b9d=viewer-1:viewers"


class ThreadedServer:
    """uvicorn in a background thread on a pre-bound loopback socket, with production's read limits."""

    def __init__(self, app, tls, **options):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            lifespan="on",
            log_level="warning",
            http=HttpToolsProtocol,
            ws="wsproto",
            ssl_certfile=str(tls.cert_file),
            ssl_keyfile=str(tls.key_file),
            # A client that never closes its socket (websocket-client after the close handshake) would
            # otherwise hold the shutdown, and the recorder's flush, past stop()'s join.
            timeout_graceful_shutdown=3,
            proxy_headers=False,  # as docker-compose.yml: the peer is recorded, never X-Forwarded-For
            server_header=False,  # as docker-compose.yml: kube-apiserver's fields, no "server: uvicorn"
            **options,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self):
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("gateway did not start")
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


def counting_requests(app, seen: list):
    """``app`` (an airlock.app application, its lifespan included) noting in ``seen`` every request and
    stream it routes to the gateway."""
    prefix = settings.AIRLOCK_GATEWAY_PREFIX

    async def application(scope, receive, send):
        if scope["type"] != "lifespan" and scope["path"].startswith(prefix):
            seen.append(scope["type"])
        await app(scope, receive, send)

    return application


@dataclass
class Gateway:
    url: str
    ca_file: Path
    connection: object
    directory: Path

    def server_url(self, connection=None) -> str:
        return f"{self.url}/k8s/{connection or self.connection.name}"

    def kubeconfig(self, token=AGENT_TOKEN, name="agent") -> Path:
        """An agent kubeconfig: gateway URL and CA, an agent token; no cluster credential."""
        path = self.directory / f"{name}.kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "airlock", "cluster": {"server": self.server_url(), "certificate-authority": str(self.ca_file)}}],
                    "users": [{"name": name, "user": {"token": token}}],
                    "contexts": [{"name": "airlock", "context": {"cluster": "airlock", "user": name, "namespace": "default"}}],
                    "current-context": "airlock",
                }
            )
        )
        return path


def allow_everything_for(connection, group="agents"):
    from policy.models import Rule

    Rule.objects.create(
        connection=connection, order=10, name="agents-all", effect="allow", groups=[group],
        verbs=["*"], api_groups=["*"], resources=["*", "*/*"], namespaces=["*"], names=["*"],
    )
    Rule.objects.create(
        connection=connection, order=20, name="agents-non-resource", effect="allow", groups=[group],
        verbs=["*"], non_resource_urls=["*"],
    )


@pytest.fixture
def cluster_connection(kubesim, transactional_db):
    """A Connection to the running kubesim, holding its admin token."""
    from connections.models import Connection
    from connections.registry import ConnectionRegistry

    ConnectionRegistry.clear_all()
    connection = Connection(name="kubesim", server_url=kubesim.url, ca_bundle=Path(kubesim.ca_file).read_text())
    connection.bearer_token = kubesim.admin_token
    connection.full_clean()
    connection.save()
    yield connection
    ConnectionRegistry.clear_all()


def make_gateway_app(authenticator=None, *, hold=None, **overrides):
    """The whole application as production builds it (airlock.app.make_application), with test collaborators:
    the harness's static tokens, a policy cache that sees rule edits at once, budgets counted in this application's
    memory, no approvals sweeper, and no
    Holder (review rules refuse) unless ``hold`` gives its options (``{"timeout": 1.0, "poll_interval": 0.1}``).
    ``overrides`` replace any other collaborator (airlock.app.COLLABORATORS)."""
    from airlock.app import make_application
    from approvals.hold import Holder
    from connections.registry import ConnectionRegistry
    from gateway.budgets import Budgets
    from policy.budgets import loop_setting
    from policy.cache import PolicyCache
    from identity.chain import AuthenticatorChain
    from identity.static import StaticTokenAuthenticator

    registry = overrides.setdefault("registry", ConnectionRegistry())
    # Budgets as production counts them, but in this application's memory: the suite's gateways (and its
    # parallel workers) must not share counters through REDIS_URL.
    overrides.setdefault("budgets", Budgets(loop=loop_setting(settings.AIRLOCK_BUDGET_LOOP)))
    overrides.setdefault("holder", Holder(connections=registry, **hold) if hold is not None else None)
    overrides.setdefault("policy", PolicyCache(max_age=0))
    overrides.setdefault("sweeper", None)
    return make_application(
        authenticator=authenticator or AuthenticatorChain(static=StaticTokenAuthenticator(AGENT_TOKENS)), **overrides)


@pytest.fixture
def gateway_app():
    return make_gateway_app()


@contextmanager
def serving(app, connection, directory: Path):
    """The application ``app`` (make_gateway_app) on TLS in a thread; on exit it shuts down (flushing the recorder)
    and checks that every request or stream it handled left exactly one audit event."""
    tls = generate_tls(directory / "tls")
    seen = []
    server = ThreadedServer(counting_requests(app, seen), tls)
    server.start()
    try:
        yield Gateway(url=f"https://127.0.0.1:{server.port}", ca_file=tls.ca_file, connection=connection,
                      directory=directory)
    finally:
        server.stop()
    assert_one_event_per_request(len(seen))


@pytest.fixture
def gateway(cluster_connection, gateway_app, tmp_path):
    """The gateway on TLS in front of kubesim; group "agents" may do everything."""
    allow_everything_for(cluster_connection)
    with serving(gateway_app, cluster_connection, tmp_path / "gateway") as running:
        yield running


def assert_one_event_per_request(handled: int):
    from audit.models import AuditEvent

    recorded = AuditEvent.objects.filter(stage="ResponseComplete").count()
    assert recorded == handled, f"{handled} requests through the gateway, {recorded} completion events"


@pytest.fixture(params=["direct", "gateway"])
def route(request, kubesim, kubectl):
    """Run a test against kubesim directly, then again through the gateway.

    Returns the kubeconfig to use; the ``kubectl`` fixture is switched to it.
    Modules using it need ``pytest.mark.django_db(transaction=True)``:
    pytest-django only creates test databases for tests marked at collection.
    """
    if request.param == "direct":
        return kubesim.kubeconfig
    kubectl.kubeconfig = request.getfixturevalue("gateway").kubeconfig()
    return kubectl.kubeconfig
