"""Issue 6, done-when: `kubectl delete deployment` blocks until a reviewer decides in the dashboard.

Real kubectl against kubesim through the gateway; the reviewer drives the
dashboard in headless Chromium (Debian's chromium, no downloaded browser),
signs in through the real test IdP (OIDC authorization-code flow) or with a
Django account, watches the pending queue update live and decides.
"""

import subprocess

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from approvals.tests.factories import reviewer, reviewers_group
from tests.browser import steady
from tests.e2e_approvals.conftest import wait_for_review
from tests.idp.harness import IdP

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 30


def wait(driver):
    return WebDriverWait(driver, WAIT)


@pytest.fixture
def sso(airlock, settings):
    """A private IdP whose web client redirects to this server, and the dashboard configured for it."""
    reviewers_group()
    client = {"client_id": "airlock-dashboard", "client_secret": "dashboard-secret",
              "redirect_uris": [f"{airlock.url}/approvals/oidc/callback/"]}
    with IdP(clients=(client,), users={"rita": ["airlock-reviewers", "sre"]}) as idp:
        discovery = idp.discovery
        settings.OIDC_RP_CLIENT_ID = client["client_id"]
        settings.OIDC_RP_CLIENT_SECRET = client["client_secret"]
        settings.OIDC_OP_ISSUER = discovery["issuer"]
        settings.OIDC_OP_AUTHORIZATION_ENDPOINT = discovery["authorization_endpoint"]
        settings.OIDC_OP_TOKEN_ENDPOINT = discovery["token_endpoint"]
        settings.OIDC_OP_USER_ENDPOINT = discovery["userinfo_endpoint"]
        settings.OIDC_OP_JWKS_ENDPOINT = discovery["jwks_uri"]
        settings.OIDC_RP_SCOPES = "openid"
        settings.AUTHENTICATION_BACKENDS = [
            "approvals.auth.ReviewerOIDCBackend", "django.contrib.auth.backends.ModelBackend",
        ]
        yield idp


def sign_in_with_sso(driver, airlock, username):
    driver.get(f"{airlock.url}/approvals/")
    wait(driver).until(EC.element_to_be_clickable((By.ID, "sso-login"))).click()
    # The IdP's development login and consent pages: any password is accepted.
    wait(driver).until(EC.presence_of_element_located((By.NAME, "login"))).send_keys(username)
    driver.find_element(By.NAME, "password").send_keys("any-password")
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver).until(lambda d: d.current_url.startswith(airlock.url) or d.find_elements(By.CSS_SELECTOR, "button[autofocus]"))
    if not driver.current_url.startswith(airlock.url):
        driver.find_element(By.CSS_SELECTOR, "button[autofocus]").click()
    wait(driver).until(EC.presence_of_element_located((By.ID, "pending")))


def sign_in_with_password(driver, airlock, username, password):
    driver.get(f"{airlock.url}/approvals/")
    wait(driver).until(EC.presence_of_element_located((By.ID, "id_username"))).send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "#password-login button[type=submit]").click()
    wait(driver).until(EC.presence_of_element_located((By.ID, "pending")))


def open_live_review(driver, airlock):
    """The new review shows up in the already open queue (pushed over the WebSocket); open it."""
    review = wait_for_review()

    def click_link(d):
        # The queue is re-rendered whenever a review changes (its preview arriving, say).
        link = d.find_element(By.CSS_SELECTOR, f"#review-{review.pk} a")
        assert "delete deployments" in link.text
        link.click()
        return True

    WebDriverWait(driver, WAIT, ignored_exceptions=[NoSuchElementException, StaleElementReferenceException]).until(
        click_link
    )
    wait(driver).until(EC.presence_of_element_located((By.ID, "decision-form")))
    return review


def finish(proc, timeout=30):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def agent_delete(kubectl, airlock):
    return kubectl.popen("delete", "deployment", "web", "-n", "shop", "--wait=false",
                         kubeconfig=airlock.kubeconfig())


def test_reviewer_approves_in_the_dashboard_after_sso_login(airlock, sso, browser, kubectl):
    sign_in_with_sso(browser, airlock, "rita")
    assert "rita" in browser.find_element(By.TAG_NAME, "header").text
    proc = agent_delete(kubectl, airlock)
    review = open_live_review(browser, airlock)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.5)
    assert "agent-1" in browser.page_source and "review-deployment-deletes" in browser.page_source
    wait(browser).until(EC.presence_of_element_located((By.ID, "preview-summary")))
    assert steady(browser, lambda d: d.find_element(By.ID, "preview-summary").text) == "would delete deployments/web"
    assert "-  replicas: 2" in steady(browser, lambda d: d.find_element(By.ID, "preview-diff").text)
    steady(browser, lambda d: d.find_element(By.ID, "id_reason").send_keys("planned cleanup"))
    steady(browser, lambda d: d.find_element(By.ID, "approve").click())
    code, out, err = finish(proc)
    assert code == 0, err
    assert 'deployment.apps "web" deleted' in out
    gone = kubectl("get", "deployment", "web", "-n", "shop", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    wait(browser).until(EC.presence_of_element_located((By.ID, "review-state")))
    assert steady(browser, lambda d: d.find_element(By.ID, "review-state").text).lower() == "approved"
    review.refresh_from_db()
    assert (review.state, review.decided_by, review.reason) == ("approved", "rita", "planned cleanup")
    assert review.consumed_at is not None


def test_reviewer_denies_in_the_dashboard_with_an_account(airlock, browser, kubectl):
    reviewer("sam")
    sign_in_with_password(browser, airlock, "sam", "pw-sam")
    proc = agent_delete(kubectl, airlock)
    review = open_live_review(browser, airlock)
    steady(browser, lambda d: d.find_element(By.ID, "id_reason").send_keys("not during the freeze"))
    steady(browser, lambda d: d.find_element(By.ID, "deny").click())
    code, _, err = finish(proc)
    assert code != 0
    assert f"denied by sam (review {review.pk}): not during the freeze" in err
    kubectl("get", "deployment", "web", "-n", "shop")
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "review-state"), "DENIED"))


@pytest.mark.parametrize("hold_timeout", [1.0])
def test_timed_out_request_is_approved_later_and_the_retry_passes(airlock, browser, kubectl):
    reviewer("sam")
    sign_in_with_password(browser, airlock, "sam", "pw-sam")
    first = kubectl("delete", "deployment", "web", "-n", "shop", "--wait=false", kubeconfig=airlock.kubeconfig(),
                    check=False)
    review = wait_for_review()
    assert first.returncode != 0 and f"review {review.pk} is still pending" in first.stderr
    browser.get(f"{airlock.url}/approvals/reviews/{review.pk}/")
    wait(browser).until(EC.element_to_be_clickable((By.ID, "approve"))).click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "review-state"), "APPROVED"))
    retry = kubectl("delete", "deployment", "web", "-n", "shop", "--wait=false", kubeconfig=airlock.kubeconfig())
    assert 'deployment.apps "web" deleted' in retry.stdout
