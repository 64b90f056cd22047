"""The real gateway with an approvals Holder in front of kubesim; a review rule holds deployment deletes."""

import os
import shutil
import subprocess
import time

import pytest
from django.conf import settings

from tests.gateway_harness import AGENT_TOKENS


@pytest.fixture
def hold_timeout():
    return 60.0


@pytest.fixture
def gateway_app(hold_timeout):
    from approvals.hold import Holder
    from audit.recorder import Recorder
    from connections.registry import get_upstream
    from gateway.authn import AuthenticatorChain, StaticTokenAuthenticator
    from gateway.policy import PolicyCache
    from gateway.proxy import GatewayApp

    return GatewayApp(
        prefix=settings.AIRLOCK_GATEWAY_PREFIX,
        connections=get_upstream,
        authenticator=AuthenticatorChain(static=StaticTokenAuthenticator(AGENT_TOKENS)),
        policy=PolicyCache(max_age=0),
        recorder=Recorder(),
        max_body=settings.AIRLOCK_MAX_REQUEST_BODY,
        holder=Holder(timeout=hold_timeout, poll_interval=0.2),
    )


@pytest.fixture
def review_deletes(cluster_connection):
    from gateway.models import Rule

    return Rule.objects.create(
        connection=cluster_connection, order=5, name="review-deployment-deletes", effect="review",
        groups=["agents"], verbs=["delete"], api_groups=["apps"], resources=["deployments"], namespaces=["*"],
        names=["*"],
    )


@pytest.fixture
def agent(gateway, kubectl, review_deletes):
    """kubectl with the agent's kubeconfig (through the gateway)."""
    path = gateway.kubeconfig()

    def run(*args, **kwargs):
        return kubectl(*args, kubeconfig=path, **kwargs)

    run.popen = lambda *args: kubectl.popen(*args, kubeconfig=path)
    run.kubeconfig = path
    return run


def wait_for_review(state="pending", timeout=30.0, **filters):
    """The newest review in this state (the gateway thread writes it to the shared test database)."""
    from approvals.models import Review

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        review = Review.objects.filter(state=state, **filters).order_by("-id").first()
        if review is not None:
            return review
        time.sleep(0.05)
    raise AssertionError(f"no {state} review appeared within {timeout}s")


def ensure_chromium():
    """Debian's chromium and chromedriver; installed with apt-get when missing (CI runs as root)."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"], check=True, env=env,
                   stdout=subprocess.DEVNULL)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
                 "--disable-extensions", "--disable-sync", "--no-first-run", "--metrics-recording-only",
                 "--ignore-certificate-errors", f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


class Airlock:
    """The whole app in one server, as airlock/asgi.py routes it: gateway, dashboard, API, WebSockets."""

    def __init__(self, url, gateway):
        self.url = url
        self.gateway = gateway

    def kubeconfig(self, *args, **kwargs):
        return self.gateway.kubeconfig(*args, **kwargs)


@pytest.fixture
def airlock(cluster_connection, gateway_app, review_deletes, tmp_path):
    """Like the harness's ``gateway`` fixture, with Django and the dashboard socket behind the same port."""
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
    from django.core.asgi import get_asgi_application

    from approvals.routing import websocket_application
    from kubesim.certs import generate_tls
    from tests.gateway_harness import Gateway, ThreadedServer, allow_everything_for

    allow_everything_for(cluster_connection)
    django_http = ASGIStaticFilesHandler(get_asgi_application())

    async def application(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"].startswith(settings.AIRLOCK_GATEWAY_PREFIX):
            await gateway_app(scope, receive, send)
        elif scope["type"] == "http":
            await django_http(scope, receive, send)
        else:
            await websocket_application(scope, receive, send)

    directory = tmp_path / "airlock"
    tls = generate_tls(directory / "tls")
    server = ThreadedServer(application, tls)
    server.start()
    url = f"https://127.0.0.1:{server.port}"
    try:
        yield Airlock(url, Gateway(url=url, ca_file=tls.ca_file, connection=cluster_connection, directory=directory))
    finally:
        server.stop()
