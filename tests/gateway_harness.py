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


def closing_on_shutdown(app, seen=None):
    """``app`` with ASGI lifespan: startup starts its recorder, shutdown closes its upstream pool and audit
    recorder, as airlock.asgi does.

    ``seen`` (a list) collects every request and stream the app was handed.
    """

    async def application(scope, receive, send):
        if scope["type"] != "lifespan":
            if seen is not None:
                seen.append(scope["type"])
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await app.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await app.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

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
    from gateway.models import Rule

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
    from connections import registry
    from connections.models import Connection

    registry.clear()
    connection = Connection(name="kubesim", server_url=kubesim.url, ca_bundle=Path(kubesim.ca_file).read_text())
    connection.bearer_token = kubesim.admin_token
    connection.full_clean()
    connection.save()
    yield connection
    registry.clear()


def make_gateway_app(authenticator=None, **options):
    """A GatewayApp as production builds it, with test-friendly caches (rule edits apply at once)."""
    from audit.recorder import Recorder
    from connections.registry import get_upstream
    from identity.chain import AuthenticatorChain
    from identity.static import StaticTokenAuthenticator
    from gateway.policy import PolicyCache
    from gateway.app import GatewayApp
    from gateway.secretvalues import SecretValueStores

    options.setdefault("secret_values", SecretValueStores.from_settings())
    return GatewayApp(
        prefix=settings.AIRLOCK_GATEWAY_PREFIX,
        connections=get_upstream,
        authenticator=authenticator or AuthenticatorChain(static=StaticTokenAuthenticator(AGENT_TOKENS)),
        policy=PolicyCache(max_age=0),
        recorder=options.pop("recorder", None) or Recorder(),
        max_body=settings.AIRLOCK_MAX_REQUEST_BODY,
        **options,
    )


@pytest.fixture
def gateway_app():
    return make_gateway_app()


@contextmanager
def serving(app, connection, directory: Path):
    """The gateway ``app`` on TLS in a thread; on exit it shuts down (flushing the recorder)
    and checks that every request or stream it handled left exactly one audit event."""
    tls = generate_tls(directory / "tls")
    seen = []
    server = ThreadedServer(closing_on_shutdown(app, seen), tls)
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
