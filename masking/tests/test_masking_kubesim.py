"""Real response bodies from kubesim (the API server double) through the maskers.

Every shape kubectl and client-go ask for, with kubesim's seeded secrets: nothing seeded may
survive, in any encoding, however the body is chunked.
"""

import base64
import json
import random
import ssl

import httpx

from kube.requestinfo import parse
from masking import Detectors, response_masker

SEEDS = [
    "s3cr3t-db-password-4f9a",
    "sk_live_kubesim_51f0c2e9",
    "jwt-signing-key-b7d1",
    "m4il-p4ss-7c1e",
    "sa-token-deployer-8b2c",
    "kubesim-aws-secret-2d7f",
    "pay-db-pass-61c3",
]
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"
WATCH_LIST = "watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"

REQUESTS = [
    ("GET", "/api/v1/secrets", "", "application/json", None),
    ("GET", "/api/v1/namespaces/shop/secrets", "", TABLE, None),
    ("GET", "/api/v1/namespaces/shop/secrets", "includeObject=Object", TABLE, None),
    ("GET", "/api/v1/namespaces/shop/secrets", "", METADATA_LIST, None),
    ("GET", "/api/v1/namespaces/shop/secrets/shop-db", "", "application/json", None),
    ("GET", "/api/v1/secrets", WATCH_LIST, "application/json", None),
    ("GET", "/api/v1/namespaces/shop/secrets", "watch=true&timeoutSeconds=1", TABLE, None),
    ("GET", "/api/v1/namespaces/shop/configmaps/web-config", "", "application/json", None),
    ("GET", "/apis/apps/v1/deployments", "", "application/json", None),
    ("GET", "/api/v1/pods", "", "application/json", None),
    ("GET", "/api/v1/namespaces/payments/events", "", "application/json", None),
    ("POST", "/api/v1/namespaces/shop/serviceaccounts/default/token", "", "application/json",
     {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": ["api"]}}),
    ("POST", "/api/v1/namespaces/shop/secrets", "dryRun=All", "application/json",
     {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "new"}, "stringData": {"p": "s3cr3t-db-password-4f9a"}}),
    ("DELETE", "/api/v1/namespaces/payments/secrets/payments-db", "", "application/json", None),
    ("DELETE", "/api/v1/namespaces/shop/secrets", "", "application/json", None),
]


def forms(value: str) -> list[bytes]:
    return [value.encode(), base64.b64encode(value.encode()), json.dumps(value).encode()[1:-1]]


def masked(info, response: httpx.Response, rnd: random.Random) -> bytes:
    masker = response_masker(
        info, response.status_code, response.headers.get("content-type"), mask_secrets=True, detectors=Detectors.default()
    )
    body = response.content
    if masker is None:
        return body
    cuts = sorted(rnd.sample(range(1, len(body)), min(len(body) - 1, 25))) if len(body) > 1 else []
    out, prev = [], 0
    for cut in cuts + [len(body)]:
        out.append(masker.feed(body[prev:cut]))
        prev = cut
    out.append(masker.close())
    return b"".join(out)


def test_kubesim_responses_carry_no_seeded_secret_after_masking(kubesim):
    rnd = random.Random(5)
    headers = {"Authorization": f"Bearer {kubesim.admin_token}"}
    seen_unmasked = set()
    with httpx.Client(base_url=kubesim.url, verify=ssl.create_default_context(cafile=str(kubesim.ca_file)), headers=headers, timeout=30) as client:
        for method, path, query, accept, body in REQUESTS:
            response = client.request(
                method, path + ("?" + query if query else ""), headers={"Accept": accept},
                content=json.dumps(body).encode() if body is not None else None,
            )
            assert response.status_code < 300, (path, response.status_code)
            assert response.headers["content-type"].startswith("application/json")
            seen_unmasked.update(seed for seed in SEEDS if any(f in response.content for f in forms(seed)))
            out = masked(parse(method, path, query), response, rnd)
            for seed in SEEDS:
                for form in forms(seed):
                    assert form not in out, (method, path, query, seed)
        logs = client.get("/api/v1/namespaces/shop/pods", params={"labelSelector": "app=cart"}).json()["items"]
        pod = logs[0]["metadata"]["name"]
        response = client.get(f"/api/v1/namespaces/shop/pods/{pod}/log")
        assert b"s3cr3t-db-password-4f9a" in response.content
        out = masked(parse("GET", f"/api/v1/namespaces/shop/pods/{pod}/log", ""), response, rnd)
        assert b"s3cr3t-db-password-4f9a" not in out and b"cart service ready" in out
    assert len(seen_unmasked) >= 6  # the test looked at bodies that did carry the seeds
