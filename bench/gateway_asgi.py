"""The production ASGI application with another upstream HTTP client, for the client comparison.

``BENCH_UPSTREAM_CLIENT`` names an entry of gateway.upstream.TRANSPORTS.
"""

import os

from airlock.asgi import application, gateway
from gateway.upstream import TRANSPORTS, UpstreamPool

gateway.pool = UpstreamPool(new_transport=TRANSPORTS[os.environ["BENCH_UPSTREAM_CLIENT"]])

__all__ = ["application"]
