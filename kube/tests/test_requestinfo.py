"""kube.requestinfo against kube-apiserver's own test tables and its exact edge cases.

Upstream tables: k8s.io/apiserver pkg/endpoints/request/requestinfo_test.go (TestGetAPIRequestInfo,
TestGetNonAPIRequestInfo, TestSelectorParsing; TestFieldSelectorParsing is its pre-1.31 name).
"""

from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kube.requestinfo import (
    MAX_PATH_BYTES,
    MAX_QUERY_PARAMS,
    NonCanonicalPath,
    RequestInfo,
    RequestInfoError,
    canonical_path,
    is_long_running,
    parse,
    parse_query,
)

PROPERTY = settings(
    max_examples=400,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def info(method: str, url: str) -> RequestInfo:
    path, _, query = url.partition("?")
    return parse(method, path, query)


# --- TestGetAPIRequestInfo ------------------------------------------------------------------------
# Upstream's table lists APIPrefix "api" for the /apis rows but never asserts the field; here it is
# asserted with the value NewRequestInfo actually computes (the first path part).

API_SUCCESS_CASES = [
    # resource paths
    ("GET", "/api/v1/namespaces", "list", "api", "", "v1", "", "namespaces", "", "", ["namespaces"]),
    ("GET", "/api/v1/namespaces/other", "get", "api", "", "v1", "other", "namespaces", "", "other", ["namespaces", "other"]),
    ("GET", "/api/v1/namespaces/other/pods", "list", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("HEAD", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("GET", "/api/v1/pods", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("HEAD", "/api/v1/pods", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("GET", "/api/v1/namespaces/other/pods", "list", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    # special verbs
    ("GET", "/api/v1/proxy/namespaces/other/pods/foo", "proxy", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("GET", "/api/v1/proxy/namespaces/other/pods/foo/subpath/not/a/subresource", "proxy", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo", "subpath", "not", "a", "subresource"]),
    ("GET", "/api/v1/watch/pods", "watch", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=true", "watch", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=false", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/watch/namespaces/other/pods", "watch", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods?watch=1", "watch", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods?watch=0", "list", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    # subresource identification
    ("GET", "/api/v1/namespaces/other/pods/foo/status", "get", "api", "", "v1", "other", "pods", "status", "foo", ["pods", "foo", "status"]),
    ("GET", "/api/v1/namespaces/other/pods/foo/proxy/subpath", "get", "api", "", "v1", "other", "pods", "proxy", "foo", ["pods", "foo", "proxy", "subpath"]),
    ("PUT", "/api/v1/namespaces/other/finalize", "update", "api", "", "v1", "other", "namespaces", "finalize", "other", ["namespaces", "other", "finalize"]),
    ("PUT", "/api/v1/namespaces/other/status", "update", "api", "", "v1", "other", "namespaces", "status", "other", ["namespaces", "other", "status"]),
    # verb identification
    ("PATCH", "/api/v1/namespaces/other/pods/foo", "patch", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("DELETE", "/api/v1/namespaces/other/pods/foo", "delete", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("POST", "/api/v1/namespaces/other/pods", "create", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    # deletecollection verb identification
    ("DELETE", "/api/v1/nodes", "deletecollection", "api", "", "v1", "", "nodes", "", "", ["nodes"]),
    ("DELETE", "/api/v1/namespaces", "deletecollection", "api", "", "v1", "", "namespaces", "", "", ["namespaces"]),
    ("DELETE", "/api/v1/namespaces/other/pods", "deletecollection", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("DELETE", "/apis/extensions/v1/namespaces/other/pods", "deletecollection", "apis", "extensions", "v1", "other", "pods", "", "", ["pods"]),
    # api group identification
    ("POST", "/apis/extensions/v1/namespaces/other/pods", "create", "apis", "extensions", "v1", "other", "pods", "", "", ["pods"]),
    # api version identification
    ("POST", "/apis/extensions/v1beta3/namespaces/other/pods", "create", "apis", "extensions", "v1beta3", "other", "pods", "", "", ["pods"]),
]


@pytest.mark.parametrize(
    "method,url,verb,prefix,group,version,namespace,resource,subresource,name,parts",
    API_SUCCESS_CASES,
)
def test_api_request_info(method, url, verb, prefix, group, version, namespace, resource, subresource, name, parts):
    got = info(method, url)
    assert got.is_resource_request
    assert got.path == url.partition("?")[0]
    assert (got.verb, got.api_prefix, got.api_group, got.api_version) == (verb, prefix, group, version)
    assert (got.namespace, got.resource, got.subresource, got.name) == (namespace, resource, subresource, name)
    assert got.parts == tuple(parts)


@pytest.mark.parametrize(
    "url",
    [
        "/",  # no resource path
        "/api/version/",  # just apiversion / apiversion with no resource
        "/apis/group/version/",  # just prefix, group, version
        "/badprefix/version/resource",  # bad prefix
        "/apis/version/resource",  # missing api group
    ],
)
def test_api_request_info_non_resource_cases(url):
    got = info("GET", url)
    assert not got.is_resource_request
    assert got.verb == "get"
    assert got.parts == ()


# --- TestGetNonAPIRequestInfo ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "url,expected",
    [
        ("/api/version/resource", True),  # simple groupless
        ("/apis/group/version/resource/name/subresource", True),  # simple group
        ("/api/version/resource/name/subresource", True),  # more steps
        ("/apis/batch/v1/job", True),  # group list
        ("/apis/batch/v1/job/foo", True),  # group get
        ("/apis/batch/v1/job/foo/scale", True),  # group subresource
        ("/not-api/version/resource", False),  # bad root
        ("/apis/extensions/v1beta1", False),  # group without enough steps
        ("/apis/extensions/v1beta1/", False),  # group without enough steps 2
        ("/api/version", False),  # not enough steps
        ("/api", False),  # one step
        ("/", False),  # zero step
        ("", False),  # empty
    ],
)
def test_non_api_request_info(url, expected):
    assert info("GET", url).is_resource_request is expected


# --- TestSelectorParsing and its predecessor TestFieldSelectorParsing ----------------------------

SELECTOR_CASES = [
    # name, method, url, name, verb, fieldSelector, labelSelector
    ("no selector", "GET", "/apis/group/version/resource", "", "list", "", ""),
    ("metadata.name selector", "GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1", "name1", "list", "metadata.name=name1", ""),
    ("metadata.name selector with watch", "GET", "/apis/group/version/resource?watch=true&fieldSelector=metadata.name=name1", "name1", "watch", "metadata.name=name1", ""),
    ("random selector", "GET", "/apis/group/version/resource?fieldSelector=foo=bar&labelSelector=baz=qux", "", "list", "foo=bar", "baz=qux"),
    ("invalid selector with metadata.name", "GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo", "", "list", "metadata.name=name1,foo", ""),
    ("invalid selector with metadata.name with watch", "GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=true", "", "watch", "metadata.name=name1,foo", ""),
    ("invalid selector with metadata.name with watch false", "GET", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=false", "", "list", "metadata.name=name1,foo", ""),
    ("selector on deletecollection is honored", "DELETE", "/apis/group/version/resource?fieldSelector=foo=bar&labelSelector=baz=qux", "", "deletecollection", "foo=bar", "baz=qux"),
    ("selector on repeated param matches parsed param", "GET", "/apis/group/version/resource?fieldSelector=metadata.name=foo&fieldSelector=metadata.name=bar&labelSelector=foo=bar&labelSelector=foo=baz", "foo", "list", "metadata.name=foo", "foo=bar"),
    ("selector on other verb is ignored", "GET", "/apis/group/version/resource/name?fieldSelector=foo=bar&labelSelector=foo=bar", "name", "get", "", ""),
    ("selector on deprecated root type watch is not parsed", "GET", "/apis/group/version/watch/resource?fieldSelector=metadata.name=foo&labelSelector=foo=bar", "", "watch", "", ""),
    ("selector on deprecated root item watch is not parsed", "GET", "/apis/group/version/watch/resource/name?fieldSelector=metadata.name=foo&labelSelector=foo=bar", "name", "watch", "", ""),
]


@pytest.mark.parametrize(
    "case,method,url,name,verb,field_selector,label_selector", SELECTOR_CASES, ids=[c[0] for c in SELECTOR_CASES]
)
def test_selector_parsing(case, method, url, name, verb, field_selector, label_selector):
    got = info(method, url)
    assert (got.name, got.verb) == (name, verb)
    assert (got.field_selector, got.label_selector) == (field_selector, label_selector)


FIELD_SELECTOR_CASES = [
    ("no selector", "/apis/group/version/resource", "", "list"),
    ("metadata.name selector", "/apis/group/version/resource?fieldSelector=metadata.name=name1", "name1", "list"),
    ("metadata.name selector with watch", "/apis/group/version/resource?watch=true&fieldSelector=metadata.name=name1", "name1", "watch"),
    ("random selector", "/apis/group/version/resource?fieldSelector=foo=bar", "", "list"),
    ("invalid selector with metadata.name", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo", "", "list"),
    ("invalid selector with metadata.name with watch", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=true", "", "watch"),
    ("invalid selector with metadata.name with watch false", "/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=false", "", "list"),
]


@pytest.mark.parametrize("case,url,name,verb", FIELD_SELECTOR_CASES, ids=[c[0] for c in FIELD_SELECTOR_CASES])
def test_field_selector_parsing(case, url, name, verb):
    got = info("GET", url)
    assert (got.name, got.verb) == (name, verb)


# --- examples table of the wire-protocol note (requestinfo_test.go plus observed kubectl traffic) ---

NOTE_EXAMPLES = [
    ("GET", "/api/v1/namespaces/default/pods?limit=500", "list", "", "v1", "default", "pods", "", ""),
    ("GET", "/api/v1/pods?watch=1", "watch", "", "v1", "", "pods", "", ""),
    ("GET", "/api/v1/watch/pods", "watch", "", "v1", "", "pods", "", ""),
    ("GET", "/api/v1/namespaces/d/pods/web/log?container=app", "get", "", "v1", "d", "pods", "log", "web"),
    ("POST", "/api/v1/namespaces/d/pods/web/exec?command=ls&stdout=true&stderr=true", "create", "", "v1", "d", "pods", "exec", "web"),
    ("GET", "/api/v1/namespaces/d/pods/web/exec?command=ls&stdout=true", "get", "", "v1", "d", "pods", "exec", "web"),
    ("GET", "/api/v1/namespaces/d/pods/web/portforward?ports=80", "get", "", "v1", "d", "pods", "portforward", "web"),
    ("POST", "/api/v1/namespaces/d/pods/web/portforward", "create", "", "v1", "d", "pods", "portforward", "web"),
    ("GET", "/api/v1/namespaces/d/pods/web/attach?stdin=true", "get", "", "v1", "d", "pods", "attach", "web"),
    ("POST", "/api/v1/namespaces/d/pods/web/attach?stdin=true", "create", "", "v1", "d", "pods", "attach", "web"),
    ("PATCH", "/apis/apps/v1/namespaces/d/deployments/web/scale", "patch", "apps", "v1", "d", "deployments", "scale", "web"),
    ("POST", "/api/v1/namespaces/d/serviceaccounts/default/token", "create", "", "v1", "d", "serviceaccounts", "token", "default"),
    ("POST", "/api/v1/namespaces/d/pods/web/eviction", "create", "", "v1", "d", "pods", "eviction", "web"),
    ("PUT", "/api/v1/namespaces/other/status", "update", "", "v1", "other", "namespaces", "status", "other"),
    ("DELETE", "/api/v1/namespaces/d/pods", "deletecollection", "", "v1", "d", "pods", "", ""),
    ("DELETE", "/api/v1/namespaces", "deletecollection", "", "v1", "", "namespaces", "", ""),
    ("GET", "/api/v1/namespaces/d/pods/web/proxy/healthz", "get", "", "v1", "d", "pods", "proxy", "web"),
    ("GET", "/api/v1/proxy/namespaces/d/pods/web/a/b", "proxy", "", "v1", "d", "pods", "", "web"),
    # kubectl get pod web -w
    ("GET", "/api/v1/namespaces/d/pods?fieldSelector=metadata.name%3Dweb&watch=true", "watch", "", "v1", "d", "pods", "", "web"),
    ("GET", "/api/v1/namespaces/foo", "get", "", "v1", "foo", "namespaces", "", "foo"),
]


@pytest.mark.parametrize("method,url,verb,group,version,namespace,resource,subresource,name", NOTE_EXAMPLES)
def test_note_examples(method, url, verb, group, version, namespace, resource, subresource, name):
    got = info(method, url)
    assert got.is_resource_request
    assert (got.verb, got.api_group, got.api_version) == (verb, group, version)
    assert (got.namespace, got.resource, got.subresource, got.name) == (namespace, resource, subresource, name)


@pytest.mark.parametrize("url", ["/api", "/apis", "/api/v1", "/apis/apps/v1", "/version", "/openapi/v3", "/healthz", "/"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "OPTIONS"])
def test_note_non_resource_examples(method, url):
    got = info(method, url)
    assert not got.is_resource_request
    assert got.verb == method.lower()
    assert (got.namespace, got.resource, got.name, got.parts) == ("", "", "", ())


def test_discovery_of_a_group_keeps_the_api_prefix_like_upstream():
    assert info("GET", "/apis/apps/v1").api_prefix == "apis"
    assert info("GET", "/apis/apps").api_prefix == ""
    assert info("GET", "/api/v1").api_prefix == ""


# --- verb and path edge cases ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "path", ["/api/v1/watch", "/api/v1/proxy", "/api/v1/watch/", "/apis/apps/v1/watch", "/apis/apps/v1/proxy//"]
)
def test_special_verb_without_resource_is_an_error(path):
    with pytest.raises(RequestInfoError, match="unable to determine kind and namespace"):
        parse("GET", path, "")


@pytest.mark.parametrize(
    "method,verb",
    [("OPTIONS", ""), ("TRACE", ""), ("CONNECT", ""), ("get", ""), ("Post", ""), ("PROPFIND", "")],
)
def test_methods_outside_the_upstream_switch_have_no_verb(method, verb):
    got = parse(method, "/api/v1/namespaces/d/pods/web", "")
    assert (got.is_resource_request, got.verb, got.name) == (True, verb, "web")


def test_method_matching_is_case_sensitive_but_non_resource_verb_is_lowercased():
    assert parse("get", "/api/v1/pods", "watch=1").verb == ""
    assert parse("Get", "/healthz", "").verb == "get"


@pytest.mark.parametrize("method", ["", "GE T", "G\u00c9T", "GET\r\n", "GET/", "(GET)"])
def test_method_must_be_an_http_token(method):
    with pytest.raises(RequestInfoError, match="HTTP token"):
        parse(method, "/api/v1/pods", "")


def test_leading_and_trailing_slashes_are_trimmed_like_upstream():
    got = parse("GET", "///api/v1/namespaces/d/pods/web///", "")
    assert (got.resource, got.name, got.parts) == ("pods", "web", ("pods", "web"))
    assert got.path == "///api/v1/namespaces/d/pods/web///"


def test_inner_empty_segments_are_kept_like_go_strings_split():
    got = parse("GET", "/api//v1/pods", "")
    assert (got.api_version, got.resource, got.name) == ("", "v1", "pods")


def test_namespaces_with_a_namespace_subresource_name_stays_a_namespace_request():
    got = parse("GET", "/api/v1/namespaces/status/finalize", "")
    assert (got.namespace, got.resource, got.name, got.subresource) == ("status", "namespaces", "status", "finalize")
    got = parse("GET", "/api/v1/namespaces/d/status/x", "")
    assert (got.namespace, got.resource, got.name, got.subresource) == ("d", "namespaces", "d", "status")


def test_proxy_verb_never_has_a_subresource_but_watch_does():
    assert parse("GET", "/api/v1/proxy/nodes/n1/stats", "").subresource == ""
    got = parse("GET", "/api/v1/watch/namespaces/d/pods/web/status", "")
    assert (got.verb, got.name, got.subresource) == ("watch", "web", "status")


def test_delete_never_takes_the_name_from_a_field_selector():
    got = info("DELETE", "/api/v1/namespaces/d/pods?fieldSelector=metadata.name%3Dweb")
    assert (got.verb, got.name, got.field_selector) == ("deletecollection", "", "metadata.name=web")


def test_head_list_takes_the_name_from_a_field_selector():
    got = info("HEAD", "/api/v1/pods?fieldSelector=metadata.name%3Dweb")
    assert (got.verb, got.name) == ("list", "web")


def test_selectors_are_not_reported_for_create_or_named_requests():
    got = info("POST", "/api/v1/namespaces/d/pods?fieldSelector=a%3Db&labelSelector=c")
    assert (got.field_selector, got.label_selector) == ("", "")
    got = info("DELETE", "/api/v1/namespaces/d/pods/web?labelSelector=c")
    assert (got.verb, got.label_selector) == ("delete", "")


def test_raw_selectors_are_reported_even_when_they_do_not_parse():
    got = info("GET", "/api/v1/pods?labelSelector=%21%21&fieldSelector=nope")
    assert (got.verb, got.label_selector, got.field_selector) == ("list", "!!", "nope")


# --- the watch parameter (Convert_Slice_string_To_bool and the fallback in NewRequestInfo) --------

@pytest.mark.parametrize(
    "query,verb",
    [
        ("watch=true", "watch"),
        ("watch=1", "watch"),
        ("watch=", "watch"),
        ("watch", "watch"),
        ("watch=yes", "watch"),
        ("watch=TRUE", "watch"),
        ("watch=no", "watch"),
        ("watch=00", "watch"),
        ("watch=+0", "watch"),
        ("watch=false", "list"),
        ("watch=FALSE", "list"),
        ("watch=fAlSe", "list"),
        ("watch=0", "list"),
        ("watch=false&watch=true", "list"),
        ("watch=true&watch=false", "watch"),
        ("Watch=true", "list"),
        ("watch=fal%C5%BFe", "list"),  # EqualFold: U+017F LONG S folds to 's'
        ("watch=%EF%BC%A6alse", "watch"),  # fullwidth F does not fold to 'f'
        ("", "list"),
    ],
)
def test_watch_parameter(query, verb):
    assert parse("GET", "/api/v1/pods", query).verb == verb


@pytest.mark.parametrize(
    "query,verb",
    [
        ("watch=false", "list"),
        ("watch=FaLsE", "list"),
        ("watch=0", "list"),
        ("watch=", "watch"),
        ("watch=1", "watch"),
        ("watch=fal%C5%BFe", "watch"),  # strings.ToLower does not map U+017F to 's'
    ],
)
def test_watch_parameter_when_list_options_fail_to_decode(query, verb):
    got = parse("GET", "/api/v1/pods", query + "&limit=x&fieldSelector=metadata.name%3Dweb")
    assert (got.verb, got.name) == (verb, "")


# --- query parsing like Go's url.ParseQuery --------------------------------------------------------

def test_parse_query_basics():
    assert parse_query("a=1&b=2&a=3") == {"a": ["1", "3"], "b": ["2"]}
    assert parse_query("a+b=c+d&e=%2B%20") == {"a b": ["c d"], "e": ["+ "]}
    assert parse_query("a&=x&&b=") == {"a": [""], "": ["x"], "b": [""]}
    assert parse_query("a=b=c") == {"a": ["b=c"]}
    assert parse_query("") == {}


def test_parse_query_drops_pairs_with_a_semicolon_like_go():
    assert parse_query("a=1;b=2&c=3") == {"c": ["3"]}
    assert parse_query("a=%3B") == {"a": [";"]}
    assert parse("GET", "/api/v1/pods", "watch=true;x").verb == "list"
    assert parse("GET", "/api/v1/pods", "x=y;z&watch=true").verb == "watch"


@pytest.mark.parametrize("query", ["a=%zz", "a=%4", "a=%", "%zz=1", "a%=1", "a=%%41"])
def test_parse_query_drops_pairs_with_bad_escapes_like_go(query):
    assert parse_query(query + "&ok=1") == {"ok": ["1"]}


def test_bad_escape_in_watch_drops_the_parameter():
    assert parse("GET", "/api/v1/pods", "watch=%zz").verb == "list"


@pytest.mark.parametrize(
    "query,message",
    [
        ("a=\x00", "raw character 0x00"),
        ("a=b\nc", "raw character 0x0a"),
        ("a=b c", "raw character 0x20"),
        ("a=\x7f", "raw character 0x7f"),
        ("a=\u00e9", "non-ASCII"),
        ("a=%ff", "not valid UTF-8"),
        ("%c3=1", "not valid UTF-8"),
        ("a=%ed%a0%80", "not valid UTF-8"),  # encoded surrogate
    ],
)
def test_parse_query_refuses_ambiguous_queries(query, message):
    with pytest.raises(RequestInfoError, match=message):
        parse("GET", "/healthz", query)


def test_parse_query_parameter_limit():
    at_limit = "&".join(["a=1"] * (MAX_QUERY_PARAMS - 1) + ["watch=1"])
    assert parse("GET", "/api/v1/pods", at_limit).verb == "watch"
    with pytest.raises(RequestInfoError, match="more than 10000 parameters"):
        parse("GET", "/api/v1/pods", at_limit + "&")


# --- fieldSelector -> name (fields.ParseSelector + RequiresExactMatch + IsPathSegmentName) --------

@pytest.mark.parametrize(
    "selector,name",
    [
        ("metadata.name=web", "web"),
        ("metadata.name==web", "web"),
        ("metadata.name!=web", ""),
        ("spec.nodeName=n1,metadata.name=web", "web"),
        ("metadata.name=b,metadata.name=a", "a"),  # terms are sorted before the lookup
        ("metadata.name==b,metadata.name=c", "b"),  # "==" sorts before "=c"
        ("metadata.name!=a,metadata.name=z", "z"),
        (",,metadata.name=web,", "web"),
        ("metadata.name=web,=", "web"),
        ("metadata.name=a\\,b", "a,b"),
        ("metadata.name=a\\=b\\\\c", "a=b\\c"),
        ("metadata.name=a b", "a b"),
        ("metadata.name=web x;y", "web x;y"),
        ("metadata.name=", ""),
        (" metadata.name=web", ""),
        ("metadata.name =web", ""),
        ("Metadata.name=web", ""),
        ("metadata.name=..", ""),
        ("metadata.name=.", ""),
        ("metadata.name=...", "..."),
        ("metadata.name=a/b", ""),
        ("metadata.name=a%b", ""),
        ("metadata.name=a=b", ""),  # unescaped '=' in value: the selector does not parse
        ("metadata.name=a,b", ""),  # term without operator
        ("metadata.name=a\\", ""),  # dangling backslash
        ("metadata.name=a\\x", ""),  # unknown escape
        ("metadata.name=web,x=a,b", ""),
    ],
)
def test_field_selector_name(selector, name):
    got = parse("GET", "/api/v1/namespaces/d/pods", urlencode({"fieldSelector": selector}))
    assert (got.verb, got.name, got.field_selector) == ("list", name, selector)


def test_first_field_selector_value_wins():
    got = info("GET", "/api/v1/pods?fieldSelector=metadata.name%3Da&fieldSelector=metadata.name%3Db")
    assert got.name == "a"


def test_plus_in_a_field_selector_is_a_space():
    assert info("GET", "/api/v1/pods?fieldSelector=metadata.name%3Da+b").name == "a b"


@pytest.mark.parametrize(
    "extra,decodes",
    [
        ("limit=500", True),
        ("limit=%2B5", True),
        ("limit=+5", False),  # "+" is a space in a query
        ("limit=-9223372036854775808", True),
        ("limit=9223372036854775807", True),
        ("limit=007", True),
        ("limit=&limit=1", False),  # first value wins: empty is not an integer
        ("limit=1&limit=x", True),
        ("limit=9223372036854775808", False),
        ("limit=-9223372036854775809", False),
        ("limit=" + "0" * 5000 + "1", True),
        ("limit=" + "1" * 5000, False),
        ("limit=1_000", False),
        ("limit=0x10", False),
        ("limit=1.5", False),
        ("limit=%EF%BC%91", False),  # fullwidth digit one
        ("limit=+", False),
        ("limit=%201", False),
        ("timeoutSeconds=30", True),
        ("timeoutSeconds=abc", False),
        ("resourceVersion=abc&resourceVersionMatch=Nonsense&continue=%21", True),
        ("allowWatchBookmarks=maybe&sendInitialEvents=whatever", True),
        ("shardSelector=%21%21", True),
        ("labelSelector=app%3Dweb", True),
        ("labelSelector=%21%21", False),
        ("labelSelector=app%3Dweb&labelSelector=%21%21", True),
    ],
)
def test_list_options_decode_errors_drop_the_field_selector_name(extra, decodes):
    got = parse("GET", "/api/v1/namespaces/d/pods", "fieldSelector=metadata.name%3Dweb&watch=true&" + extra)
    assert got.verb == "watch"
    assert got.name == ("web" if decodes else "")
    assert got.field_selector == "metadata.name=web"


VALID_LABEL_SELECTORS = [
    "",
    "a",
    "!a",
    " a ",
    "a=b",
    "a==b",
    "a!=b",
    "a=",
    "a==",
    "a!=",
    "a=b,c!=d,!e,f",
    " a = b , c ",
    "a\t=\nb",
    "a in (b,c)",
    "a in (b)",
    "a notin (b)",
    "a notin(b)",
    "a in ()",
    "a in (,)",
    "a in (,b)",
    "a in (b,)",
    "a in (b,,c)",
    "x in (foo,,baz),y,z notin ()",
    "in in (in)",
    "notin notin (notin)",
    "in=notin",
    "a>1",
    "a<10",
    "a>01",
    "a>1,b<2",
    "example.com/a=b",
    "a.b-c_d=E.f-G_h",
    "k8s.io/x in (1,2)",
    "a" * 63,
    "a=" + "b" * 63,
    "a" * 253 + "/b",
    "a \x00!!!",  # a NUL right after blanks ends the lexer's input
    "a,\x00b",  # a NUL right after an operator is swallowed
]

INVALID_LABEL_SELECTORS = [
    "!!",
    "!",
    "a!",
    ",",
    "a,",
    ",a",
    "a,,b",
    "a=b=c",
    "a=b c",
    "!a=b",
    "!a in (b)",
    "a in b",
    "a in (b",
    "a in (b c)",
    "a in (b))",
    "a in",
    "a notin",
    "a=(b)",
    "a>b",
    "a>",
    "a<-1",
    "a>1.5",
    "a>99999999999999999999",
    "a>" + "1" * 5000,
    "a>=1",
    "a=<1",
    "a=>1",
    "-a",
    "a-",
    ".a",
    "a/b/c",
    "/a",
    "a/",
    "A.com/b",
    "a_b.com/c",
    "a" * 64,
    "a=" + "b" * 64,
    "a" * 254 + "/b",
    "a=-b",
    "a=b_",
    "a=\u00e9",
    "\u00e9",
    "a\x00garbage",  # a NUL inside an identifier ends it; 'garbage' is then not an operator
    "a (b)",
    "(a)",
    ")",
]


@pytest.mark.parametrize("selector", VALID_LABEL_SELECTORS)
def test_valid_label_selector_keeps_the_name(selector):
    got = parse("GET", "/api/v1/pods", urlencode({"fieldSelector": "metadata.name=web", "labelSelector": selector}))
    assert (got.name, got.label_selector) == ("web", selector)


@pytest.mark.parametrize("selector", INVALID_LABEL_SELECTORS)
def test_invalid_label_selector_drops_the_name(selector):
    got = parse("GET", "/api/v1/pods", urlencode({"fieldSelector": "metadata.name=web", "labelSelector": selector}))
    assert (got.verb, got.name, got.label_selector) == ("list", "", selector)


# --- canonical paths ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "raw,decoded",
    [
        ("/", "/"),
        ("/api", "/api"),
        ("/api/v1/namespaces/default/pods", "/api/v1/namespaces/default/pods"),
        ("/api/v1/pods/", "/api/v1/pods/"),
        ("/apis/apps/v1/namespaces/d/deployments/web/scale", "/apis/apps/v1/namespaces/d/deployments/web/scale"),
        ("/api/v1/namespaces/d/services/https:web:443/proxy/", "/api/v1/namespaces/d/services/https:web:443/proxy/"),
        ("/api/v1/namespaces/d/pods/web/proxy/a%20b%3Fc%23d", "/api/v1/namespaces/d/pods/web/proxy/a b?c#d"),
        ("/a/%C3%A9", "/a/\u00e9"),
        ("/a/%21%27%28%29%2A", "/a/!'()*"),
        ("/a/b+c;d=e,f@g$h&i'j(k)l*m!n~o", "/a/b+c;d=e,f@g$h&i'j(k)l*m!n~o"),
        ("/a/...", "/a/..."),
        ("/a/..;/b", "/a/..;/b"),
        ("/a/.b/c.", "/a/.b/c."),
        (b"/api/v1/pods", "/api/v1/pods"),
    ],
)
def test_canonical_path_accepts(raw, decoded):
    assert canonical_path(raw) == decoded


@pytest.mark.parametrize(
    "raw,message",
    [
        ("", "must start with '/'"),
        ("api/v1", "must start with '/'"),
        ("*", "must start with '/'"),
        ("//", "segment 1 is empty"),
        ("//api/v1", "segment 1 is empty"),
        ("/api//v1", "segment 2 is empty"),
        ("/api/v1//", "segment 3 is empty"),
        ("/./api", "segment 1 is a dot segment"),
        ("/api/..", "segment 2 is a dot segment"),
        ("/api/../x", "segment 2 is a dot segment"),
        ("/api/%2e%2E/x", "segment 2 is a dot segment"),
        ("/api/%2E", "segment 2 is a dot segment"),
        ("/api/.%2e/", "segment 2 is a dot segment"),
        ("/a%2Fb", "encoded slash"),
        ("/a%2fb", "encoded slash"),
        ("/a%5Cb", "encoded backslash"),
        ("/a%5cb", "encoded backslash"),
        ("/a\\b", "backslash"),
        ("/a\x00b", "NUL byte"),
        ("/a%00b", "encoded NUL"),
        ("/a\tb", "control character 0x09"),
        ("/a\x7fb", "control character 0x7f"),
        ("/a%0ab", "encoded control character 0x0a"),
        ("/a%1F", "encoded control character 0x1f"),
        ("/a%7F", "encoded control character 0x7f"),
        ("/a%C2%85", "C1 control"),
        ("/a b", "character ' '"),
        ("/a?b", "character '?'"),
        ("/a#b", "character '#'"),
        ("/a\"b", "character '\"'"),
        ("/a{b}", "character '{'"),
        ("/a|b", "character '|'"),
        ("/a%zz", "invalid percent-encoding"),
        ("/a%4", "invalid percent-encoding"),
        ("/a%", "invalid percent-encoding"),
        ("/a%%41", "invalid percent-encoding"),
        ("/a%ff", "not valid UTF-8"),
        ("/a%C3", "not valid UTF-8"),
        ("/a%ED%A0%80", "not valid UTF-8"),
        ("/a%25", "double encoding"),
        ("/a%252F", "double encoding"),
        ("/a%41", "unreserved"),
        ("/api/v1/namespaces/%64efault/pods", "unreserved"),
        ("/a%7E", "unreserved"),
        ("/a%2D", "unreserved"),
        ("/a/\u00e9", "raw non-ASCII characters"),
        (b"/a/\xc3\xa9", "raw non-ASCII byte"),
        (b"/a/\xff", "raw non-ASCII byte"),
    ],
)
def test_canonical_path_refuses(raw, message):
    with pytest.raises(NonCanonicalPath, match=message):
        canonical_path(raw)


def test_canonical_path_length_limit():
    at_limit = "/" + "a" * (MAX_PATH_BYTES - 1)
    assert canonical_path(at_limit) == at_limit
    with pytest.raises(NonCanonicalPath, match="longer than 8192 bytes"):
        canonical_path(at_limit + "a")


def test_non_canonical_path_is_a_request_info_error_and_a_value_error():
    assert issubclass(NonCanonicalPath, RequestInfoError)
    assert issubclass(RequestInfoError, ValueError)


def test_canonical_path_then_parse():
    path = canonical_path(b"/api/v1/namespaces/d/pods/web/exec")
    got = parse("POST", path, "command=sh&command=-c&command=echo+hi&stdin=true")
    assert (got.resource, got.subresource, got.name, got.verb) == ("pods", "exec", "web", "create")


# --- properties ------------------------------------------------------------------------------------

PATH_PARTS = st.sampled_from(
    ["", "api", "apis", "v1", "apps", "namespaces", "d", "pods", "web", "watch", "proxy", "status", "finalize", "exec", "."]
)
PATHS = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(PATH_PARTS, st.text(max_size=6)), max_size=9).map("/".join),
    st.lists(PATH_PARTS, max_size=9).map(lambda ps: "/" + "/".join(ps)),
)
QUERY_KEYS = st.sampled_from(
    ["watch", "fieldSelector", "labelSelector", "limit", "timeoutSeconds", "x", ""]
)
QUERY_VALUES = st.one_of(
    st.sampled_from(["true", "false", "0", "", "metadata.name=web", "a in (b)", "!!", "1", "x"]),
    st.text(max_size=12),
)
QUERIES = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="=&;%+abc0Ff,!\\ ", max_size=30),
    st.lists(st.tuples(QUERY_KEYS, QUERY_VALUES), max_size=6).map(urlencode),
)
METHODS = st.one_of(
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get"]), st.text(max_size=8)
)


@PROPERTY
@given(METHODS, PATHS, QUERIES)
def test_parse_only_ever_raises_request_info_error(method, path, query):
    try:
        got = parse(method, path, query)
    except RequestInfoError:
        return
    assert got.path == path
    if got.is_resource_request:
        assert got.api_prefix in ("api", "apis")
        assert got.parts and got.resource == got.parts[0]
        assert got.verb in {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "proxy", ""}
        if len(got.parts) >= 2:
            assert got.name == got.parts[1]
        if len(got.parts) >= 3 and got.verb != "proxy":
            assert got.subresource == got.parts[2]
        else:
            assert got.subresource == ""
    else:
        assert got.verb == method.lower()
        assert (got.resource, got.name, got.parts, got.field_selector) == ("", "", (), "")


@PROPERTY
@given(st.one_of(st.binary(max_size=60), st.text(max_size=60), st.text(alphabet="/.%2eEfF5cC0a", max_size=30)))
def test_canonical_path_only_ever_raises_non_canonical_path(raw):
    try:
        decoded = canonical_path(raw)
    except NonCanonicalPath:
        return
    assert decoded.startswith("/")
    segments = decoded[1:].split("/")
    assert all(segments[:-1]), "only the last segment may be empty"
    assert not any(s in (".", "..") for s in segments)
    assert "\\" not in decoded and "\x00" not in decoded


SEGMENT_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\%\x85"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))


@PROPERTY
@given(st.lists(SEGMENT_TEXT, max_size=6), st.booleans())
def test_canonical_path_round_trips_client_encoded_paths(segments, trailing_slash):
    decoded = "/" + "/".join(segments) + ("/" if trailing_slash and segments else "")
    raw = "/" + "/".join(quote(s, safe="!$&'()*+,;=:@") for s in segments) + ("/" if trailing_slash and segments else "")
    assert canonical_path(raw) == decoded


@PROPERTY
@given(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=12)), max_size=8))
def test_parse_query_round_trips_go_encoded_queries(pairs):
    pairs = [(k.encode("utf-8", "replace").decode(), v.encode("utf-8", "replace").decode()) for k, v in pairs]
    expected: dict[str, list[str]] = {}
    for key, value in pairs:
        expected.setdefault(key, []).append(value)
    assert parse_query(urlencode(pairs)) == expected


LABEL_KEYS = st.one_of(
    st.from_regex(r"\A[a-z0-9]([-a-z0-9_.]{0,10}[a-z0-9])?\Z"),
    st.from_regex(r"\A[a-z0-9]{1,5}(\.[a-z0-9]{1,5}){0,2}/[A-Za-z0-9]([-A-Za-z0-9_.]{0,5}[A-Za-z0-9])?\Z"),
    st.sampled_from(["in", "notin"]),
)
LABEL_VALUES = st.one_of(st.just(""), st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?\Z"))
INTS = st.integers(min_value=0, max_value=2**63 - 1).map(str)
BLANK = st.sampled_from(["", " ", "\t", " \n "])
REQUIREMENTS = st.one_of(
    LABEL_KEYS,
    LABEL_KEYS.map(lambda k: "!" + k),
    st.tuples(LABEL_KEYS, st.sampled_from(["=", "==", "!="]), LABEL_VALUES, BLANK).map(
        lambda t: f"{t[0]}{t[3]}{t[1]}{t[3]}{t[2]}"
    ),
    st.tuples(LABEL_KEYS, st.sampled_from([" in ", " notin "]), st.lists(LABEL_VALUES, max_size=4)).map(
        lambda t: f"{t[0]}{t[1]}({','.join(t[2])})"
    ),
    st.tuples(LABEL_KEYS, st.sampled_from([">", "<"]), INTS).map("".join),
)


@PROPERTY
@given(st.lists(REQUIREMENTS, min_size=1, max_size=4), BLANK)
def test_generated_valid_label_selectors_keep_the_name(requirements, blank):
    selector = (blank + "," + blank).join(requirements)
    got = parse("GET", "/api/v1/pods", urlencode({"labelSelector": selector, "fieldSelector": "metadata.name=web"}))
    assert got.name == "web", selector


@pytest.mark.parametrize("method, path, query, long_running", [
    ("GET", "/api/v1/namespaces/d/pods", "watch=1", True),
    ("GET", "/api/v1/watch/namespaces/d/pods", "", True),
    ("GET", "/api/v1/namespaces/d/pods/web/log", "follow=true", True),
    ("GET", "/api/v1/namespaces/d/pods/web/log", "", True),
    ("GET", "/api/v1/namespaces/d/pods/web/exec", "command=ls", True),
    ("POST", "/api/v1/namespaces/d/pods/web/attach", "", True),
    ("GET", "/api/v1/namespaces/d/pods/web/portforward", "", True),
    ("GET", "/api/v1/namespaces/d/services/web/proxy/healthz", "", True),
    ("GET", "/api/v1/proxy/namespaces/d/pods/web", "", True),
    ("GET", "/api/v1/namespaces/d/pods", "", False),
    ("GET", "/api/v1/namespaces/d/pods", "watch=false", False),
    ("GET", "/api/v1/namespaces/d/pods/web", "", False),
    ("DELETE", "/api/v1/namespaces/d/pods", "", False),
    ("GET", "/logs/kube-apiserver.log", "", False),  # non-resource: kube-apiserver's timeout applies
])
def test_long_running_as_kube_apiserver_decides_it(method, path, query, long_running):
    assert is_long_running(parse(method, path, query)) is long_running
