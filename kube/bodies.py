"""Request bodies the gateway decodes (JSON, YAML), measured before anything recursive reads them.

Python's ``json`` recurses once per array/object level up to the interpreter's recursion limit,
libyaml's composer (PyYAML's ``CSafeLoader``) recurses in C without any limit (100,000 levels
overflow the C stack: SIGSEGV), and every stage after parse walks the document recursively too:
the write guard, masking for the audit record, the body stored for reviewers and the dry-run
preview, whose YAML rendering takes about three stack frames per level and so handles about 320
levels at Python's default recursion limit.  The parse stage therefore refuses, with a 4xx
``Status``, any body deeper than ``MAX_DEPTH`` (256) and any YAML whose expansion exceeds
``MAX_YAML_NODES``; the later stages decode through :func:`decode`, which applies the same limits.

kube-apiserver accepts 10,000 levels; Kubernetes objects nest a few dozen at most (CRDs whose
schema embeds a PodSpec are among the deepest).  The deviation is deliberate and documented in
the README.

Which bodies are measured as what is decided as kube-apiserver decides how to decode them
(:func:`cluster_media`), not by the agent's word alone: a create, update or delete without a
Content-Type is JSON to the cluster, and a charset parameter changes nothing there (it reads every
body as UTF-8).  A body read as JSON or YAML that is not UTF-8, or YAML that cannot be parsed, is
refused: what the gateway cannot read it cannot measure, record or show a reviewer.

Both checks are iterative and linear: JSON by counting brackets outside strings (the same lexing
``json`` does, so the count is exact for every prefix ``json`` could decode), YAML on libyaml's
event stream, which is produced without recursion and stops at the first level too deep.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate

import yaml

from kube.vocabulary import CONNECT_SUBRESOURCES, MUTATING_VERBS

MAX_DEPTH = 256
MAX_YAML_NODES = 20_000

JSON_BODIES = frozenset(
    {
        "application/json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/json-patch+json",
        "application/apply-patch+json",
    }
)
YAML_BODIES = frozenset({"application/apply-patch+yaml", "application/yaml"})
# What it decodes them from: PATCH by the patch type, everything else by the serializers'
# media types (protobuf bodies are transcoded to JSON before these checks).
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml")
INPUT_TYPES = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# A JSON string as json's scanner reads it; an unterminated one runs to the end of the text
# (json fails there), so every match attempt succeeds and the scan stays linear.
_STRING = re.compile(r'"[^"\\]*+(?:\\(?:.|\Z)[^"\\]*+)*+(?:"|\Z)', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_NOT_JSON = object()


class BodyRefused(ValueError):
    """The body is beyond what the gateway decodes; ``code`` is the HTTP status to answer."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def too_deep() -> BodyRefused:
    return BodyRefused(400, f"the request body nests deeper than {MAX_DEPTH} levels (arrays and objects)")


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in ``text`` (exact for JSON, linear time, no recursion)."""
    outside_strings = _STRING.sub("", text).encode("utf-8", "surrogatepass")
    skeleton = outside_strings.translate(None, _NOT_BRACKETS).decode("ascii")
    return max(accumulate(map(_STEP.__getitem__, skeleton)), default=0)


def json_text(data: bytes) -> str:
    """``data`` decoded exactly as ``json.loads`` decodes bytes (UnicodeDecodeError if it cannot)."""
    return data.decode(json.detect_encoding(data), "surrogatepass")


def loads_json(data: bytes | str):
    """``json.loads`` of a document no deeper than MAX_DEPTH; BodyRefused (a ValueError) otherwise."""
    text = data if isinstance(data, str) else json_text(data)
    if json_depth(text) > MAX_DEPTH:
        raise too_deep()
    return json.loads(text)


class DuplicateKey(ValueError):
    """A JSON object repeats a key: decoders disagree on which value counts, so nothing is read from it."""


def _unique(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise DuplicateKey("duplicate key")
    return dict(pairs)


def loads_unique(body: bytes | str):
    """``json.loads`` that refuses (ValueError) an object with a repeated key."""
    return json.loads(body, object_pairs_hook=_unique)


def _json_document(body: bytes):
    """A YAML body that is JSON (kubectl sends its server-side apply bodies so), else _NOT_JSON."""
    try:
        text = json_text(body)
    except UnicodeDecodeError:
        return _NOT_JSON
    if not text.lstrip(" \t\r\n").startswith(("{", "[")):
        return _NOT_JSON
    try:
        return loads_json(text)
    except ValueError:
        return _NOT_JSON


def check_yaml(body: bytes) -> int:
    """Depth and size of a YAML stream with every alias expanded, without expanding anything.

    Returns how many aliases it uses; raises BodyRefused beyond MAX_DEPTH levels or MAX_YAML_NODES
    nodes, or for an alias whose anchor is undefined or still open (a recursive document);
    yaml.YAMLError where libyaml cannot parse it.
    """
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, height) of what it names
    open_: list[list] = []  # per open collection: [anchor, nodes, height]
    nodes = aliases = 0
    for event in yaml.parse(body, Loader=YAML_LOADER):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_) >= MAX_DEPTH:
                raise too_deep()
            open_.append([event.anchor, 1, 1])
            nodes += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size, height = open_.pop()
            if anchor is not None:
                sizes[anchor] = (size, height)
            if open_:
                _add(open_[-1], size, height)
        elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
            if isinstance(event, yaml.AliasEvent):
                if event.anchor not in sizes:
                    raise BodyRefused(400, f"YAML alias *{event.anchor[:64]} refers to no complete anchor")
                aliases += 1
                size, height = sizes[event.anchor]
            else:
                size, height = 1, 0
                if event.anchor is not None:
                    sizes[event.anchor] = (1, 0)
            if len(open_) + height > MAX_DEPTH:
                raise too_deep()
            nodes += size
            if open_:
                _add(open_[-1], size, height)
        if nodes > MAX_YAML_NODES:
            raise BodyRefused(
                413, f"the YAML request body has more than {MAX_YAML_NODES} nodes (aliases expanded); "
                "send JSON, as kubectl does"
            )
    return aliases


def _add(parent: list, size: int, height: int) -> None:
    parent[1] += size
    parent[2] = max(parent[2], height + 1)


def _unsupported(accepted) -> BodyRefused:
    """kube-apiserver's own answer (negotiation.NewUnsupportedMediaTypeError)."""
    return BodyRefused(415, "the body of the request was in an unknown format - accepted media types include: "
                       + ", ".join(accepted))


def cluster_media(info, content_type: str) -> str | None:
    """The media type kube-apiserver decodes this request's body as, or None when it decodes none.

    As its handlers do (apiserver pkg/endpoints/handlers): PATCH by the text before the first ";"
    compared exactly (patch.go); create, update and DeleteOptions by the Content-Type's media type,
    lower-cased, its parameters (charset included) ignored, JSON when there is none
    (negotiation.NegotiateInputSerializer).  BodyRefused(415) where kube-apiserver answers 415:
    the gateway never passes on a body the cluster would decode in a way it did not check.
    """
    if not info.is_resource_request or info.verb not in MUTATING_VERBS or info.subresource in CONNECT_SUBRESOURCES:
        return None
    if info.verb == "patch":
        cut = content_type.find(";")
        media = content_type[:cut] if cut > 0 else content_type
        if media not in PATCH_TYPES:
            raise _unsupported(PATCH_TYPES)
        return media
    media = content_type.split(";", 1)[0].strip().lower() if content_type else "application/json"
    if media not in INPUT_TYPES:
        raise _unsupported(INPUT_TYPES)
    return media


def check(media: str, body: bytes) -> None:
    """The parse stage's check of a body read as ``media``: BodyRefused if it is beyond the limits.

    A JSON or YAML body that is not UTF-8 is refused (400), as is YAML that cannot be parsed: the
    gateway could not measure it, nor decode it for the later stages.  JSON that is not valid is
    measured all the same (the count needs no parse) and passes: no stage can decode it, nor can
    the cluster.
    """
    if media not in JSON_BODIES and media not in YAML_BODIES:
        return
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyRefused(400, "the request body is not valid UTF-8 (kube-apiserver reads JSON and YAML bodies as "
                               "UTF-8, whatever charset is declared)") from None
    if media in JSON_BODIES:
        if json_depth(json_text(body)) > MAX_DEPTH:
            raise too_deep()
    elif _json_document(body) is _NOT_JSON:
        try:
            check_yaml(body)
        except yaml.YAMLError:
            raise BodyRefused(400, "the YAML request body cannot be parsed") from None


def decode(media: str, body: bytes, *, aliases: bool = True):
    """The document in a JSON or YAML body, within the limits of :func:`check`.

    Raises BodyRefused (also when ``aliases`` is false and YAML uses one), ValueError or
    yaml.YAMLError when the body cannot be decoded, ValueError for any other media type.
    """
    if media in JSON_BODIES:
        return loads_json(body)
    if media not in YAML_BODIES:
        raise ValueError(f"{media or 'this media type'} is not decoded")
    document = _json_document(body)
    if document is not _NOT_JSON:
        return document
    if check_yaml(body) and not aliases:
        raise BodyRefused(400, "the YAML request body uses aliases")
    return yaml.load(body, Loader=YAML_LOADER)
