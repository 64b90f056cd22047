"""TokenRequest tokens: only ``status.token`` differs between the recorded and the released response."""

import json

import pytest

from kube.requestinfo import parse
from masking import PLACEHOLDER, Detectors, response_masker
from masking.tokens import is_token_request, release

TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2hvcDpkZXBsb3llciJ9.c2lnbmF0dXJl"
PATH = "/api/v1/namespaces/shop/serviceaccounts/deployer/token"


def answer(**status):
    return json.dumps({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": "deployer", "namespace": "shop", "annotations": {"note": "password=hunter2hunter2"}},
        "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600},
        "status": status,
    }).encode()


def masked(raw):
    masker = response_masker(parse("POST", PATH, ""), 201, "application/json", mask_secrets=True,
                             detectors=Detectors.default())
    return masker.feed(raw) + masker.close()


def test_is_token_request():
    assert is_token_request(parse("POST", PATH, ""))
    assert not is_token_request(parse("GET", "/api/v1/namespaces/shop/serviceaccounts/deployer", ""))
    assert not is_token_request(parse("POST", "/api/v1/namespaces/shop/serviceaccounts", ""))


def test_release_keeps_the_final_newline():
    raw = answer(token=TOKEN, expirationTimestamp="2030-01-01T00:00:00Z")
    assert release(masked(raw) + b"\n", raw).endswith(b"}\n")
    assert release(masked(raw).rstrip(b"\n"), raw).endswith(b"}")


def test_release_puts_back_the_token_and_nothing_else():
    raw = answer(token=TOKEN, expirationTimestamp="2030-01-01T00:00:00Z")
    recorded = masked(raw)
    assert TOKEN not in recorded.decode() and b"hunter2hunter2" not in recorded
    shown = json.loads(release(recorded, raw))
    kept = json.loads(recorded)
    assert shown["status"]["token"] == TOKEN and kept["status"]["token"] == PLACEHOLDER
    shown["status"]["token"] = PLACEHOLDER
    assert shown == kept  # the annotation's password stays masked


@pytest.mark.parametrize("raw", [
    json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}).encode(),
    answer(expirationTimestamp="2030-01-01T00:00:00Z"),  # no token
])
def test_nothing_to_release(raw):
    assert release(masked(raw), raw) is None


def test_a_masked_body_that_is_not_json_releases_nothing():
    assert release(b"not json", answer(token=TOKEN)) is None
