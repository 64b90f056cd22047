"""pytest plugin (root conftest.py): a headless Chromium and the whole Airlock app on one live port.

* ``browser``: a selenium WebDriver on Debian's chromium and chromedriver (never a downloaded
  browser), installed with apt-get when missing, with a fresh profile per test.  An element the
  page replaced under the test is always reported as stale (see ``StaleAwareErrors``); ``steady``
  retries a read or an action until the page holds still long enough for it.
* ``live_airlock``: the whole application (the harness's ``gateway_app``, built by
  airlock.app.make_application: the gateway, Django's pages, static files and WebSockets) behind
  one uvicorn TLS port, in a thread of the test process so it shares the test database.  Its
  lifespan shutdown flushes the audit recorder.  Tests using it need ``django_db(transaction=True)``.
"""

import os
import shutil
import subprocess
from dataclasses import dataclass

import pytest
from selenium.common.exceptions import (
    NoSuchElementException, StaleElementReferenceException, WebDriverException,
)
from selenium.webdriver.remote.errorhandler import ErrorHandler
from selenium.webdriver.support.ui import WebDriverWait

from tests.gateway_harness import Gateway, ThreadedServer, allow_everything_for

CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
    "--disable-extensions", "--disable-sync", "--no-first-run", "--metrics-recording-only",
    # The live server's certificate comes from a throw-away test CA.
    "--ignore-certificate-errors", "--window-size=1280,900",
)


STEADY_WAIT = 30


class StaleAwareErrors(ErrorHandler):
    """chromedriver sometimes reports an element the page has just replaced as an "unknown error"
    (the DevTools inspector's "Node with given id does not belong to the document") instead of a
    stale element reference.  The dashboard re-renders its queue, status and preview over a
    WebSocket, so a test can hold such a node; report it as what it is, so waits retry it."""

    def check_response(self, response):
        try:
            super().check_response(response)
        except WebDriverException as error:
            if type(error) is WebDriverException and "does not belong to the document" in (error.msg or ""):
                raise StaleElementReferenceException(error.msg) from error
            raise


def steady(driver, action, timeout=STEADY_WAIT):
    """``action(driver)``'s result once it runs without its element being replaced or missing."""
    outcome = []

    def attempt(d):
        outcome.append(action(d))
        return True

    WebDriverWait(driver, timeout, ignored_exceptions=[NoSuchElementException, StaleElementReferenceException]).until(
        attempt
    )
    return outcome[-1]


def ensure_chromium() -> None:
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
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))
    driver.error_handler = StaleAwareErrors()
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@dataclass
class LiveAirlock:
    url: str
    gateway: Gateway
    server: ThreadedServer

    def kubeconfig(self, *args, **kwargs):
        return self.gateway.kubeconfig(*args, **kwargs)

    def stop(self) -> None:
        """Shut down cleanly (idempotent): the lifespan shutdown writes every queued audit event."""
        if self.server.thread.is_alive():
            self.server.stop()


@pytest.fixture
def live_airlock(cluster_connection, gateway_app, tmp_path):
    """The whole app on one TLS port in front of kubesim; group "agents" may do everything."""
    from kubesim.certs import generate_tls

    allow_everything_for(cluster_connection)
    directory = tmp_path / "airlock"
    tls = generate_tls(directory / "tls")
    server = ThreadedServer(gateway_app, tls)
    server.start()
    url = f"https://127.0.0.1:{server.port}"
    live = LiveAirlock(url, Gateway(url=url, ca_file=tls.ca_file, connection=cluster_connection,
                                    directory=directory), server)
    try:
        yield live
    finally:
        live.stop()
