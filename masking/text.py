"""Streaming masker for free text: pod logs (also ``-f``), exec/attach stdout and stderr.

A secret may be split across reads or WebSocket frames at any byte.  The masker releases all
bytes at once except those that may still be the start of a secret: the tail from the first
detector match that has not ended yet (``regex`` partial matching decides this exactly, so a
prompt like ``$ `` is never held, while ``password=hun`` is held until its value ends).

Guarantee: a secret of up to :data:`MAX_SECRET_BYTES` (16 KiB, a PEM block of an 8192-bit RSA
key fits) is masked exactly as if it had arrived in one piece, however the stream is cut.  A
candidate that grows beyond that is released masked from where its secret part starts, and
its continuation is masked too (to the end of the token, value or PEM body), so longer
secrets are masked as well, only in two placeholders.

:meth:`TextMasker.flush` releases the held tail (masking any secret already started) and may
be called at the end of the stream or after an idle pause of an interactive session; the
masker keeps the last bytes as context, so a secret whose keyword came before the pause and
whose value comes after it is still masked.  Secret values (``Detectors.with_values``) are held
while the tail may still become one; a pause releases a tail of at least 8 bytes that starts
one masked, and keeps it as context, so the rest of the value is masked when it comes.
"""

from __future__ import annotations

from masking.base import MaskReport
from masking.detectors import MAX_SECRET_BYTES, Detectors, Hit, apply_masks

# Already released bytes kept as left context (keyword before a value, a partly seen prefix).
CONTEXT_BYTES = 256


class TextMasker:
    """Incremental masking of one byte stream (one per stream: stdout and stderr separately)."""

    def __init__(self, detectors: Detectors, *, max_hold: int = MAX_SECRET_BYTES):
        self._detectors = detectors
        self._max_hold = max_hold
        self._ctx = b""
        self._held = b""
        self._swallow = None  # detector of a secret released before its end
        self.report = MaskReport()

    @property
    def held(self) -> int:
        """Bytes held back, waiting to see whether they are part of a secret."""
        return len(self._held)

    def feed(self, data: bytes) -> bytes:
        """Mask ``data``; returns the bytes that are safe to send now."""
        if not self._detectors.enabled:
            return bytes(data)
        data = self._held + bytes(data)
        self._held = b""
        if not data:
            return b""
        if self._swallow is not None:
            data = self._continue_swallow(data)
            if not data:
                return b""
        return self._process(data, force=False)

    def flush(self) -> bytes:
        """Release everything held, masking secrets that have started but not ended."""
        if not self._held:
            return b""
        if self._swallow is not None:  # a piece of the end marker, nothing secret
            held, self._held = self._held, b""
            return held
        return self._process(self._held, force=True)

    def _continue_swallow(self, data: bytes) -> bytes:
        """Drop the continuation of a secret that was released (masked) before it ended.

        A possible start of the detector's end marker at the end of ``data`` is held, so a
        marker split across reads still ends the secret.
        """
        detector = self._swallow
        end = detector.continuation.match(data).end()
        carry = 0
        if end == len(data) and detector.stop:
            carry = next((k for k in range(len(detector.stop) - 1, 0, -1) if data.endswith(detector.stop[:k])), 0)
            end -= carry
        self._ctx = (self._ctx + data[:end])[-CONTEXT_BYTES:]
        if end + carry < len(data):
            self._swallow = None
            return data[end:]
        self._held = data[end:]
        return b""

    def _process(self, buf: bytes, *, force: bool) -> bytes:
        ctx = self._ctx
        s = ctx + buf
        base, n = len(ctx), len(s)
        low = s.lower()
        hits = [h for h in self._detectors.find(s, partial=True, low=low) if h.end > base or h.open]
        cut = n if force else _safe_cut(hits, base, n)
        if n - cut > self._max_hold:
            force, cut = True, n
        if force:
            hits = self._force(hits, s, low, n)
        out = apply_masks(s, hits, base, cut, self.report.counts)
        self._held = s[cut:]
        # A Secret value's start released at a pause stays context until the value is decided.
        keep = min([cut - CONTEXT_BYTES, *(h.start for h in hits if h.partial and not h.detector.swallow)])
        self._ctx = s[max(0, keep) : cut]
        return out

    def _force(self, hits: list[Hit], s: bytes, low: bytes, n: int) -> list[Hit]:
        """Give unfinished matches their forced spans; keep masking the one cut off at the end."""
        forced = []
        for hit in hits:
            if hit.open:
                ms, me = self._detectors.forced_span(hit, s, low)
                hit = hit._replace(mask_start=ms, mask_end=me)
                if ms < me == n and self._swallow is None and hit.detector.swallow:
                    self._swallow = hit.detector
            forced.append(hit)
        return forced


def _safe_cut(hits: list[Hit], base: int, n: int) -> int:
    """Release up to the start of the first unfinished match, never through any match."""
    cut = n
    for hit in hits:
        if hit.open:
            cut = min(cut, hit.start)
    while cut > base:
        moved = min((h.start for h in hits if h.start < cut < max(h.end, h.mask_end)), default=cut)
        if moved == cut:
            break
        cut = moved
    return max(cut, base)
