"""An in-process caller (the MCP endpoint) is known only from its ASGI scope key, never from a header."""

from gateway.exchange import RESPONSE_COMPLETE, Exchange
from gateway.pipeline import IN_PROCESS, InProcessCaller, parse_request
from gateway.tests.test_pipeline import PREFIX, scope

CALLER = InProcessCaller(origin="mcp", parent_id="3f1d6c2e-47a4-4c6f-8b55-0c1d2e3f4a5b", detail="delete_resource")


def test_the_scope_key_names_the_caller_and_its_record_names_the_parent():
    raw = scope("/k8s/prod/api/v1/namespaces/shop/pods/web", method="DELETE")
    request = parse_request({**raw, IN_PROCESS: CALLER}, PREFIX)
    assert request.caller == CALLER
    exchange = Exchange(raw)
    exchange.request = request
    assert exchange.record(RESPONSE_COMPLETE).event()["parent_id"] == CALLER.parent_id


def test_no_header_an_outside_client_sends_makes_a_caller():
    headers = [("airlock.in_process", "mcp"), ("x-airlock-parent", CALLER.parent_id), ("kubectl-session", "mcp-1")]
    for raw in (scope("/k8s/prod/api/v1/pods", headers=headers),
                {**scope("/k8s/prod/api/v1/pods"), IN_PROCESS: {"origin": "mcp", "parent_id": "forged"}}):
        request = parse_request(raw, PREFIX)
        assert request.caller is None
        exchange = Exchange(raw)
        exchange.request = request
        assert "parent_id" not in exchange.record(RESPONSE_COMPLETE).event()
