"""Masking by Secret value and the widened keyword names: sans-IO, every shape and every cut."""

import base64
import json
import random

from urllib.parse import quote

import pytest

from kube.requestinfo import parse
from masking import PLACEHOLDER, Detectors, MaskingError, SecretValues, TextMasker, response_masker
from masking.detectors import name_is_secret
from masking.objects import ObjectMasker
from masking.values import candidates, excluded, mask_values_in_record, secret_entries

M = PLACEHOLDER
VALUE = "Sup3r-s3cret-v4lue"
UNICODE = "pässwört-ünïcode-9"
SPECIAL = "p@ss:w0rd/with#chars"
VALUES = SecretValues.build([("shop", "db", [VALUE.encode(), UNICODE.encode(), SPECIAL.encode()])])


def b64(data) -> str:
    return base64.b64encode(data if isinstance(data, bytes) else data.encode()).decode()


def leaks(out: str, value=VALUE) -> bool:
    raw = value.encode()
    inner = [base64.b64encode(pad + raw)[4 if pad else 0:][:16].decode() for pad in (b"", b"x", b"xy")]
    return any(form in out for form in [value, json.dumps(value)[1:-1], *inner])


# -- the exclusion rule ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "short7!", "postgres", "payments", "ADMINUSER", "20261120", "10.96.0.1", "2026-11-20", "xxxxxxxxxxxx",
    "00000000000000000000", "ab" * 8, f"x{M}x", "x" * 20000,
])
def test_too_short_too_common_or_too_long(value):
    assert excluded(value.encode())


@pytest.mark.parametrize("value", ["admin123", "Password1", "hunter2hunter2", "correcthorsebattery", "12345678901234567",
                                   "svc-payments", VALUE])
def test_kept(value):
    assert not excluded(value.encode())


def test_names_of_namespaces_and_secrets_are_not_values():
    built = SecretValues.build([("payments-eu", "db", [b"payments-eu", b"Other-v4lue-77"]), ("x", "app-credentials",
                                                                                            [b"app-credentials"])])
    assert built.values == 1
    assert "namespace payments-eu" == Detectors.none().with_values(built).mask_text("namespace payments-eu", {})


@pytest.mark.parametrize("key", ["username", "DB_USER", "ca.crt", "tls.crt", "id_rsa.pub", "namespace", "db-host",
                                 "PORT", "database", "email"])
def test_public_or_identifying_keys_contribute_nothing(key):
    assert candidates(key, b"Sup3r-s3cret-v4lue") == []


@pytest.mark.parametrize("key", ["password", "tls.key", "token", "api.key", "config", ".dockerconfigjson"])
def test_other_keys_contribute_their_value(key):
    assert candidates(key, b"  Sup3r-s3cret-v4lue\n") == [b"Sup3r-s3cret-v4lue"]


def test_files_contribute_their_secret_named_entries():
    dotenv = b"LOG_LEVEL=info\nexport DB_PASS='dotenv-Pa55-word'\nmysql_pwd: yaml-Pa55-word\nHOST=db.svc\n"
    assert candidates("app.env", dotenv)[1:] == [b"dotenv-Pa55-word", b"yaml-Pa55-word"]
    docker = json.dumps({"auths": {"r.example": {"username": "bot", "password": "docker-Pa55-word",
                                                 "auth": b64("bot:docker-Auth-55")}}}).encode()
    assert sorted(candidates(".dockerconfigjson", docker)[1:]) == [b"docker-Auth-55", b"docker-Pa55-word"]


def test_secret_entries_decode_data():
    obj = {"data": {"password": b64(VALUE), "username": b64("someone-long"), "bad": "!!"}}
    assert secret_entries(obj) == [VALUE.encode()]


def test_repr_and_report_never_show_values():
    assert VALUE not in repr(VALUES) and "3 values" in repr(VALUES)
    counts = {}
    Detectors.none().with_values(VALUES).mask_text(f"a {VALUE} b", counts)
    assert counts == {"secret-value": 1}


# -- forms -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    f"pw is {VALUE} ok",
    f"dsn postgres://u:{VALUE}@h/db",
    "escaped " + json.dumps({"p": VALUE + '"'})[1:],
    f"url https://u:{quote(SPECIAL, safe='')}@h/ and {VALUE}",
    "b64 " + b64(VALUE),
    "b64 of a line " + b64(VALUE + "\n"),
    "inside a blob " + b64("user:" + VALUE),
    "inside a blob at offset 2 " + b64("xy" + VALUE + "tail"),
    "url-safe " + base64.urlsafe_b64encode(b"\xfb\xff" + VALUE.encode()).decode(),
    f"unicode {UNICODE}!",
])
def test_every_form_is_masked(text):
    out = Detectors.none().with_values(VALUES).mask_text(text, {})
    assert M in out and not leaks(out)
    assert not leaks(out, UNICODE) and quote(SPECIAL, safe="") not in out


def test_base64_masking_covers_the_groups_that_carry_the_value():
    blob = b64("head-bytes:" + VALUE + ":tail-bytes")
    out = Detectors.none().with_values(VALUES).mask_text(blob, {})
    before, _, after = out.partition(M)
    decoded_before = base64.b64decode(before[: len(before) // 4 * 4])
    assert VALUE[:1].encode() not in decoded_before[len(b"head-bytes:"):]
    assert len(after) < len(b64(":tail-bytes")) + 4


# -- streams -----------------------------------------------------------------------------------------


STREAM = (f"line one\nthe value {VALUE} is here, and {b64('x' + VALUE)} too, {UNICODE}\n").encode()


def test_a_value_split_at_every_byte():
    detectors = Detectors.default().with_values(VALUES)
    for cut in range(1, len(STREAM)):
        masker = TextMasker(detectors)
        out = (masker.feed(STREAM[:cut]) + masker.feed(STREAM[cut:]) + masker.flush()).decode()
        assert not leaks(out) and not leaks(out, UNICODE), cut
        assert out.count(M) == 3


def test_random_small_frames():
    rnd = random.Random(7)
    for _ in range(200):
        masker = TextMasker(Detectors.default().with_values(VALUES))
        out, i = b"", 0
        while i < len(STREAM):
            k = rnd.randint(1, 9)
            out += masker.feed(STREAM[i : i + k])
            i += k
        out += masker.flush()
        assert not leaks(out.decode()), out


def test_only_a_possible_start_is_held():
    masker = TextMasker(Detectors.none().with_values(VALUES))
    assert masker.feed(b"prompt $ ") == b"prompt $ " and masker.held == 0
    assert masker.feed(b"echo Sup3r-s3") == b"echo " and masker.held == 8
    assert masker.feed(b"cret-v4lue\n") == f"{M}\n".encode()


def test_a_pause_releases_a_started_value_masked_and_masks_the_rest_later():
    masker = TextMasker(Detectors.none().with_values(VALUES))
    assert masker.feed(b"pw: Sup3r-s3c") == b"pw: "
    assert masker.flush() == M.encode()
    assert masker.feed(b"ret-v4lue done\n") == f"{M} done\n".encode()
    short = TextMasker(Detectors.none().with_values(VALUES))
    assert short.feed(b"x Sup3") == b"x "
    assert short.flush() == b"Sup3"  # under 8 bytes: not yet anything to mask
    assert short.feed(b"r-s3cret-v4lue\n") == f"{M}\n".encode()


def test_a_stream_without_values_is_not_held():
    masker = TextMasker(Detectors.none().with_values(VALUES))
    data = bytes(range(256)) * 64
    assert masker.feed(data) == data


# -- JSON --------------------------------------------------------------------------------------------


def mask_json(doc, path="/api/v1/namespaces/shop/configmaps", query="", chunk=7, values=VALUES):
    info = parse("GET", path, query)
    masker = response_masker(info, 200, "application/json", mask_secrets=True, detectors=Detectors.default(),
                             values=values)
    body = json.dumps(doc).encode() if not isinstance(doc, bytes) else doc
    out = b"".join(masker.feed(body[i : i + chunk]) for i in range(0, len(body), chunk)) + masker.close()
    return out.decode(), masker.report.counts


def configmap(**data):
    return {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c", "namespace": "shop"}, "data": data}


def test_every_string_and_key_of_an_object():
    doc = configmap(innocuous=VALUE, note=f"x {UNICODE} y", blob=b64(VALUE), **{VALUE: "as a key"})
    doc["metadata"]["annotations"] = {"example.com/note": f"copy of {VALUE}"}
    doc["metadata"]["labels"] = {"deep": [{"list": [VALUE]}]}
    out, counts = mask_json(doc)
    assert not leaks(out) and not leaks(out, UNICODE)
    got = json.loads(out)
    assert got["data"] == {"innocuous": M, "note": f"x {M} y", "blob": M, M: "as a key"}
    assert counts["secret-value"] == 6


@pytest.mark.parametrize("shape", ["list", "table", "watch", "status"])
def test_every_response_shape(shape):
    item = configmap(innocuous=VALUE)
    if shape == "list":
        doc, query = {"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {}, "items": [item, item]}, ""
    elif shape == "table":
        doc = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "columnDefinitions": [],
               "rows": [{"cells": ["c", VALUE], "object": item}]}
        query = ""
    elif shape == "status":
        doc = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": f"admission denied: {VALUE}"}
        query = ""
    else:
        doc = b"".join(json.dumps({"type": t, "object": item}).encode() + b"\n" for t in ("ADDED", "MODIFIED"))
        query = "watch=1"
    out, counts = mask_json(doc, query=query)
    assert not leaks(out) and counts["secret-value"] >= 1


def test_without_values_json_is_unchanged():
    out, counts = mask_json(configmap(innocuous=VALUE), values=None)
    assert VALUE in out and "secret-value" not in counts


def test_recorded_request_bodies():
    body = json.dumps(configmap(innocuous=VALUE), separators=(",", ":")).encode()
    assert VALUE.encode() not in mask_values_in_record(body, VALUES)
    assert mask_values_in_record(b"plain " + VALUE.encode(), VALUES) == f"plain {M}".encode()
    assert mask_values_in_record(body, None) is body


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize("chunk", [64 * 1024, 1000])
def test_hostile_nesting_fails_closed(depth, chunk):
    body = b'{"kind":"ConfigMap","data":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(MaskingError, match="nested too deeply"):
        mask_json(body, chunk=chunk, values=None)


def test_watch_event_nested_too_deeply_fails_closed():
    body = b'{"type":"ADDED","object":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}\n"
    with pytest.raises(MaskingError, match="nested too deeply"):
        mask_json(body, query="watch=1", values=None)


# -- keyword names and lines (detectors) -----------------------------------------------------------


@pytest.mark.parametrize("name", ["DB_PASS", "MYSQL_PWD", "db_pass", "pwd", "passwd", "dbPass", "example.com/db-password",
                                  "db.password", "GITHUB_TOKEN", "smtp_secret", "ENCRYPTION_KEY", "session_key"])
def test_secret_names(name):
    assert name_is_secret(name)


@pytest.mark.parametrize("name", ["PASSENGER_COUNT", "bypass", "compass_heading", "DB_PASSWORD_FILE", "secretName",
                                  "secret.reloader.stakater.com/reload", "token.json", "key", "monkey",
                                  "kubernetes.io/service-account.name"])
def test_not_secret_names(name):
    assert not name_is_secret(name)


def masked_object(obj):
    ObjectMasker(mask_secrets=True, detectors=Detectors.default()).object(obj)
    return obj


@pytest.mark.parametrize("name", ["DB_PASS", "MYSQL_PWD"])
def test_env_spellings(name):
    pod = {"kind": "Pod", "spec": {"containers": [{"name": "c", "env": [{"name": name, "value": "h4rd-c0ded"}]}]}}
    assert masked_object(pod)["spec"]["containers"][0]["env"][0]["value"] == M


def test_annotation_value_under_a_secret_key():
    obj = {"kind": "Pod", "metadata": {"annotations": {"example.com/db-password": "h4rd-c0ded", "owner": "team-a"}}}
    assert masked_object(obj)["metadata"]["annotations"] == {"example.com/db-password": M, "owner": "team-a"}


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("db_pass", "h4rd-c0ded", M),
    ("my.ini", "[client]\nuser = app\npass = h4rd-c0ded\n", f"[client]\nuser = app\npass = {M}\n"),
    ("app.yaml", "db:\n  pwd: h4rd-c0ded\n", f"db:\n  pwd: {M}\n"),
    ("settings", "MYSQL_PWD=h4rd-c0ded", f"MYSQL_PWD={M}"),
])
def test_configmap_spellings(key, value, expected):
    assert masked_object({"kind": "ConfigMap", "data": {key: value}})["data"][key] == expected


@pytest.mark.parametrize(("line", "expected"), [
    ("DB_PASS=h4rd-c0ded", f"DB_PASS={M}"),
    ("pwd: h4rd-c0ded", f"pwd: {M}"),
    ("export MYSQL_PWD='h4rd-c0ded'", f"export MYSQL_PWD='{M}'"),
    ("pass = h4rd-c0ded", f"pass = {M}"),
    ("passenger=5 bypass=yes compass_heading=north", "passenger=5 bypass=yes compass_heading=north"),
])
def test_log_line_spellings(line, expected):
    masker = TextMasker(Detectors.default())
    assert (masker.feed(line.encode()) + masker.flush()).decode() == expected


def test_detectors_with_the_same_values_are_made_once_and_new_values_make_new_ones():
    from masking import Detectors, SecretValues

    base = Detectors.default()
    first = SecretValues.build([("shop", "db", [b"Tr0ub4dor-3-horse-battery"])])
    second = SecretValues.build([("shop", "db", [b"correct-horse-battery-staple-9"])])
    with_first = base.with_values(first)
    assert base.with_values(first) is with_first and with_first is not base
    with_second = base.with_values(second)
    assert with_second is not with_first
    assert b"correct-horse-battery-staple-9" not in with_second.mask_bytes(b"pw correct-horse-battery-staple-9 end", {})
    assert b"Tr0ub4dor-3-horse-battery" not in base.with_values(first).mask_bytes(b"pw Tr0ub4dor-3-horse-battery end", {})
    assert base.mask_bytes(b"pw Tr0ub4dor-3-horse-battery end", {}).count(b"Tr0ub4dor-3-horse-battery") == 1
    assert with_first.with_values(second)._values is second  # a copy starts with nothing kept


def test_a_request_path_is_masked_once_per_detectors_and_as_mask_text_masks_it(monkeypatch):
    from masking import Detectors, SecretValues

    values = SecretValues.build([("shop", "db", [b"Tr0ub4dor-3-horse-battery"])])
    detectors = Detectors.default().with_values(values)
    path = "/api/v1/namespaces/shop/configmaps/Tr0ub4dor-3-horse-battery"
    masked = detectors.mask_path(path)
    assert masked == detectors.mask_text(path, {}) and "Tr0ub4dor" not in masked
    calls = []
    monkeypatch.setattr(Detectors, "mask_text", lambda self, text, counts: calls.append(text) or text)
    assert detectors.mask_path(path) == masked and calls == []
    # Other detectors (other values) remember their own.
    other = Detectors.default().with_values(SecretValues.build([("shop", "db", [b"correct-horse-battery-staple-9"])]))
    assert other.mask_path(path) == path and calls == [path]


def test_the_paths_a_detectors_remembers_are_bounded():
    from masking import detectors as module

    detectors = module.Detectors.default()
    for i in range(module.PATHS_KEPT + 10):
        assert detectors.mask_path(f"/api/v1/namespaces/shop/pods/p{i}") == f"/api/v1/namespaces/shop/pods/p{i}"
    long_path = "/api/v1/namespaces/shop/pods/" + "a" * module.PATHS_KEPT_LENGTH
    assert detectors.mask_path(long_path) == long_path
    assert len(detectors._paths) <= module.PATHS_KEPT and long_path not in detectors._paths
