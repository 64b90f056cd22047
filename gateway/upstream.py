"""Connections to clusters: one pooled HTTP client per Connection version.

Kept behind this small interface so the HTTP client library can be swapped
(see bench/RESULTS.md for why httpx was measured against alternatives).
"""

import asyncio
import logging

import httpx

from gateway import wsclient

log = logging.getLogger(__name__)

# Watches and `logs -f` stay open for as long as the client wants: no read timeout.
TIMEOUT = httpx.Timeout(connect=10.0, read=None, write=30.0, pool=10.0)
LIMITS = httpx.Limits(max_connections=4096, max_keepalive_connections=256, keepalive_expiry=60.0)


class UpstreamPool:
    """HTTP clients keyed by the upstream's cache key, created lazily per event loop."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None):
        self._clients: dict[object, httpx.AsyncClient] = {}
        self._loop = None
        self._transport = transport

    def client(self, upstream) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._clients = {}
            self._loop = loop
        client = self._clients.get(upstream.cache_key)
        if client is None:
            client = httpx.AsyncClient(
                verify=upstream.ssl_context(),
                timeout=TIMEOUT,
                limits=LIMITS,
                http1=True,
                http2=False,
                follow_redirects=False,
                trust_env=False,
                transport=self._transport,
            )
            self._clients[upstream.cache_key] = client
        return client

    async def aclose(self):
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()


def websocket_url(upstream, target: str) -> str:
    base = upstream.server_url
    if base.startswith("https://"):
        base = "wss://" + base[len("https://"):]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://"):]
    return base + target


async def open_websocket(upstream, target: str, headers, subprotocols):
    """Open the upstream half of an exec/attach/port-forward relay."""
    url = websocket_url(upstream, target)
    return await wsclient.connect(
        url,
        ssl=upstream.ssl_context() if url.startswith("wss://") else None,
        headers=headers,
        subprotocols=subprotocols,
    )
