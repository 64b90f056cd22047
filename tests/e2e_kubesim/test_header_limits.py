"""kubesim takes request headers as kube-apiserver's Go server does: up to 1 MiB of them, in any
number of fields (aiohttp's defaults refuse more than 128 fields or a field over 8 KiB with a
plain-text 400, which the gateway, forwarding what Go would accept, turned into a 502)."""

import http.client
import json
import ssl

import pytest


@pytest.mark.parametrize("headers", [
    [(f"X-Field-{i}", "v") for i in range(1000)],
    [("X-Large", "a" * 100_000)],
], ids=["many-fields", "large-field"])
def test_headers_kube_apiserver_accepts_are_accepted(kubesim, headers):
    connection = http.client.HTTPSConnection("127.0.0.1", kubesim.port, timeout=15,
                                             context=ssl.create_default_context(cafile=str(kubesim.ca_file)))
    connection.putrequest("GET", "/version")
    connection.putheader("Authorization", f"Bearer {kubesim.admin_token}")
    for name, value in headers:
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 200, body[:200]
    assert "gitVersion" in json.loads(body)
