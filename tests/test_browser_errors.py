"""The browser fixture's error handler: a replaced node is a stale element, nothing else changes."""

import json

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException

from tests.browser import StaleAwareErrors


def chromedriver_answer(error: str, message: str) -> dict:
    """What selenium's remote connection hands the error handler for a failed W3C command."""
    return {"status": 500, "value": json.dumps({"value": {"error": error, "message": message, "stacktrace": ""}})}


def test_a_node_the_page_replaced_is_reported_as_stale():
    inspector = ('unknown error: unhandled inspector error: {"code":-32000,'
                 '"message":"Node with given id does not belong to the document"}')
    with pytest.raises(StaleElementReferenceException, match="does not belong to the document"):
        StaleAwareErrors().check_response(chromedriver_answer("unknown error", inspector))


def test_other_errors_keep_their_kind():
    with pytest.raises(WebDriverException) as other:
        StaleAwareErrors().check_response(chromedriver_answer("unknown error", "unknown error: session deleted"))
    assert type(other.value) is WebDriverException
    with pytest.raises(NoSuchElementException):
        StaleAwareErrors().check_response(chromedriver_answer("no such element", "no such element: #approve"))
    StaleAwareErrors().check_response({"status": 0, "value": None})
