"""Incremental JSON masking of response bodies: single documents, streamed lists, watch streams.

A body is read as text and cut into JSON values without line splitting: each value is decoded
with the C-accelerated ``json`` scanner (``raw_decode``) as soon as it is complete.  When a
value is cut off by the end of a chunk, a small resumable bracket/string scanner follows it
across later chunks (each byte is scanned once) and the value is decoded once it ends, so the
work stays linear however the body is chunked (1-byte chunks included).

* A watch stream is a sequence of values (events); each is masked and sent as soon as it is
  complete, one per line.
* A document whose top-level object is a ``*List`` (``items``) or ``Table`` (``rows``), and
  whose ``kind`` comes before that array (as kube-apiserver writes it), is streamed: the head
  is sent, then each element as soon as it is complete and masked, so memory is bounded by
  one element (or one batch of at most BATCH_CHARS).  The elements that end in the text at
  hand are decoded together by one msgspec call (``JsonMasker._batch``; kube/jsonfast.py reads
  and writes exactly what ``json`` does); every element that call will not take goes one by
  one as above.
* Any other document is buffered (up to ``max_buffer`` characters) and masked whole.

Output is the re-serialisation of what was inspected (compact, ASCII-escaped), never the
upstream bytes, so nothing can pass that the masker did not see (duplicate keys collapse to
the last one, as Go's decoder reads them).  Invalid UTF-8, invalid or truncated JSON, NaN or
infinite numbers, trailing garbage and nesting deeper than the interpreter can follow raise
:class:`MaskingError`.  With ``values`` (the cluster's Secret values), every string and key of
what is sent is masked where it holds one of them.

Long because it is one resumable scanner state machine; its states only make sense together.
"""

from __future__ import annotations

import codecs
import json
import re

from kube import jsonfast
from masking.base import MaskingError, MaskReport
from masking.objects import ObjectMasker

# Largest value (or buffered document) the masker holds in memory, in characters.
MAX_BUFFER = 64 * 1024 * 1024
# Keys of the top-level object are field names (kind, metadata, items, ...).
MAX_KEY = 4096
# Deeper than the interpreter's recursion limit (about 1,000 levels; Kubernetes objects nest a
# few dozen): refused like any body that cannot be inspected.
TOO_DEEP = "the response body is nested too deeply to inspect"

_WS = re.compile(r"[ \t\r\n]*")
_KEY = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_OUTSIDE = re.compile(r'[^"\[\]{}]*')
_INSIDE_STRING = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.S)
_SCALAR = re.compile(r"[-+.0-9A-Za-z]*")


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


# Floats decode as jsonfast.FiniteFloat, so jsonfast.dumps writes exactly what json.dumps does.
_DECODER = json.JSONDecoder(parse_float=jsonfast.finite_float, parse_constant=_no_constant)
# Elements of a streamed array decoded in one msgspec call (see JsonMasker._batch), in characters.
BATCH_CHARS = 64 * 1024
# A cut-off element shorter than this waits once for the next chunk instead of being scanned.
HOLD_CHARS = 256 * 1024
# The start of an element up to its first key: the next element most likely starts the same way.
_HEAD = re.compile(r'\{"[^"\\]{1,64}":')


def _kind_of(members) -> str:
    kind = ""
    for key, value in members:
        if key == "kind" and isinstance(value, str):
            kind = value
    return kind


class _ValueScanner:
    """Finds where a JSON value ends, resumable across pieces of text."""

    __slots__ = ("depth", "in_string", "escape", "scalar", "started")

    def __init__(self):
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.scalar = False
        self.started = False

    def feed(self, s: str, pos: int) -> int | None:
        """Index just past the value's end in ``s``, or None if it goes on past ``s``."""
        n = len(s)
        if not self.started:
            if pos >= n:
                return None
            self.started = True
            self.scalar = s[pos] not in '"[{'
        if self.scalar:
            end = _SCALAR.match(s, pos).end()
            return end if end < n else None
        if self.escape:
            if pos >= n:
                return None
            pos += 1
            self.escape = False
        while True:
            if self.in_string:
                pos = _INSIDE_STRING.match(s, pos).end()
                if pos >= n:
                    return None
                if s[pos] == "\\":  # a backslash that ends this piece
                    self.escape = True
                    return None
                pos += 1
                self.in_string = False
                if self.depth == 0:
                    return pos
                continue
            pos = _OUTSIDE.match(s, pos).end()
            if pos >= n:
                return None
            c = s[pos]
            pos += 1
            if c == '"':
                self.in_string = True
            elif c in "[{":
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth <= 0:
                    return pos


_NEED = object()

# Parser states.
(_START, _WHOLE, _OBJ_FIRST, _KEY_NEXT, _KEY_READ, _COLON, _MEMBER, _AFTER_MEMBER,
 _ARR_FIRST, _ARR_ELEM, _ARR_NEXT, _END, _SEQ) = range(13)


class JsonMasker:
    """``BodyMasker`` for JSON bodies; ``watch`` reads a stream of events instead of one document."""

    def __init__(self, masker: ObjectMasker, *, watch: bool, max_buffer: int = MAX_BUFFER, values=None):
        self._masker = masker
        self._values = values if values else None
        self.report: MaskReport = masker.report
        self._watch = watch
        self._max = max_buffer
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")
        self._buf = ""
        self._pos = 0
        self._scan: _ValueScanner | None = None
        self._pending: list[str] = []
        self._pending_len = 0
        self._ready = _NEED
        self._seen = 0  # characters fed so far: self._buf is their tail
        self._no_batch_until = 0  # (in those characters) text a batch failed on goes one by one
        self._searched = 0  # (in those characters) no cut was found before this
        self._held = -1  # (in those characters) the cut-off element that waited for the next chunk
        self._batched = False  # a batch was decoded: the array is compact
        self._state = _SEQ if watch else _START
        self._out: list[str] = []
        self._failed = False
        # document state
        self._members: list[tuple[str, object]] = []
        self._doc_chars = 0
        self._value_chars = 0
        self._key = ""
        self._streaming = False  # the head has been sent
        self._stream_key = ""
        self._stream_kind = ""
        self._sent_keys: set[str] = set()
        self._first = True
        # kube-apiserver ends a document with a newline (Go's json.Encoder); clients compare error
        # bodies byte for byte, so the masked document ends as the cluster's did.
        self._ended_line = False

    # -- public ------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> bytes:
        if self._failed:
            raise MaskingError("the response could not be masked")
        try:
            text = self._utf8.decode(chunk)
            self._run(text, final=False)
        except MaskingError:
            self._failed = True
            raise
        except UnicodeDecodeError:
            self._failed = True
            raise MaskingError("the response body is not valid UTF-8") from None
        except RecursionError:
            self._failed = True
            raise MaskingError(TOO_DEEP) from None
        return self._take()

    def close(self) -> bytes:
        if self._failed:
            raise MaskingError("the response could not be masked")
        self._failed = True  # nothing may be fed after close
        try:
            text = self._utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            raise MaskingError("the response body is not valid UTF-8") from None
        try:
            self._run(text, final=True)
        except RecursionError:
            raise MaskingError(TOO_DEEP) from None
        if self._scan is not None:
            raise MaskingError("the response body ends inside a JSON value")
        if self._watch:
            if self._buf[self._pos:].strip(" \t\r\n"):
                raise MaskingError("the response body ends inside a JSON value")
        elif self._state not in (_END, _START):
            raise MaskingError("the response body ends before its JSON document does")
        return self._take()

    def whole(self, body: bytes) -> bytes:
        """``feed(body) + close()`` for a body that is all there is, in one decode when it can be.

        A document that is one JSON value (not a watch stream) and has no top-level ``items`` or
        ``rows`` (so nothing in it would stream) is decoded at once and masked and serialised as
        the member-by-member path does it (last duplicate key wins, the same values: kube.jsonfast
        decodes what the stdlib decoder does, and what it refuses takes the incremental path; the
        same document masking and serialisation, one newline kept from the trailing whitespace).
        Anything else, and every body that is not valid (its error is the one the incremental
        path raises), goes through ``feed`` and ``close``.
        """
        if self._watch or self._state != _START or self._buf or self._failed or len(body) > self._max:
            return self.feed(body) + self.close()
        try:
            text = body.decode("utf-8")
            value = jsonfast.loads(text)  # one value, JSON whitespace around it and nothing else
        except (ValueError, RecursionError):  # UnicodeDecodeError included
            return self.feed(body) + self.close()
        if isinstance(value, dict) and ("items" in value or "rows" in value):
            return self.feed(body) + self.close()
        trailing = text[len(text.rstrip(" \t\r\n")):]
        self._failed = True  # nothing may be fed after close
        try:
            self._masker.document(value)
            out = self._dump(value)
        except RecursionError:
            raise MaskingError(TOO_DEEP) from None
        return (out + "\n" if "\n" in trailing else out).encode("ascii")

    # -- machinery ---------------------------------------------------------------------------

    def _dump(self, value) -> str:
        """Serialise a masked value; Secret values anywhere in it (strings and keys) are masked.

        JSON escaping maps each character on its own, so a value inside a string shows up in
        the serialised text as its JSON-escaped form, one of the forms looked for: text without
        a hit needs no closer look.
        """
        return self._checked(value, jsonfast.dumps(value))

    def _checked(self, value, data: bytes) -> str:
        """``data`` (the encoding of ``value``), or the encoding of ``value`` with the Secret values
        in it masked."""
        values = self._values
        if values is None or not values.present(data):
            return data.decode("ascii")
        counts: dict[str, int] = {}
        value = values.mask_tree(value, counts)
        if not counts:
            return data.decode("ascii")
        for kind, n in counts.items():
            self.report.add(kind, n)
        return jsonfast.dumps(value).decode("ascii")

    def _take(self) -> bytes:
        if not self._out:
            return b""
        out = "".join(self._out).encode("ascii")
        self._out = []
        return out

    def _run(self, text: str, final: bool) -> None:
        self._seen += len(text)
        if self._scan is not None:
            end = self._scan.feed(text, 0)
            if end is None and not (final and self._scan.scalar):
                self._pending.append(text)
                self._pending_len += len(text)
                self._check_size(self._pending_len)
                return
            if end is None:
                end = len(text)
            self._pending.append(text[:end])
            value_text = "".join(self._pending)
            self._value_chars = len(value_text)
            self._pending, self._pending_len, self._scan = [], 0, None
            self._ready = self._loads(value_text)
            self._buf, self._pos = text[end:], 0
        else:
            self._buf = self._buf[self._pos:] + text if self._pos < len(self._buf) else text
            self._pos = 0
        self._step(final)

    def _check_size(self, size: int) -> None:
        if size > self._max:
            raise MaskingError(f"a JSON value in the response exceeds {self._max} characters; refused unmasked")

    @staticmethod
    def _loads(text: str):
        try:
            value, end = _DECODER.raw_decode(text, 0)
        except ValueError:
            raise MaskingError("the response body is not valid JSON") from None
        if end != len(text):
            raise MaskingError("the response body is not valid JSON")
        return value

    def _ws(self) -> bool:
        """Skip whitespace; True if a character follows in the buffer."""
        self._pos = _WS.match(self._buf, self._pos).end()
        return self._pos < len(self._buf)

    def _value(self, final: bool):
        """The next complete value, or _NEED (a cut-off value is then followed by the scanner)."""
        if self._ready is not _NEED:
            value, self._ready = self._ready, _NEED
            return value
        self._value_chars = 0
        if not self._ws():
            return _NEED
        buf, pos = self._buf, self._pos
        try:
            value, end = _DECODER.raw_decode(buf, pos)
        except json.JSONDecodeError:
            value = _NEED
        except ValueError:
            raise MaskingError("the response body is not valid JSON") from None
        if value is not _NEED:
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and end == len(buf) and not final):
                self._value_chars = end - pos
                self._check_size(self._value_chars)
                self._pos = end
                return value
        scan = _ValueScanner()
        end = scan.feed(buf, pos)
        if end is not None:
            self._pos = end
            self._value_chars = end - pos
            return self._loads(buf[pos:end])
        if final and scan.scalar:
            self._pos = len(buf)
            self._value_chars = len(buf) - pos
            return self._loads(buf[pos:])
        self._scan = scan
        self._pending = [buf[pos:]]
        self._pending_len = len(buf) - pos
        self._check_size(self._pending_len)
        self._buf, self._pos = "", 0
        return _NEED

    def _expect(self, chars: str, what: str) -> str:
        c = self._buf[self._pos]
        if c not in chars:
            raise MaskingError(f"the response body is not valid JSON (expected {what})")
        self._pos += 1
        return c

    def _step(self, final: bool) -> None:
        m = self._masker
        while True:
            state = self._state
            if state == _SEQ:
                value = self._value(final)
                if value is _NEED:
                    return
                m.event(value)
                self._out.append(self._dump(value) + "\n")
            elif state == _START:
                if not self._ws():
                    return
                if self._buf[self._pos] == "{":
                    self._pos += 1
                    self._state = _OBJ_FIRST
                else:
                    self._state = _WHOLE
            elif state == _WHOLE:
                value = self._value(final)
                if value is _NEED:
                    return
                m.document(value)
                self._out.append(self._dump(value))
                self._state = _END
            elif state == _OBJ_FIRST:
                if not self._ws():
                    return
                if self._expect('}"', 'a key or "}"') == "}":
                    self._finish_object()
                else:
                    self._pos -= 1
                    self._state = _KEY_READ
            elif state == _KEY_NEXT:
                if not self._ws():
                    return
                self._expect('"', "a key")
                self._pos -= 1
                self._state = _KEY_READ
            elif state == _KEY_READ:
                match = _KEY.match(self._buf, self._pos)
                if match is None:
                    if len(self._buf) - self._pos > MAX_KEY:
                        raise MaskingError("the response body has an object key longer than expected")
                    return
                self._key = self._loads(match.group())
                self._pos = match.end()
                self._state = _COLON
            elif state == _COLON:
                if not self._ws():
                    return
                self._expect(":", '":"')
                self._state = _MEMBER
            elif state == _MEMBER:
                if self._ready is _NEED:
                    if not self._ws():
                        return
                    if self._buf[self._pos] == "[" and self._streamable(self._key):
                        self._pos += 1
                        self._start_stream()
                        self._state = _ARR_FIRST
                        continue
                value = self._value(final)
                if value is _NEED:
                    return
                self._member(self._key, value)
                self._state = _AFTER_MEMBER
            elif state == _AFTER_MEMBER:
                if not self._ws():
                    return
                if self._expect(',}', '"," or "}"') == ",":
                    self._state = _KEY_NEXT
                else:
                    self._finish_object()
            elif state == _ARR_FIRST:
                if not self._ws():
                    return
                if self._buf[self._pos] == "]":
                    self._pos += 1
                    self._out.append("]")
                    self._state = _AFTER_MEMBER
                else:
                    self._state = _ARR_ELEM
            elif state == _ARR_ELEM:
                if self._ready is _NEED:
                    if not self._ws():
                        return
                    batch = self._batch(final)
                    if batch is _NEED:
                        return
                    if batch is not None:
                        self._elements(batch)
                        self._state = _ARR_NEXT
                        continue
                value = self._value(final)
                if value is _NEED:
                    return
                self._element(value)
                self._state = _ARR_NEXT
            elif state == _ARR_NEXT:
                if not self._ws():
                    return
                if self._expect(",]", '"," or "]"') == ",":
                    self._state = _ARR_ELEM
                else:
                    self._out.append("]")
                    self._state = _AFTER_MEMBER
            else:  # _END
                start = self._pos
                if self._ws():
                    raise MaskingError("the response body has data after its JSON document")
                if not self._ended_line and "\n" in self._buf[start:self._pos]:
                    self._ended_line = True
                    self._out.append("\n")
                return

    def _element(self, value) -> None:
        if self._stream_key == "rows":
            self._masker.table_row(value)
        else:
            self._masker.list_item(value, self._stream_kind)
        text = self._dump(value)
        self._out.append(text if self._first else "," + text)
        self._first = False

    def _elements(self, batch: list) -> None:
        """Mask and send elements decoded together: one encoding of them all (the array's, less
        its brackets), one scan for Secret values to find whether any of them needs a closer look
        (an element's hit is a hit in the joined text)."""
        if self._stream_key == "rows":
            for value in batch:
                self._masker.table_row(value)
        else:
            self._masker.list_items(batch, self._stream_kind)
        joined = jsonfast.dumps(batch)[1:-1]  # the elements' encodings joined by ","
        if self._values is not None and self._values.present(joined):
            out = ",".join([self._dump(value) for value in batch])
        else:
            out = joined.decode("ascii")
        self._out.append(out if self._first else "," + out)
        self._first = False

    def _batch(self, final: bool):
        """The elements that end in the buffer, decoded in one msgspec call; None to take the
        next element one by one, _NEED to wait for the next chunk.

        A cut is guessed where the text ``},`` and the start of the first element (``{"metadata":``
        in kube-apiserver's lists) follow each other.  ``[`` + the text up to the cut + ``]``
        is decoded as an array: since the first element starts at the buffer's position, a
        decode that succeeds read exactly the elements a one-by-one decode would have (JSON
        values end where they end), so a guess inside a string or a nested list fails the
        decode and is never trusted.  Failed text goes one by one (linear work however the body
        is made); so do the last element, bodies that are not compact and anything msgspec
        refuses (lone surrogates, nesting deeper than the interpreter follows), exactly as before.
        In an array found compact, an element cut off at the end of a chunk waits once (if
        shorter than HOLD_CHARS) for the next chunk, to be decoded with what follows; held text
        is copied once per chunk, so it may wait only once (1-byte chunks stay linear).  A buffer
        ending in ``]`` or ``}`` (the array's last element) is not held.
        """
        buf, pos = self._buf, self._pos
        start = self._seen - len(buf)  # where buf begins in the text fed so far
        if start + pos < self._no_batch_until:
            return None
        head = _HEAD.match(buf, pos)
        sep = "}," + (head.group() if head else "{")
        end = min(len(buf), pos + min(BATCH_CHARS, self._max))
        cut = buf.rfind(sep, max(pos, self._searched - start - len(sep)), end)
        if cut < 0:
            self._searched = start + end
            if (self._batched and not final and end == len(buf) and end - pos < HOLD_CHARS
                    and self._held != start + pos and not buf.rstrip(" \t\r\n").endswith(("]", "}"))):
                self._held = start + pos
                return _NEED
            return None
        for _ in range(2):  # the last guess, then the one before (a cut-off element may hold a guess)
            try:
                values = jsonfast.loads("[" + buf[pos : cut + 1] + "]")
            except (ValueError, RecursionError):
                self._no_batch_until = max(self._no_batch_until, start + cut + 1)
                cut = buf.rfind(sep, pos, cut)
                if cut < 0:
                    return None
                continue
            self._pos = cut + 1
            self._batched = True
            return values
        return None

    # -- documents ---------------------------------------------------------------------------

    def _streamable(self, key: str) -> bool:
        if self._streaming:
            return key in ("items", "rows")
        kind = _kind_of(self._members)
        return (key == "items" and kind.endswith("List")) or (key == "rows" and kind == "Table")

    def _start_stream(self) -> None:
        """Send the masked head (or the members since the last array) and open the array."""
        pieces = self._masked_members()
        if not self._streaming:
            self._stream_kind = _kind_of(pieces)
            self._sent_keys = {key for key, _ in pieces}
            self._out.append("{")
        else:
            self._out.append(",")
        self._sent_key(self._key)
        for key, value in pieces:
            self._out.append(f"{self._dump(key)}:{self._dump(value)},")
        self._out.append(self._dump(self._key) + ":[")
        self._members = []
        self._stream_key = self._key
        self._streaming = True
        self._first = True

    def _masked_members(self) -> list[tuple[str, object]]:
        """The members read so far as one object, masked (last duplicate wins)."""
        obj = dict(self._members)
        if obj:
            self._masker.document(obj)
        return list(obj.items())

    def _member(self, key: str, value) -> None:
        if self._streaming:
            self._sent_key(key)
        else:
            self._doc_chars += len(key) + self._value_chars
            self._check_size(self._doc_chars)
        self._members.append((key, value))

    def _sent_key(self, key: str) -> None:
        """Once parts are sent, a repeated key could change what a client makes of them
        (a second ``kind`` after the items): refuse instead of letting the last one win."""
        if key in self._sent_keys:
            raise MaskingError("the response body repeats a key of a list it is streaming")
        self._sent_keys.add(key)

    def _finish_object(self) -> None:
        if self._streaming:
            pieces = self._masked_members()
            if pieces:
                self._out.append("," + ",".join(f"{self._dump(k)}:{self._dump(v)}" for k, v in pieces))
            self._out.append("}")
        else:
            obj = dict(self._members)
            self._masker.document(obj)
            self._out.append(self._dump(obj))
        self._members = []
        self._state = _END
