"""Every occurrence of a set of byte strings in one pass: the engine under the detectors and values.

``Literals(patterns).find(data)`` returns ``(index, start, end)`` for every occurrence of every
pattern, overlapping ones included, in no particular order.  The detectors use it for their
needles (one pass says which patterns can match and where they can start), the Secret values for
their forms (masking/values.py).

Why Hyperscan (pip ``hyperscan``, Intel's engine, vectorscan on ARM): measured on this machine
against the Rust aho-corasick crate (``ahocorasick_rs``), the 4 KiB-chunk log stream masked with
1,000 known values ran at 157 MB/s (Hyperscan for needles and values), 138 MB/s (Hyperscan
needles, aho-corasick DFA values) and 112 MB/s (contiguous NFA values); one pass over 4 KiB costs
~1.4 us against ~6.5 us (DFA) and ~9-13 us (NFA).  But Hyperscan compiles slowly and more than
linearly (literal mode: ~1 s for 30,000 patterns, ~8 s for 120,000; aho-corasick's NFA 0.02 s
and 0.15 s), takes ~2.3 KiB of resident memory per pattern against ~0.2 KiB, and the DFA took
120 MiB for 10,000 values.  So a set of up to ``HYPERSCAN_MAX_PATTERNS`` patterns (the detectors'
needles; the forms of up to ~5,400 Secret values: at most ~0.5 s and ~35 MiB) is compiled by
Hyperscan, which releases the interpreter lock while it compiles (the
values are rebuilt in a worker thread, gateway/secretvalues.py); a larger one, and any set
searched only in short texts (``engine="aho-corasick"``: the values' heads, looked for in the
last bytes of a chunk), by the NFA.  The NFA is built for every set and also answers for inputs
under ``SHORT_INPUT`` bytes (JSON strings), where a call's fixed cost matters more than speed.

Two limits of the binding are handled here, not left to callers: a literal is passed to the
compiler as a C string (a NUL byte would cut it short) and may be at most ``_MAX_LITERAL`` bytes.
Such a pattern is found by an anchor, its longest NUL-free run (at most ``_MAX_LITERAL`` bytes),
and confirmed by comparing the whole pattern where the anchor puts it; a pattern of NUL bytes
only is looked for with ``bytes.find``.  A scratch space is allocated per thread (Hyperscan
refuses a scratch in use by another scan, and the scan releases the interpreter lock).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import ahocorasick_rs
import hyperscan

_MAX_LITERAL = 16000  # the compiler refuses longer literals ("Pattern length exceeds limit")
HYPERSCAN_MAX_PATTERNS = 16384
SHORT_INPUT = 192  # below this many bytes the automaton answers (fixed cost ~0.24 us + ~2.5 ns/byte)


def _anchor(pattern: bytes) -> tuple[int, bytes]:
    """(offset, anchor): the longest run of ``pattern`` without NUL bytes, cut to the literal limit."""
    best, offset, pos = b"", 0, 0
    for run in pattern.split(b"\0"):
        if len(run) > len(best):
            best, offset = run, pos
        pos += len(run) + 1
    return offset, best[:_MAX_LITERAL]


class Literals:
    """An immutable set of byte strings and their compiled database; safe to share between threads."""

    __slots__ = ("_ac", "_db", "_local", "_entries", "_direct", "_scanned", "_confirmed", "count")

    def __init__(self, patterns: Sequence[bytes], engine: str = "auto"):
        self.count = len(patterns)
        if any(not p for p in patterns):
            raise ValueError("an empty pattern matches everywhere")
        self._db = self._ac = None
        if patterns:
            # Always built (cheap): it answers for short inputs, where a Hyperscan call's fixed cost
            # (~0.65 us against ~0.24 us) outweighs its speed.
            self._ac = ahocorasick_rs.BytesAhoCorasick(
                list(patterns), implementation=ahocorasick_rs.Implementation.ContiguousNFA)
        if engine == "aho-corasick" or self.count > HYPERSCAN_MAX_PATTERNS:
            return
        literals: dict[bytes, list[tuple[int, int, int]]] = {}
        self._scanned: list[tuple[int, bytes]] = []  # patterns of NUL bytes only
        self._confirmed: dict[int, bytes] = {}  # patterns found by an anchor
        for index, pattern in enumerate(patterns):
            if len(pattern) <= _MAX_LITERAL and b"\0" not in pattern:
                literals.setdefault(pattern, []).append((index, 0, len(pattern)))
                continue
            offset, anchor = _anchor(pattern)
            if anchor:
                self._confirmed[index] = pattern
                literals.setdefault(anchor, []).append((index, offset, len(pattern)))
            else:
                self._scanned.append((index, pattern))
        keys = list(literals)
        self._entries = [tuple(literals[k]) for k in keys]
        # Every literal is exactly one pattern, in order: the engine's answer is the answer.
        self._direct = not self._scanned and len(keys) == self.count and all(
            entries == ((i, 0, len(k)),) for i, (k, entries) in enumerate(zip(keys, self._entries)))
        self._local = threading.local()
        if keys:
            db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            db.compile(expressions=keys, ids=list(range(len(keys))), elements=len(keys),
                       flags=[hyperscan.HS_FLAG_SOM_LEFTMOST] * len(keys), literal=True)
            self._db = db

    def __bool__(self) -> bool:
        return self.count > 0

    def find(self, data: bytes) -> list[tuple[int, int, int]]:
        """(pattern index, start, end) of every occurrence, overlapping ones included."""
        if self._db is None or len(data) < SHORT_INPUT:
            return self._ac.find_matches_as_indexes(data, overlapping=True) if self._ac is not None else []
        out: list[tuple[int, int, int]] = []
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._db)
        append = out.append
        self._db.scan(data, match_event_handler=lambda i, s, e, f, c: append((i, s, e)), scratch=scratch)
        if not self._direct:
            out = self._confirm(data, out)
        for index, pattern in self._scanned:
            i = data.find(pattern)
            while i >= 0:
                out.append((index, i, i + len(pattern)))
                i = data.find(pattern, i + 1)
        return out

    def _confirm(self, data: bytes, found: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        out = []
        for literal, s, e in found:
            for index, offset, length in self._entries[literal]:
                if offset == 0 and length == e - s:
                    out.append((index, s, e))
                    continue
                start = s - offset
                if start >= 0 and data[start : start + length] == self._confirmed[index]:
                    out.append((index, start, start + length))
        return out
