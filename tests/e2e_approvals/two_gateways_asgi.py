"""Entry point for the two-process test: the production router (airlock.asgi) with the approvals Holder.

gateway/asgi.py builds the gateway without a Holder until the proxy
integration passes one; this module gives the running gateway its Holder.
"""

from airlock.asgi import application, gateway
from approvals.hold import Holder

gateway.holder = Holder()

__all__ = ["application"]
