"""The approve and deny buttons stay in view while a reviewer reads a long dry-run diff (headless Chromium)."""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from approvals import reviews
from approvals.tests.factories import connection, review_rule, reviewer
from approvals.tests.test_reviews import held
from tests.browser import steady
from tests.e2e_approvals.test_dashboard_chromium import sign_in_with_password, wait

pytestmark = pytest.mark.django_db(transaction=True)

LONG_DIFF = "--- deployments/web (current)\n+++ deployments/web (after)\n" + "".join(
    f"-  line{i}: old\n+  line{i}: new\n" for i in range(600)
)

VISIBLE = """
const box = arguments[0].getBoundingClientRect();
const x = box.left + box.width / 2, y = box.top + box.height / 2;
return box.top >= 0 && box.bottom <= window.innerHeight && document.elementFromPoint(x, y) === arguments[0];
"""


def test_decision_buttons_stay_in_view_on_a_long_diff(airlock, browser):
    review_rule(connection())
    review, _ = reviews.open_review(held())
    reviews.save_preview(review.pk, "would change deployments/web", LONG_DIFF, "")
    reviewer("sam")
    sign_in_with_password(browser, airlock, "sam", "pw-sam")
    browser.get(f"{airlock.url}/approvals/reviews/{review.pk}/")
    wait(browser).until(EC.presence_of_element_located((By.ID, "preview-diff")))
    height = steady(browser, lambda d: d.find_element(By.ID, "preview-diff").size["height"])
    assert height > 3 * browser.execute_script("return window.innerHeight")
    for fraction in (0, 0.5, 0.9):  # the top of the page, the middle of the diff, near its end
        browser.execute_script("window.scrollTo(0, arguments[0] * document.body.scrollHeight)", fraction)
        for button in ("approve", "deny"):
            shown = steady(browser, lambda d: d.execute_script(VISIBLE, d.find_element(By.ID, button)))
            assert shown, (button, fraction)
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight / 2)")
    steady(browser, lambda d: d.find_element(By.ID, "id_reason").send_keys("read it all"))
    steady(browser, lambda d: d.find_element(By.ID, "approve").click())
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "review-state"), "APPROVED"))
    review.refresh_from_db()
    assert (review.state, review.reason) == ("approved", "read it all")
