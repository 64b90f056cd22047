"""Which Secret detectors a request is masked with: its rule's configuration, else its
connection's, else the gateway's default; each configuration is parsed once per process.

Apart from the stages because admission (the recorded URI), the HTTP answer and the WebSocket
relay all ask, and the cache of parsed configurations is the gateway's.
"""

import json

import masking
from kube.status import GatewayError


class DetectorChoice:
    def __init__(self, default: masking.Detectors | None = None):
        self.default = default if default is not None else masking.Detectors.default()
        self._configured: dict[str, masking.Detectors] = {}

    def for_request(self, upstream, decision) -> masking.Detectors:
        """The rule's detector configuration, else the connection's, else the default; 503 if invalid."""
        key = (decision.detectors if decision is not None else "") or upstream.detectors
        if not key:
            return self.default
        detectors = self._configured.get(key)
        if detectors is None:
            try:
                detectors = masking.Detectors.from_config(json.loads(key))
            except (ValueError, masking.DetectorConfigError):
                raise GatewayError(503, "airlock: the masking configuration is invalid") from None
            self._configured[key] = detectors
        return detectors

    def for_uri(self, upstream, decision) -> masking.Detectors | None:
        """What the request URI is recorded with; None (its path only) while the configuration is invalid."""
        try:
            return self.for_request(upstream, decision)
        except GatewayError:
            return None
