"""The production ASGI application with another upstream HTTP client, for the client comparison.

``BENCH_UPSTREAM_CLIENT`` names an entry of gateway.upstream.TRANSPORTS.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "airlock.settings")
django.setup()

from airlock.app import make_application  # noqa: E402
from airlock.drain import drain_on_signals  # noqa: E402
from gateway.upstream import TRANSPORTS, UpstreamPool  # noqa: E402

application = make_application(pool=UpstreamPool(new_transport=TRANSPORTS[os.environ["BENCH_UPSTREAM_CLIENT"]]),
                               on_started=drain_on_signals)

__all__ = ["application"]
