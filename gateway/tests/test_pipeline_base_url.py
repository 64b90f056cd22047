"""The address an agent reached the gateway at, for absolute links in what it is told."""

import pytest

from gateway.pipeline import base_url


@pytest.mark.parametrize("scope, headers, expected", [
    ({"scheme": "https"}, [("host", "127.0.0.1:8443")], "https://127.0.0.1:8443"),
    ({"scheme": "wss"}, [("host", "gw.example")], "https://gw.example"),
    ({"scheme": "http"}, [("host", "[::1]:8080")], "http://[::1]:8080"),
    ({"scheme": "https", "server": ("10.0.0.5", 8443)}, [], "https://10.0.0.5:8443"),
    # a Host that is not a plain host[:port] gives no base: the link is then the path alone
    ({"scheme": "https"}, [("host", "evil.example/phish?")], ""),
    ({"scheme": "https"}, [("host", "a@b")], ""),
    ({"scheme": "ftp"}, [("host", "gw")], ""),
])
def test_base_url(scope, headers, expected):
    assert base_url(scope, headers) == expected
