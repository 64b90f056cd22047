"""The chain's fast canonical JSON is byte-for-byte the rfc8785 package's output."""

import math

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.chain import canonical_json, fast_chain_hash
from audit.document import GENESIS_HASH, chain_hash, event_document
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
