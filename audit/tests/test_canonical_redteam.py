"""Red team of the chain's fast canonical JSON: inputs picked at the edges each shortcut rests on.

Each is checked against the rfc8785 package byte for byte (a difference is a chain that does not
verify, or two documents with one hash): key order where UTF-16 and code point order part
(U+E000 and the supplementary planes), strings with long digit runs, float texts at the ends of
the range where Python's repr is ECMAScript's, integers at 2**53, and timestamps at the year-1000
and year-9999 edges and in zones with second offsets.
"""

import math
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.chain import canonical_json
from audit.document import timestamp

EDGE_CHARS = ["a", "\x7f", "\x00", "\u2028", "\ufeff", "\ud7ff", "\ue000", "\uf8ff", "\uffff", "\U00010000",
              "\U0001f600", "\U0010ffff", "0", "9", '"', "\\", "\x1f"]
edge_texts = st.lists(st.sampled_from(EDGE_CHARS), max_size=6).map("".join) | st.text(
    alphabet=st.sampled_from(["0", "1", "9", "-", ".", "e"]), min_size=14, max_size=40)


def _around(x: float) -> list[float]:
    return [math.nextafter(x, -math.inf), x, math.nextafter(x, math.inf)]


EDGE_FLOATS = [v for x in (1e-4, 1e16, 1e21, 1e-7, 2.0**53, 0.5, 123456789012345.6) for v in _around(x)] + [
    5e-324, -5e-324, -0.0, 0.1 + 0.2, 1 / 3, 9007199254740993.0, 1e15 + 0.25, 1e-4 * 3]
EDGE_INTS = [2**53 - 1, -(2**53 - 1), 10**15 - 1, 10**15, -(10**15), 999_999_999_999_999]
edge_scalars = st.none() | st.booleans() | st.sampled_from(EDGE_FLOATS) | st.sampled_from(EDGE_INTS) | edge_texts
edge_documents = st.recursive(
    edge_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(edge_texts, children, max_size=8),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(edge_texts, edge_documents, max_size=10))
def test_edge_documents_are_rfc8785(document):
    try:
        expected = rfc8785.dumps(document)
    except (rfc8785.CanonicalizationError, TypeError, ValueError):
        with pytest.raises((rfc8785.CanonicalizationError, TypeError, ValueError)):
            canonical_json(document)
        return
    assert canonical_json(document) == expected


@pytest.mark.parametrize("value", EDGE_FLOATS + EDGE_INTS)
def test_edge_numbers_are_rfc8785(value):
    for document in ({"v": value}, {"v": [value, str(value)], "w": {"\ue000": value, "\U0001f600": value}}):
        assert canonical_json(document) == rfc8785.dumps(document)


@pytest.mark.parametrize("value", [
    datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(1000, 1, 1, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1000, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),  # the year 999 in UTC
    datetime(2026, 3, 29, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")),  # a gap
    datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Berlin")),  # a fold
    datetime(2026, 1, 1, tzinfo=timezone(timedelta(seconds=-1))),
    datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=23, minutes=59, seconds=59, microseconds=1))),
    datetime(1900, 1, 1, tzinfo=ZoneInfo("Asia/Kolkata")),  # local mean time, second offsets
])
def test_edge_timestamps_are_strftimes_text(value):
    assert timestamp(value) == value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
