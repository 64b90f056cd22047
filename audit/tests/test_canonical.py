"""The chain's fast canonical JSON is byte-for-byte the rfc8785 package's output."""

import math
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace

import msgspec
import pytest
import rfc8785
from django.db import connection
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import chain as chain_module
from audit.chain import _complete, _msgspec_canonical, _NeedsReference, _Staged, canonical_json, fast_chain_hash
from audit.document import GENESIS_HASH, chain_hash, event_document, timestamp
from audit.events import prepare
from audit.models import Stage
from audit.tests.factories import append, event

floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 1e-7, 1e-4, 9.999e-5, 12.0, 12.5, 1e15 + 0.5, 1e16, 1e21, 1e22, 2.0**53, 2.0**60, 5e-324]
)
ints = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
keys = texts | st.sampled_from(["a", "B", "é", "\U0001f600", "\ufb01", "\x00", "a\x7f"])
scalars = st.none() | st.booleans() | ints | floats | texts
documents = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=6),
    max_leaves=40,
)


@settings(max_examples=1000, deadline=None)
@given(documents)
def test_canonical_json_equals_rfc8785(document):
    assert canonical_json(document) == rfc8785.dumps(document)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 2**53, -(2**53), object(), {1: "x"}, "\ud800"])
def test_what_rfc8785_refuses_is_refused(value):
    with pytest.raises((rfc8785.CanonicalizationError, TypeError, ValueError)):
        rfc8785.dumps({"v": value})
    with pytest.raises((rfc8785.CanonicalizationError, TypeError, ValueError)):
        canonical_json({"v": value})


@pytest.mark.django_db
def test_appended_events_hash_as_the_reference_does():
    rows = append(
        event(0, latency_ms=0.00001234, masking_counts={"tökén": 2, "aws": 1}, user_username="ünï\u2028"),
        event(1, latency_ms=3.0e-5, recording={"kind": "exec", "pod": "p", "command": ["sh"], "asciicast": "x\n",
                                             "duration_s": 3.25e-6}),
    )
    prev = GENESIS_HASH
    for row in rows:
        session_id = str(row.session.session_id) if row.session else None
        document = event_document(row, session_id, getattr(row, "recording", None))
        assert row.hash == chain_hash(prev, document) == fast_chain_hash(prev, document)
        prev = row.hash


# -- the msgspec path: exact whenever it answers, and it answers for ordinary event documents ----

hostile_texts = texts | st.sampled_from([
    "", "\x00", "\x1f", "\x7f", "\u2028", "\u2029", "/", "\\/", '"', "\\", "\ud7ff", "\ue000", "\uffff",
    "\U00010000", "\U0010ffff", "é", "\ufb01", "12345678901234567", "9007199254740993", "0.1", "1e16",
])
odd_values = st.sampled_from([
    uuid.UUID(int=7), b"bytes", bytearray(b"x"), (1, "a"), datetime(2026, 1, 1, tzinfo=UTC), date(2026, 1, 1),
    Decimal("1.5"), Stage.RESPONSE_COMPLETE, {1: "x"}, {("a",): 1}, 2**53, -(2**53), 10**30, 1.0, -0.0, 0.0, 1e16,
    1e21, 1e-5, 1e-7, 5e-324, 2.0**60, math.nan, math.inf, {"k": 12.0}, {"\U0001f600": 1, "\ufb01": 2},
])
hostile_documents = st.recursive(
    st.none() | st.booleans() | ints | floats | hostile_texts | odd_values,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys | hostile_texts, children, max_size=6),
    max_leaves=40,
)


def _reference(document):
    try:
        return rfc8785.dumps(document)
    except (rfc8785.CanonicalizationError, TypeError, ValueError):
        return None


@settings(max_examples=2000, deadline=None)
@given(hostile_documents)
def test_msgspec_path_is_exact_or_declines(document):
    """Whatever it is given, the msgspec path writes what rfc8785 writes, or hands over to the others."""
    try:
        data = _msgspec_canonical(document)
    except _NeedsReference:
        return
    assert data == _reference(document)


@settings(max_examples=500, deadline=None)
@given(hostile_documents)
def test_canonical_json_matches_rfc8785_on_hostile_documents(document):
    expected = _reference(document)
    if expected is None:
        with pytest.raises((rfc8785.CanonicalizationError, TypeError, ValueError)):
            canonical_json(document)
    else:
        assert canonical_json(document) == expected


def test_msgspec_escapes_every_character_as_rfc8785():
    """The claim the msgspec path rests on, for every code point (lone surrogates: refused by both)."""
    characters = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(characters), 4096):
        text = "".join(characters[start:start + 4096])
        assert msgspec.json.encode(text) == rfc8785.dumps(text)


def _prepared_document(values: dict, recording=None) -> dict:
    prepared = prepare({**event(0), **values}, max_body=65536, max_recording=1 << 20)
    view = SimpleNamespace(**prepared.fields, seq=12)
    recorded = SimpleNamespace(**prepared.recording) if prepared.recording is not None else None
    return event_document(view, "0b7c1f4e-3f0e-4c43-9a38-5bbf1f0e2a11", recorded)


@settings(max_examples=500, deadline=None)
@given(
    text=hostile_texts, latency=st.none() | st.floats(min_value=0, max_value=1e12),
    counts=st.dictionaries(hostile_texts, st.integers(min_value=-5, max_value=2**60), max_size=3),
    body=st.binary(max_size=64) | hostile_texts.map(lambda t: t.encode("utf-8", "replace")),
    code=st.none() | st.integers(min_value=0, max_value=1000), recorded=st.booleans(),
)
def test_event_documents_hash_as_the_reference_does(text, latency, counts, body, code, recorded):
    """The documents the chain hashes, with hostile strings in every text field prepare() lets through."""
    recording = {"kind": "exec", "pod": text, "command": [text], "asciicast": text, "duration_s": latency,
                 "ports": [80]} if recorded else None
    document = _prepared_document({
        "user_username": text, "object_name": text, "request_uri": "/api/" + text, "user_agent": text,
        "decision_reason": text, "response_message": text, "user_groups": [text, "x"], "latency_ms": latency,
        "masking_counts": counts, "response_body": body, "response_code": code, "mcp_tool": text[:100],
    }, recording)
    assert canonical_json(document) == rfc8785.dumps(document)


def test_ordinary_event_documents_take_the_msgspec_path():
    """The fast path must not silently decline the documents it exists for (a cost, not a correctness issue)."""
    documents = [
        _prepared_document({}),
        _prepared_document({"stage": "RequestReceived", "response_code": None, "latency_ms": None,
                            "response_body": b"", "masking_counts": {"token": 2}}),
        _prepared_document({"user_username": "ünïcødé \u2028 agent", "response_body": b'{"a":"\\u00e9\xc3\xa9"}'}),
    ]
    for document in documents:
        assert _msgspec_canonical(document) == rfc8785.dumps(document)


@settings(max_examples=1000, deadline=None)
@given(st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                                timezone(timedelta(hours=-11))])))
def test_document_timestamps_are_strftimes_text(value):
    """timestamp() as documents always had it (strftime, unpadded before the year 1000)."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        return
    assert timestamp(value) == utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@settings(max_examples=300, deadline=None)
@given(latency=st.none() | floats | st.integers(min_value=0, max_value=10**6).map(float),
       duration=st.none() | floats | st.sampled_from([0.0, -0.0, 3.0, 2.0**53, 2.0**53 + 2, 1e21]))
def test_staged_events_hash_as_the_reference_does(latency, duration):
    """Integral floats are handed to the encoder as ints: the hash is the reference's all the same."""
    prepared = prepare({**event(0), "recording": {"kind": "exec", "pod": "p", "asciicast": "x\n"}},
                       max_body=65536, max_recording=1 << 20)
    prepared.fields["latency_ms"] = latency  # as a journal record of a serving process could hold it
    prepared.recording["duration_s"] = duration
    staged = _Staged(prepared, connection)
    view = SimpleNamespace(**_complete(prepared.fields), seq=41)
    expected = chain_hash(GENESIS_HASH, event_document(view, "f00", SimpleNamespace(**prepared.recording)))
    assert staged.chain_hash(GENESIS_HASH, 41, "f00") == expected
    assert type(prepared.fields["latency_ms"]) is type(latency)  # the stored row keeps its float


def test_an_event_with_an_integral_latency_takes_the_msgspec_path(monkeypatch):
    """A latency of exactly 1 ms (the audit writer bench's events) still takes the fast path."""
    taken = []
    monkeypatch.setattr(chain_module, "_json_ready", lambda value: taken.append(value) or value)
    _Staged(prepare(event(0, latency_ms=1.0), max_body=65536, max_recording=1 << 20), connection)
    assert taken == []
