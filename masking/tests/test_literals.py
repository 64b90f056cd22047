"""The multi-pattern engine under the detectors and the Secret values (masking/literals.py)."""

import os
import random
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from masking import PLACEHOLDER, Detectors, SecretValues, TextMasker
from masking.detectors import BUILTIN, _anchored
from masking import literals
from masking.literals import _MAX_LITERAL, SHORT_INPUT, Literals


def naive(patterns, data):
    out = set()
    for index, pattern in enumerate(patterns):
        i = data.find(pattern)
        while i >= 0:
            out.add((index, i, i + len(pattern)))
            i = data.find(pattern, i + 1)
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=6), min_size=1, max_size=8, unique=True),
       st.binary(max_size=80), st.sampled_from(["auto", "aho-corasick"]))
def test_every_occurrence_of_every_pattern_overlaps_included(patterns, noise, engine):
    data = noise + b"".join(patterns) + noise[::-1] + b"".join(reversed(patterns))
    for text in (data, data + b"." * SHORT_INPUT + data):  # short inputs go to the automaton in any case
        assert sorted(Literals(patterns, engine).find(text)) == sorted(naive(patterns, text))


def test_a_set_too_large_for_a_quick_compile_uses_the_automaton_and_finds_the_same(monkeypatch):
    rnd = random.Random(11)
    patterns = [bytes(rnd.randrange(256) for _ in range(rnd.randint(8, 20))) for _ in range(300)]
    data = bytes(rnd.randrange(256) for _ in range(5000)).join(patterns[::7])
    compiled = Literals(patterns)
    monkeypatch.setattr(literals, "HYPERSCAN_MAX_PATTERNS", 100)
    automaton = Literals(patterns)
    assert compiled._db is not None and automaton._db is None
    assert sorted(compiled.find(data)) == sorted(automaton.find(data)) == sorted(naive(patterns, data))


def test_patterns_with_nul_bytes_or_past_the_literal_limit_are_found_whole():
    # The binding hands literals to the compiler as C strings: a NUL would cut one short.
    rnd = random.Random(3)
    long = bytes(rnd.randrange(1, 256) for _ in range(_MAX_LITERAL + 500))
    patterns = [b"\0ab\0\xffcd", b"key\0\0value", long, b"\0\0\0", b"ab"]
    data = b"..key\0\0value.." + long + b"\0ab\0\xffcd\0\0\0\0" + b"key\0\0valuX"
    assert sorted(Literals(patterns).find(data)) == sorted(naive(patterns, data))


def test_a_binary_secret_value_with_nul_bytes_is_masked_whole():
    value = b"\x01\x02head\0\0tail-of-the-secret\xfe"
    values = SecretValues.build([("shop", "bin", [value])])
    masker = TextMasker(Detectors.none().with_values(values))
    stream = b"tar header " + value + b" trailer"
    out = b"".join(masker.feed(stream[i : i + 5]) for i in range(0, len(stream), 5)) + masker.flush()
    assert out == b"tar header " + PLACEHOLDER.encode() + b" trailer"


def test_scans_from_several_threads_at_once():
    patterns = [os.urandom(12) for _ in range(200)]
    literals = Literals(patterns)
    data = os.urandom(1 << 16) + b"".join(patterns)
    expected = sorted(naive(patterns, data))
    errors = []

    def scan():
        try:
            for _ in range(50):
                assert sorted(literals.find(data)) == expected
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=scan) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


WORDS = [n for d in BUILTIN for n in d.needles] + [
    b"password=", b"Password: ", b"=", b"hunter2-xyz", b" ", b"\n", b"AKIAABCDEFGHIJKLMNOP", b"ghp_" + b"a" * 36,
    b"eyJhbGciOi.eyJzdWIiOi.sig", b"://u:p4ss@h", b"\"auth\": \"dXNlcjpwYXNz\"", b"-----BEGIN RSA PRIVATE KEY-----",
    b"MIIEow\n", b"-----END RSA PRIVATE KEY-----", b"abc1Q~" + b"x" * 32, b"sk-" + b"Z" * 40, b"'", b"\"",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=30))
def test_trying_a_pattern_at_its_needles_finds_what_a_scan_finds(words):
    data = b"".join(words)
    low = data.lower()
    for det in BUILTIN:
        if not det.needles:
            continue
        src = low if det.lower else data
        starts = {s for k, s, _ in Literals(list(det.needles)).find(low)}
        assert [m.span() for m in _anchored(det, src, starts)] == [m.span() for m in det.pattern.finditer(src)]


def test_a_stream_past_the_short_input_limit_is_masked_the_same_at_every_cut():
    """Chunks long enough for Hyperscan: every split of the stream masks what one piece masks."""
    value = b"Sup3r-s3cret-v4lue"
    values = SecretValues.build([("shop", "db", [value])])
    detectors = Detectors.default().with_values(values)
    pad = b"2026-12-06T10:00:00Z INFO request served path=/api/items status=200\n" * (SHORT_INPUT // 60 + 1)
    stream = pad + b"password=hunter2-hunter2 copied " + value + b" token: ghp_" + b"a" * 36 + b"\n" + pad
    whole = TextMasker(detectors)
    expected = whole.feed(stream) + whole.flush()
    assert value not in expected and b"hunter2" not in expected and expected.count(PLACEHOLDER.encode()) == 3
    for cut in range(len(pad) - 8, len(stream) - len(pad) + 8):
        masker = TextMasker(detectors)
        assert masker.feed(stream[:cut]) + masker.feed(stream[cut:]) + masker.flush() == expected, cut
