"""kube.bodies: the depth and size of JSON and YAML bodies, measured without recursion."""

import json
import random

import pytest
import yaml

from kube import bodies
from kube.bodies import MAX_DEPTH, MAX_YAML_NODES, BodyRefused


def depth_of(value) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def random_document(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.2:
        return rng.choice(["[", "]", "{", "}", '"', "\\", '\\"', "[{\\u005b", "é", 7, None, True])
    if rng.random() < 0.5:
        return [random_document(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["[", "}", '"k"', "\\"]) + str(i): random_document(rng, depth - 1) for i in range(rng.randint(0, 3))}


def test_json_depth_is_exact_whatever_the_strings_hold():
    rng = random.Random(7)
    for _ in range(500):
        document = random_document(rng, 8)
        for text in (json.dumps(document), json.dumps(document, ensure_ascii=False, indent=1)):
            assert bodies.json_depth(text) == depth_of(document)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32-be"])
def test_json_text_decodes_as_json_loads_does(encoding):
    data = json.dumps({"a": [["é"]]}).encode(encoding)
    assert bodies.json_depth(bodies.json_text(data)) == 3
    assert bodies.loads_json(data) == json.loads(data)


@pytest.mark.parametrize("text", ['"unterminated [[[', '["a\\', '"\\"\\"\\"' * 1000 + "\\", "]]]]"])
def test_broken_json_is_measured_too(text):
    assert bodies.json_depth(text) <= 3


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 3000, 100_000])
def test_loads_json_refuses_before_decoding(depth):
    with pytest.raises(BodyRefused) as refused:
        bodies.loads_json("[" * depth + "]" * depth)
    assert refused.value.code == 400 and f"deeper than {MAX_DEPTH} levels" in str(refused.value)


def test_loads_json_at_the_limit():
    assert depth_of(bodies.loads_json("[" * MAX_DEPTH + "]" * MAX_DEPTH)) == MAX_DEPTH


def block_yaml(depth: int) -> bytes:
    return ("".join(f"{' ' * i}k:\n" for i in range(depth)) + f"{' ' * depth}v\n").encode()


def test_yaml_depth_counts_block_and_flow_nesting():
    assert bodies.check_yaml(block_yaml(MAX_DEPTH)) == 0
    for body in (block_yaml(MAX_DEPTH + 1), b"[" * 100_000):
        with pytest.raises(BodyRefused, match="nests deeper"):
            bodies.check_yaml(body)


def test_yaml_aliases_are_counted_expanded_without_expanding():
    bomb = "l0: &l0 [x, x]\n" + "".join(f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}]\n" for i in range(1, 40))
    with pytest.raises(BodyRefused) as refused:
        bodies.check_yaml(bomb.encode())
    assert refused.value.code == 413 and f"more than {MAX_YAML_NODES} nodes" in str(refused.value)
    assert bodies.check_yaml(b"base: &b {a: 1}\nx: *b\ny: {<<: *b, c: 2}\nname: &n web\nalso: *n\n") == 3


def test_yaml_alias_height_adds_to_its_position():
    deep = "[" * 200 + "]" * 200
    assert bodies.check_yaml(f"a: &d {deep}\nb: {'[' * 50}*d{']' * 50}\n".encode()) == 1
    with pytest.raises(BodyRefused, match="nests deeper"):
        bodies.check_yaml(f"a: &d {deep}\nb: {'[' * 60}*d{']' * 60}\n".encode())


@pytest.mark.parametrize("body", [b"a: &a [*a]\n", b"a: *nowhere\n"])
def test_recursive_or_undefined_aliases_are_refused(body):
    with pytest.raises(BodyRefused, match="no complete anchor"):
        bodies.check_yaml(body)


def test_check_by_media_type():
    deep = b"[" * 600 + b"]" * 600
    for media in ("application/json", "application/merge-patch+json", "application/apply-patch+yaml"):
        with pytest.raises(BodyRefused):
            bodies.check(media, deep)
    bodies.check("application/octet-stream", deep)  # not decoded by any stage
    with pytest.raises(BodyRefused, match="not valid UTF-8") as refused:  # not measurable: refused
        bodies.check("application/json", b"\xff\xfe\xfd not text")
    assert refused.value.code == 400


def test_yaml_body_that_is_json_is_not_held_to_the_yaml_node_limit():
    """kubectl sends server-side apply bodies as JSON under application/apply-patch+yaml."""
    body = json.dumps({"data": {f"k{i}": "v" for i in range(MAX_YAML_NODES)}}).encode()
    bodies.check("application/apply-patch+yaml", body)
    assert len(bodies.decode("application/apply-patch+yaml", body)["data"]) == MAX_YAML_NODES
    with pytest.raises(BodyRefused, match="more than"):
        bodies.check("application/apply-patch+yaml", yaml.safe_dump(json.loads(body)).encode())


def test_yaml_that_only_looks_like_json_is_measured_as_yaml():
    """A single-quoted YAML scalar holding a double quote cannot hide brackets from the check."""
    body = ("['\"', " + "[" * 300 + "]" * 300 + ", '\"']").encode()
    with pytest.raises(BodyRefused, match="nests deeper"):
        bodies.check("application/apply-patch+yaml", body)


def test_decode_without_aliases():
    with pytest.raises(BodyRefused, match="uses aliases"):
        bodies.decode("application/apply-patch+yaml", b"a: &a x\nb: *a\n", aliases=False)
    assert bodies.decode("application/apply-patch+yaml", b"a: &a x\nb: *a\n") == {"a": "x", "b": "x"}
