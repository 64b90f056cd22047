"""kube.dryrun: a request is a dry run only where and as kube-apiserver reads ``dryRun``."""

import json

import pytest

from kube.dryrun import classify
from kube.requestinfo import parse

NS = "/api/v1/namespaces/shop"
APPS = "/apis/apps/v1/namespaces/shop"
JSON = [("content-type", "application/json")]
KUBECTL_DELETE = json.dumps({"propagationPolicy": "Background", "dryRun": ["All"]}).encode()


def dry(method, path, query="", body=b"", headers=JSON):
    return classify(parse(method, path, query), query, headers, body)


@pytest.mark.parametrize("method, path, query, body", [
    ("POST", f"{NS}/configmaps", "fieldManager=kubectl-create&dryRun=All", b"{}"),
    ("PUT", f"{NS}/configmaps/cm", "dryRun=All", b"{}"),
    ("PATCH", f"{APPS}/deployments/web", "dryRun=All&fieldManager=kubectl-client-side-apply", b"{}"),
    ("PATCH", f"{APPS}/deployments/web", "dryRun=All&dryRun=All", b"{}"),  # repeated, every value All
    ("PATCH", f"{APPS}/deployments/web/scale", "dryRun=All", b"{}"),
    ("PUT", f"{NS}/pods/web/status", "dryRun=All", b"{}"),
    ("DELETE", f"{NS}/pods/web", "", KUBECTL_DELETE),  # kubectl delete --dry-run=server
    ("DELETE", f"{NS}/pods/web", "dryRun=All", b""),  # no body: the query's DeleteOptions
    ("DELETE", f"{NS}/pods", "labelSelector=app%3Dweb", KUBECTL_DELETE),  # deletecollection
    ("DELETE", f"{NS}/pods/web", "", b'{"dryRun":["All"]}'),
])
def test_dry_runs_kube_apiserver_runs_as_such(method, path, query, body):
    result = dry(method, path, query, body)
    assert result.honoured and result.note == ""


@pytest.mark.parametrize("method, path, query, body, because", [
    # kube-apiserver answers 400 to anything but "All": not a dry run, and said so
    ("POST", f"{NS}/configmaps", "dryRun=Foo", b"{}", '"Foo"'),
    ("POST", f"{NS}/configmaps", "dryRun=all", b"{}", '"all"'),
    ("POST", f"{NS}/configmaps", "dryRun=", b"{}", '""'),
    ("POST", f"{NS}/configmaps", "dryRun=All&dryRun=None", b"{}", '"None"'),
    # a DELETE with a body: kube-apiserver ignores the query
    ("DELETE", f"{NS}/pods/web", "dryRun=All", b'{"propagationPolicy":"Background"}', "ignored"),
    ("DELETE", f"{NS}/pods/web", "", b'{"dryRun":"All"}', "not a list of strings"),
    ("DELETE", f"{NS}/pods/web", "", b'{"dryRun":["All"],"dryRun":[]}', "not one valid JSON object"),
    ("DELETE", f"{NS}/pods/web", "", b'{"dryRun":["Foo"]}', '"Foo"'),
    ("DELETE", f"{NS}/pods/web", "dryRun=All", b"dryRun: [All]", "not JSON"),
    ("DELETE", f"{NS}/pods/web", "dryRun=All", b"[]", "not a JSON object"),
    # subresources whose code may ignore dryRun, or refuses it
    ("POST", f"{NS}/serviceaccounts/default/token", "dryRun=All", b"{}", "mints a real token"),
    ("POST", f"{NS}/pods/web/eviction", "dryRun=All", b"{}", "pods/eviction"),
    ("POST", f"{NS}/pods/web/exec", "command=ls&dryRun=All", b"", "refuses dryRun on pods/exec"),
    ("POST", f"{NS}/pods/web/portforward", "dryRun=All", b"", "refuses"),
])
def test_anything_else_that_asks_is_the_change_itself_and_says_why(method, path, query, body, because):
    headers = [("content-type", "application/yaml")] if body.startswith(b"dryRun:") else JSON
    result = dry(method, path, query, body, headers)
    assert not result.honoured
    assert because in result.note


@pytest.mark.parametrize("method, path, query, body", [
    ("POST", f"{NS}/configmaps", "", b"{}"),
    ("POST", f"{NS}/configmaps", "DryRun=All", b"{}"),  # kube-apiserver reads "dryRun" only
    ("POST", f"{NS}/configmaps", "dryRun=All;x=1", b"{}"),  # Go's ParseQuery drops a pair with ";"
    ("DELETE", f"{NS}/pods/web", "", b'{"DryRun":["All"]}'),  # case-sensitive JSON keys
    ("DELETE", f"{NS}/pods/web", "", b'{"dryRun":[]}'),
    ("DELETE", f"{NS}/pods/web", "", b'{"dryRun":null}'),
    ("GET", f"{NS}/pods/web", "dryRun=All", b""),  # reads have no dry run
    ("POST", "/version", "dryRun=All", b""),
])
def test_requests_that_do_not_ask_are_not_dry_runs(method, path, query, body):
    result = dry(method, path, query, body)
    assert not result.honoured and result.note == ""


def test_delete_options_without_a_content_type_are_json_as_kube_apiserver_reads_them():
    assert dry("DELETE", f"{NS}/pods/web", "", KUBECTL_DELETE, headers=[]).honoured
