"""Answers for the dashboard, the admin and the REST APIs while the database is away: a 503, not a 500.

The gateway's data path has its own bounded database access (runtime/db.py).  Every other page
queries the database on the request's thread, and a connection refused or lost there raised
``django.db.OperationalError`` or ``InterfaceError``: a 500, and a traceback in the log for each
request (78 in one soak while PostgreSQL was refused).  Here those two, and only those, become

* a 503 ``{"detail": ...}`` from the REST APIs (:func:`api_exception_handler`, DRF's
  ``EXCEPTION_HANDLER``; the agent lease API uses :func:`answer_json`), the shape they use for
  every other error;
* a 503 HTML page from every other Django view (:class:`DatabaseUnavailableMiddleware`);

with one WARNING line when the failures start and at most one every ``LOG_INTERVAL`` seconds
while they go on (with a count): no traceback, and not Django's ERROR line per 5xx answer.  Any
other exception (a ProgrammingError, a bug) is left to Django: a 500 with its traceback.
"""

import logging
import threading
import time

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from rest_framework.exceptions import APIException
from rest_framework.views import exception_handler

log = logging.getLogger(__name__)

UNAVAILABLE = (OperationalError, InterfaceError)
LOG_INTERVAL = 10.0
MESSAGE = "the database is unavailable; try again shortly"
PAGE = (
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>503 Service Unavailable</title></head>"
    f"<body><h1>Service unavailable</h1><p>Airlock's {MESSAGE}.</p></body></html>"
)


class DatabaseUnavailable(APIException):
    status_code = 503
    default_detail = MESSAGE
    default_code = "database_unavailable"


class _Reports:
    """Rate-limited WARNING lines: the first failure, then at most one per LOG_INTERVAL with a count."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._logged_at: float | None = None
        self._unreported = 0

    def failed(self, exc: Exception) -> None:
        with self._lock:
            now = self._clock()
            self._unreported += 1
            if self._logged_at is not None and now - self._logged_at < LOG_INTERVAL:
                return
            # The type only: a driver's message may carry connection parameters.
            log.warning("database unavailable to the dashboard and APIs (%s): %d request(s) answered 503%s",
                        type(exc).__name__, self._unreported,
                        "" if self._logged_at is None else f" in the last {now - self._logged_at:.0f}s")
            self._logged_at = now
            self._unreported = 0


reports = _Reports()


def _reported(response):
    """Already logged (rate-limited): Django would log every 5xx answer again, one ERROR line each."""
    response._has_been_logged = True
    return response


def api_exception_handler(exc, context):
    """DRF's exception handler, with a database that cannot be reached answered 503."""
    if not isinstance(exc, UNAVAILABLE):
        return exception_handler(exc, context)
    reports.failed(exc)
    return _reported(exception_handler(DatabaseUnavailable(), context))


def answer_json(exc: Exception) -> JsonResponse | None:
    """The 503 ``{"detail": ...}`` for a database failure, None for any other exception."""
    if not isinstance(exc, UNAVAILABLE):
        return None
    reports.failed(exc)
    return _reported(JsonResponse({"detail": MESSAGE}, status=503))


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """A view that cannot reach the database answers a 503 page instead of a 500 and a traceback."""

    def process_exception(self, request, exc):
        if not isinstance(exc, UNAVAILABLE):
            return None
        reports.failed(exc)
        return _reported(HttpResponse(PAGE, status=503, content_type="text/html; charset=utf-8"))
