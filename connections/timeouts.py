"""A Connection's upstream timeouts and their defaults."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Timeouts:
    """A Connection's upstream timeouts in seconds (the model's fields; the proxy applies them).

    ``connect``: TCP and TLS; ``first_byte``: until the answer starts (connecting included), except
    for kube-apiserver's long-running requests; ``idle``: a stall inside an answer, except in long-running ones, and
    the bound on noticing a dead connection (TCP keepalive, :func:`gateway.upstream.keepalive_options`) for all.
    """

    connect: float = 10.0
    first_byte: float = 65.0
    idle: float = 30.0


DEFAULT_TIMEOUTS = Timeouts()
