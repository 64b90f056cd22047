"""Every library that logs request targets, driven through its own logging code: the line written
has the path without the query (exec commands, selectors) and without a proxied workload path.

The real server processes (uvicorn, daphne's CLI) are in tests/e2e_gateway/test_server_logs.py.
"""

import io
import logging
from contextlib import contextmanager

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_log import AccessLogger
from celery import Celery
from celery.app.trace import build_tracer

from airlock.logs import redact

SECRET = "hunter2-in-a-query"
EXEC = f"/k8s/prod/api/v1/namespaces/shop/pods/web/exec?command=mysql&command=-p{SECRET}&stdout=true"


@contextmanager
def written(name, level=logging.INFO):
    """What handlers of logger ``name`` write, formatted as Django's LOGGING does."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger(name)
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


@pytest.mark.parametrize("text, expected", [
    (EXEC, "/k8s/prod/api/v1/namespaces/shop/pods/web/exec?[redacted]"),
    (f'127.0.0.1:5 - "WebSocket {EXEC}" [accepted]',
     '127.0.0.1:5 - "WebSocket /k8s/prod/api/v1/namespaces/shop/pods/web/exec?[redacted]" [accepted]'),
    (f"GET {EXEC} HTTP/1.1", "GET /k8s/prod/api/v1/namespaces/shop/pods/web/exec?[redacted] HTTP/1.1"),
    ("/api/v1/namespaces/shop/services/web:80/proxy/reset/" + SECRET,
     "/api/v1/namespaces/shop/services/web:80/proxy/[redacted]"),
    (f"https://bot:{SECRET}@hooks.example/services/x?token={SECRET}",
     "https://[redacted]@hooks.example/services/x?[redacted]"),
    ("/k8s/prod/api/v1/namespaces/shop/pods/web/log", "/k8s/prod/api/v1/namespaces/shop/pods/web/log"),
    ("review 7 is still pending? yes", "review 7 is still pending? yes"),
])
def test_redact(text, expected):
    assert redact(text) == expected


def test_a_target_assembled_from_several_arguments_is_redacted_in_the_message():
    with written("airlock.test") as out:
        logging.getLogger("airlock.test").warning("upstream %s?%s failed", EXEC.partition("?")[0], f"x={SECRET}")
    assert SECRET not in out.getvalue() and "exec?[redacted] failed" in out.getvalue()


def test_httpx_request_lines():
    client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200)))
    with written("httpx") as out:
        client.get(f"https://cluster.example{EXEC}")
    assert "HTTP Request: GET https://cluster.example/k8s/prod/api/v1/namespaces/shop/pods/web/exec?[redacted]" \
        in out.getvalue()
    assert SECRET not in out.getvalue()


def test_aiohttp_access_lines():
    logger = logging.getLogger("aiohttp.access")
    with written("aiohttp.access") as out:
        AccessLogger(logger, AccessLogger.LOG_FORMAT).log(make_mocked_request("GET", EXEC), web.Response(), 0.01)
    assert '"GET /k8s/prod/api/v1/namespaces/shop/pods/web/exec?[redacted] HTTP/1.1" 200' in out.getvalue()
    assert SECRET not in out.getvalue()


def test_daphne_runserver_lines():
    """``manage.py runserver`` is daphne's (daphne is in INSTALLED_APPS for that command); it logs through logging."""
    from daphne.management.commands.runserver import Command

    with written("django.channels.server") as out:
        Command().log_action("http", "complete", {"path": EXEC, "status": 404, "method": "GET",
                                                  "client": "127.0.0.1:5", "time_taken": 0.01})
    assert "HTTP GET /k8s/prod/api/v1/namespaces/shop/pods/web/exec?[redacted] 404" in out.getvalue()
    assert SECRET not in out.getvalue()


def test_celery_task_lines():
    """The worker's trace logs each task's return value (and its retries' reasons)."""
    app = Celery("redaction-test", set_as_current=False)

    @app.task(name="redaction-test.echo", ignore_result=True, shared=False)
    def echo(value):
        return value

    with written("celery.app.trace") as out:
        build_tracer(echo.name, echo, app=app)("task-1", (f"https://cluster.example{EXEC}",), {}, request={})
    assert "succeeded" in out.getvalue() and SECRET not in out.getvalue()


def test_tracebacks_quoting_urls():
    response = httpx.Response(502, request=httpx.Request("GET", f"https://cluster.example{EXEC}"))
    with written("airlock.test") as out:
        try:
            response.raise_for_status()
        except httpx.HTTPStatusError:
            logging.getLogger("airlock.test").exception("upstream failed")
    assert "HTTPStatusError" in out.getvalue() and "exec?[redacted]" in out.getvalue()
    assert SECRET not in out.getvalue()


# -- JSON lines (AIRLOCK_LOG_FORMAT=json) ---------------------------------------------------------


@contextmanager
def written_json(name, level=logging.INFO):
    """What handlers of logger ``name`` write with the JSON formatter of settings.LOGGING, one object a line."""
    from airlock.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(name)
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


def json_lines(stream) -> list[dict]:
    import json

    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_redact_the_message_extra_fields_and_dict_messages():
    logger = logging.getLogger("airlock.test")
    with written_json("airlock.test") as out:
        logger.warning("upstream %s failed", f"https://cluster.example{EXEC}",
                       extra={"target": EXEC, "url": f"https://bot:{SECRET}@hooks.example/x", "nested": {"t": [EXEC]}})
        logger.info({"event": "forwarded", "target": EXEC})
    first, second = json_lines(out)
    assert first["message"] == "upstream https://cluster.example/k8s/prod/api/v1/namespaces/shop/pods/web/exec?[redacted] failed"
    assert first["target"] == "/k8s/prod/api/v1/namespaces/shop/pods/web/exec?[redacted]"
    assert first["url"] == "https://[redacted]@hooks.example/x"
    assert first["nested"] == {"t": ["/k8s/prod/api/v1/namespaces/shop/pods/web/exec?[redacted]"]}
    assert {k: first[k] for k in ("level", "logger")} == {"level": "WARNING", "logger": "airlock.test"}
    assert first["time"].endswith("+00:00")
    assert second["target"].endswith("exec?[redacted]")
    assert SECRET not in out.getvalue()


def test_json_lines_redact_tracebacks():
    response = httpx.Response(502, request=httpx.Request("GET", f"https://cluster.example{EXEC}"))
    with written_json("airlock.test") as out:
        try:
            response.raise_for_status()
        except httpx.HTTPStatusError:
            logging.getLogger("airlock.test").exception("upstream failed")
    (line,) = json_lines(out)
    assert "HTTPStatusError" in line["exc_info"] and "exec?[redacted]" in line["exc_info"]
    assert SECRET not in out.getvalue()


def test_json_lines_of_library_records_redact_their_request_objects():
    """Django's django.request passes the request object as an extra: it is left out, its path is the message's."""
    from django.test import RequestFactory

    request = RequestFactory().get(EXEC.removeprefix("/k8s/prod"))
    with written_json("django.request") as out:
        logging.getLogger("django.request").warning("Not Found: %s", request.get_full_path(),
                                                    extra={"status_code": 404, "request": request})
    (line,) = json_lines(out)
    assert line["status_code"] == 404 and "request" not in line
    assert SECRET not in out.getvalue()


def test_json_lines_carry_the_request_context_and_nothing_outside_a_request():
    from runtime import logcontext

    logger = logging.getLogger("airlock.test")
    with written_json("airlock.test") as out:
        logcontext.clear()
        logger.warning("outside")
        logcontext.bind(request_id="6b1d2c7e-audit-id", identity="agent-1", connection="prod", decision="allow")
        try:
            logger.warning("inside")
        finally:
            logcontext.clear()
    outside, inside = json_lines(out)
    assert not {"request_id", "identity", "connection", "decision"} & set(outside)
    assert {k: inside[k] for k in ("request_id", "identity", "connection", "decision")} == {
        "request_id": "6b1d2c7e-audit-id", "identity": "agent-1", "connection": "prod", "decision": "allow"}


def test_production_logs_json_and_development_text_unless_told(monkeypatch):
    from tests.deploy.test_configuration_reference import load_settings, production

    assert load_settings(monkeypatch, production())["LOGGING"]["handlers"]["console"]["formatter"] == "json"
    assert load_settings(monkeypatch, production(AIRLOCK_LOG_FORMAT="text"))["LOGGING"]["handlers"]["console"][
        "formatter"] == "plain"
    assert load_settings(monkeypatch, {})["LOGGING"]["handlers"]["console"]["formatter"] == "plain"
