"""Which masker a response gets (response_masker), decided before any body byte is sent."""

import pytest

from kube.requestinfo import parse
from masking import Detectors, MaskingError, TextMasker, response_masker, text_stream_masker
from masking.jsonstream import JsonMasker
from masking.responses import TextBodyMasker

ON = Detectors.default()
OFF = Detectors.none()


def pick(method, path, query="", status=200, ctype="application/json", mask_secrets=True, detectors=ON):
    return response_masker(parse(method, path, query), status, ctype, mask_secrets=mask_secrets, detectors=detectors)


@pytest.mark.parametrize("status", [101, 204, 304])
def test_responses_without_a_body(status):
    assert pick("GET", "/api/v1/namespaces/shop/secrets", status=status, ctype=None) is None


@pytest.mark.parametrize("path", ["/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1", "/version", "/openapi/v2", "/openapi/v3/apis/apps/v1", "/healthz", "/readyz/etcd"])
def test_discovery_is_not_masked(path):
    assert pick("GET", path, ctype="application/com.github.proto-openapi.spec.v2@v1.0+protobuf") is None


def test_other_non_resource_paths_get_text_detectors():
    assert isinstance(pick("GET", "/metrics", ctype="text/plain"), TextBodyMasker)
    assert isinstance(pick("GET", "/logs/kube-apiserver.log", ctype="text/plain"), TextBodyMasker)
    assert pick("GET", "/metrics", ctype="text/plain", detectors=OFF) is None


def test_pod_logs_are_text_and_their_errors_json():
    assert isinstance(pick("GET", "/api/v1/namespaces/shop/pods/p/log", "follow=true", ctype="text/plain"), TextBodyMasker)
    assert isinstance(pick("GET", "/api/v1/namespaces/shop/pods/p/log", ctype="application/json"), TextBodyMasker)
    assert isinstance(pick("GET", "/api/v1/namespaces/shop/pods/p/log", status=400), JsonMasker)


def test_proxy_subresources_get_text_detectors():
    assert isinstance(pick("GET", "/api/v1/namespaces/shop/services/web/proxy/index.html", ctype="text/html"), TextBodyMasker)
    assert isinstance(pick("GET", "/api/v1/namespaces/shop/pods/p:8080/proxy/", ctype=None), TextBodyMasker)


def test_stream_subresource_errors():
    assert isinstance(pick("GET", "/api/v1/namespaces/shop/pods/p/exec", "command=ls", status=400), JsonMasker)
    assert isinstance(pick("POST", "/api/v1/namespaces/shop/pods/p/exec", status=400, ctype="text/plain"), TextBodyMasker)


def test_every_other_resource_must_be_json():
    for path in ("/api/v1/namespaces/shop/configmaps", "/apis/example.com/v1/widgets", "/api/v1/namespaces/shop/pods/p/status"):
        assert isinstance(pick("GET", path), JsonMasker)
        with pytest.raises(MaskingError):
            pick("GET", path, ctype="application/vnd.kubernetes.protobuf")


def test_nothing_to_mask_when_unmasked_and_no_detectors():
    assert pick("GET", "/api/v1/namespaces/shop/secrets", mask_secrets=False, detectors=OFF) is None
    with pytest.raises(MaskingError):
        pick("GET", "/api/v1/namespaces/shop/secrets", mask_secrets=False, detectors=OFF, ctype="application/vnd.kubernetes.protobuf")


def test_watch_gets_a_stream_masker():
    masker = pick("GET", "/api/v1/secrets", "watch=true")
    out = masker.feed(b'{"type":"ADDED","object":{"kind":"Secret","data":{"a":"eA=="}}}{"type":"DELETED"')
    assert out.count(b"\n") == 1


def test_text_stream_masker_is_a_text_masker():
    assert isinstance(text_stream_masker(ON), TextMasker)
