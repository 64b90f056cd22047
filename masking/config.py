"""A connection's free-text detector configuration (``Connection.masking_detectors``): its check and its key."""

import json

from masking.detectors import DetectorConfigError, Detectors


def check_detectors(config) -> str:
    """"" when ``config`` is a valid free-text detector configuration (None or {} = inherit)."""
    if not config:
        return ""
    try:
        Detectors.from_config(config)
    except DetectorConfigError as exc:
        return str(exc)
    return ""


def detectors_key(config) -> str:
    """A canonical, hashable form of a detector configuration ("" = inherit)."""
    return json.dumps(config, sort_keys=True, separators=(",", ":")) if config else ""
