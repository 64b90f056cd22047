"""No log line carries a request's query string or a proxied workload path.

Every server layer logs request targets: uvicorn's WebSocket lines
('"WebSocket %s" [accepted]', even with --no-access-log) and access log,
daphne's runserver lines and CLI access log, Django's django.server,
httpx and aiohttp, and Celery's task lines when an argument or result holds
a URL.  Queries carry exec commands (``command=`` words), label selectors and
whatever an agent put there; the path after a ``proxy`` segment is a
workload's own URL.  The audit trail records requests (masked); logs keep
the path only.

The redaction happens where every record is made, not in a filter: a logger
filter misses records propagated from child loggers and a handler filter
misses the handlers uvicorn installs for itself, while
``logging.setLogRecordFactory`` makes every record in the process a
RedactedLogRecord, whichever logger or handler it goes through.  Its
arguments are redacted when it is created (uvicorn's access formatter reads
``record.args`` directly) and its message and traceback when formatted.
Django installs it through LOGGING_CONFIG (``configure`` below) in every
process that loads the settings: uvicorn and daphne importing airlock.asgi,
Celery workers, manage.py.

daphne's CLI access log is the one server log not written through logging
(``daphne.access.AccessLogGenerator`` writes to a stream), so its request
field is redacted by wrapping that writer.

Error reports (the DEBUG page, mailed or logged tracebacks with request data)
are filtered by ErrorReportFilter below.

Lines are plain text or, with ``AIRLOCK_LOG_FORMAT=json`` (production's default), one JSON object
each (:class:`JsonFormatter`, python-json-logger): time, level, logger, message, the request's
``request_id`` (its audit id), ``identity``, ``connection`` and ``decision`` while a request is
handled (runtime.logcontext), extra fields, and the traceback.  Every value in the object goes
through the same redaction, tracebacks included (the formatter formats them itself).
"""

import logging
import logging.config
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from daphne.access import AccessLogGenerator
from django.views.debug import SafeExceptionReporterFilter
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from runtime import logcontext

QUERY_REDACTED = "?[redacted]"
PROXY_REDACTED = "/proxy/[redacted]"

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# A request target inside free text: an origin-form path or an absolute URL, up
# to whitespace or a quote (the delimiters log formats put around targets).
_TARGET_IN_TEXT = re.compile(r"""(?:\b[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>/?]*)?/[^\s"'<>]*""")
_PROXY_SEGMENT = re.compile(r"/proxy/.*", re.DOTALL)
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@")


def redact_target(target: str) -> str:
    """One request target (path or URL) without userinfo, query, or what follows a proxy segment."""
    path, question, _query = target.partition("?")
    path = _USERINFO.sub(r"\1[redacted]@", path)
    path = _PROXY_SEGMENT.sub(PROXY_REDACTED, path)
    return path + (QUERY_REDACTED if question else "")


def redact(text: str) -> str:
    """``text`` with every request target in it redacted (see redact_target)."""
    if ("?" not in text and "/proxy/" not in text and "@" not in text) or "/" not in text:
        return text
    if (text.startswith("/") or _SCHEME.match(text)) and not any(ch.isspace() for ch in text):
        return redact_target(text)  # the whole value is a target: its query ends where it ends
    return _TARGET_IN_TEXT.sub(lambda match: redact_target(match.group()), text)


def _redact_arg(value, key=None):
    if key == "query_string" and value:  # an ASGI scope (uvicorn's trace log prints scopes)
        return "[redacted]"
    if value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("latin-1")
        redacted = redact(text)
        return value if redacted == text else redacted
    if isinstance(value, Mapping):
        return {k: _redact_arg(v, k) for k, v in value.items()}
    if type(value) in (tuple, list):
        return type(value)(_redact_arg(v) for v in value)
    # URL objects (httpx.URL, yarl.URL), requests, exceptions: %s formats them the same way.
    text = str(value)
    redacted = redact(text)
    return value if redacted == text else redacted


def redact_args(args):
    """Log record arguments (a tuple, or one mapping) with every request target redacted."""
    return _redact_arg(args) if isinstance(args, (tuple, Mapping)) else args


class RedactedLogRecord(logging.LogRecord):
    """A LogRecord whose arguments, message and traceback text hold no query or proxied path."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.args = redact_args(self.args)

    def getMessage(self) -> str:
        return redact(super().getMessage())

    # Formatter.format() caches the formatted traceback here; exception
    # messages (httpx's, for one) quote URLs.
    @property
    def exc_text(self):
        return self.__dict__.get("_exc_text")

    @exc_text.setter
    def exc_text(self, value):
        self.__dict__["_exc_text"] = redact(value) if value else value


# Extra attributes a library puts on its records that are not worth a field: uvicorn's coloured copy
# of the message, Django's request object (its path is the message's), asyncio's task name.
_SKIPPED_EXTRAS = ("color_message", "request", "taskName")


def _loggable(value):
    """A JSON-ready copy of ``value`` with every request target in it redacted."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(key): _loggable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_loggable(item) for item in value]
    if isinstance(value, (bytes, bytearray)):
        return redact(bytes(value).decode("utf-8", "replace"))
    return redact(str(value))


class JsonFormatter(_JsonFormatter):
    """One JSON object per line (python-json-logger), every value redacted (see the module's text)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("reserved_attrs", (*RESERVED_ATTRS, *_SKIPPED_EXTRAS))
        super().__init__(*args, **kwargs)

    def add_fields(self, log_data, record, message_dict):
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.message
        log_data.update(logcontext.current())
        super().add_fields(log_data, record, message_dict)

    def process_log_record(self, log_data):
        return {key: _loggable(value) for key, value in log_data.items()}

    def formatException(self, ei):
        return redact(super().formatException(ei))

    def formatStack(self, stack_info):
        return redact(super().formatStack(stack_info))


def _redact_daphne_access_log() -> None:
    write_entry = AccessLogGenerator.write_entry
    if getattr(write_entry, "redacts", False):
        return

    def redacted_write_entry(self, host, date, request, *args, **kwargs):
        return write_entry(self, host, date, redact(request), *args, **kwargs)

    redacted_write_entry.redacts = True
    AccessLogGenerator.write_entry = redacted_write_entry


class ErrorReportFilter(SafeExceptionReporterFilter):
    """settings.DEFAULT_EXCEPTION_REPORTER_FILTER, for the DEBUG error page and mailed or logged reports.

    Django's filter stands down while DEBUG is on, yet AIRLOCK_DEBUG defaults to
    on in development: POST parameters marked sensitive (the admin's
    credential inputs) and variables in sensitive_variables functions stay
    hidden here either way.  Settings whose value can embed a credential
    (database, broker and webhook URLs) are hidden as well as Django's own list.
    """

    hidden_settings = re.compile(
        "API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|URL|WEBHOOK|BROKER|BACKEND|LOCATION|HOSTS", re.I
    )

    def is_active(self, request):
        return True


def install() -> None:
    """Make every log record of this process a RedactedLogRecord; idempotent."""
    logging.setLogRecordFactory(RedactedLogRecord)
    _redact_daphne_access_log()


def configure(config: dict) -> None:
    """settings.LOGGING_CONFIG: install the redaction, then apply settings.LOGGING."""
    install()
    logging.config.dictConfig(config)
