"""ASGI entry point, server-agnostic (uvicorn in production, daphne works too).

The application is built and wired by airlock.app.make_application (``/k8s/...`` to the gateway,
Django's pages to Django, the dashboard's WebSockets to Channels, any other path a Kubernetes
``Status`` 404: airlock.routing).  A served process also wants, once the application has started,
the gateway's drain in front of the server's SIGTERM and SIGINT (airlock.drain).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "airlock.settings")
django.setup()

from airlock.app import make_application  # noqa: E402
from airlock.drain import drain_on_signals  # noqa: E402

application = make_application(on_started=drain_on_signals)
