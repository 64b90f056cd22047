"""A warning per failure kind at most every ``interval`` seconds, with how many were not logged meanwhile.

For failures that repeat for as long as a dependency (Redis) is away: one line when they start and a
count now and then, never a line per request.  Only the exception's type is logged: a client's
message may carry a URL with its password.
"""

import logging
import threading
import time


class FailureLog:
    def __init__(self, logger: logging.Logger, subject: str, interval: float = 10.0, clock=time.monotonic):
        self._log = logger
        self._subject = subject
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._logged_at = float("-inf")
        self._suppressed = 0

    def failed(self, what: str, exc: BaseException) -> None:
        with self._lock:
            now = self._clock()
            if now - self._logged_at < self._interval:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._logged_at = self._suppressed, 0, now
        self._log.warning("%s %s failed: %s%s", self._subject, what, type(exc).__name__,
                          f" ({suppressed} more since the last report)" if suppressed else "")
