"""Mutations shared by the targets: bytes (flip, overwrite, insert, delete, truncate, extend) and JSON
documents (replace, drop or add a field anywhere in the tree, change a value's type, nest deeply)."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import strategies as st

# --------------------------------------------------------------------------------------------------
# Bytes

BYTE_OPERATIONS = ("flip", "set", "insert", "delete", "truncate", "extend", "splice")


@st.composite
def mutated_bytes(draw: st.DrawFn, base: bytes, rounds: int = 3) -> bytes:
    """``base`` with one to ``rounds`` byte-level mutations."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, rounds))):
        operation = draw(st.sampled_from(BYTE_OPERATIONS))
        index = draw(st.integers(0, max(len(data) - 1, 0)))
        if operation == "flip" and data:
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif operation == "set" and data:
            data[index] = draw(st.integers(0, 255))
        elif operation == "insert":
            data[index:index] = draw(st.binary(min_size=1, max_size=8))
        elif operation == "delete" and data:
            del data[index : index + draw(st.integers(1, 4))]
        elif operation == "truncate":
            del data[index:]
        elif operation == "extend":
            data += draw(st.binary(min_size=1, max_size=16))
        elif operation == "splice" and data:
            start = draw(st.integers(0, len(data) - 1))
            data[index:index] = data[start : start + draw(st.integers(1, 16))]
    return bytes(data)


# --------------------------------------------------------------------------------------------------
# JSON

INTERESTING_STRINGS = (
    "",
    " ",
    "\x00",
    "\udcff",
    "é",
    "2026-11-22T10:00:00Z",
    "2026-11-22T10:00:00",
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:59:59-05:00",
    "9999-12-31T23:59:59.999999-14:00",
    "0001-01-01T00:00:00Z",
    "2026-02-30T10:00:00Z",
    "018f6f2c-7c2b-7cde-8f00-000000000001",
    "00000000-0000-0000-0000-000000000000",
    "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    "gw-fuzz-0",
    "pt-0001",
    "a/b",
    "+",
    "#",
    "x" * 65,
    "NaN",
    "1e400",
    "true",
)
INTERESTING_NUMBERS = (
    0,
    -1,
    1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63),
    2**64,
    10**400,
    0.5,
    -0.0,
    1e308,
    5e-324,
    100.00000000000001,
)

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(INTERESTING_STRINGS)
    | st.sampled_from(INTERESTING_NUMBERS)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)

JSON_OPERATIONS = ("replace", "drop", "add", "retype", "wrap", "duplicate", "empty")


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``document`` (the root is ``()``)."""
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += _paths(value, (*prefix, index))
    return found


def _get(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        document = document[part]
    return document


def _retype(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return [value]
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    if isinstance(value, dict):
        return list(value.values())
    return 0


@st.composite
def mutated_document(draw: st.DrawFn, document: Any, rounds: int = 3) -> Any:
    """A deep copy of ``document`` with one to ``rounds`` structural mutations."""
    document = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(1, rounds))):
        path = draw(st.sampled_from(_paths(document)))
        operation = draw(st.sampled_from(JSON_OPERATIONS))
        value = _get(document, path)
        if not path:  # the root itself
            if operation in ("replace", "retype"):
                document = draw(json_values) if operation == "replace" else _retype(document)
            elif operation == "wrap":
                document = [document]
            continue
        parent, last = _get(document, path[:-1]), path[-1]
        if operation == "replace":
            parent[last] = draw(json_values)
        elif operation == "drop":
            del parent[last]
        elif operation == "add" and isinstance(value, dict):
            value[draw(st.text(max_size=12) | st.sampled_from(sorted(value) or ["x"]))] = draw(json_values)
        elif operation == "add" and isinstance(value, list):
            value.insert(draw(st.integers(0, len(value))), draw(json_values))
        elif operation == "retype":
            parent[last] = _retype(value)
        elif operation == "wrap":
            parent[last] = [value] if draw(st.booleans()) else {"value": value}
        elif operation == "duplicate" and isinstance(value, list) and value:
            value.append(json.loads(json.dumps(value[draw(st.integers(0, len(value) - 1))])))
        elif operation == "empty":
            parent[last] = type(value)() if isinstance(value, list | dict | str) else None
    return document


@st.composite
def hostile_json(draw: st.DrawFn, document: Any) -> bytes:
    """Bytes that started as ``document``: structurally mutated, byte-mutated, or deeply nested."""
    how = draw(st.sampled_from(["structure", "structure", "structure", "bytes", "both", "deep", "tokens"]))
    if how == "deep":
        depth = draw(st.integers(50, 5000))
        opener = draw(st.sampled_from(["[", '{"a":']))
        closer = "]" if opener == "[" else "}"
        return (opener * depth + "1" + closer * depth).encode()
    if how == "tokens":
        text = json.dumps(document)
        token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0", "\\ud800", "\\u0000"]))
        index = draw(st.integers(0, len(text)))
        return (text[:index] + token + text[index:]).encode("utf-8", "surrogatepass")
    if how in ("structure", "both"):
        document = draw(mutated_document(document))
    raw = json.dumps(document, allow_nan=True).encode("utf-8", "surrogatepass")
    if how in ("bytes", "both"):
        raw = draw(mutated_bytes(raw))
    return raw


# --------------------------------------------------------------------------------------------------
# The same mutations driven by a random.Random (hypothesis supplies it): cheap enough to derive many
# cases from one hypothesis example.


def random_bytes(rnd: random.Random, max_size: int) -> bytes:
    return bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, max_size)))


def mutate_bytes(data: bytes, rnd: random.Random, rounds: int = 3) -> bytes:
    out = bytearray(data)
    for _ in range(rnd.randint(1, rounds)):
        operation = rnd.choice(BYTE_OPERATIONS)
        index = rnd.randint(0, max(len(out) - 1, 0))
        if operation == "flip" and out:
            out[index] ^= 1 << rnd.randint(0, 7)
        elif operation == "set" and out:
            out[index] = rnd.choice((0x00, 0xFF, 0x7F, 0x80, rnd.getrandbits(8)))
        elif operation == "insert":
            out[index:index] = random_bytes(rnd, 8) or b"\x00"
        elif operation == "delete" and out:
            del out[index : index + rnd.randint(1, 4)]
        elif operation == "truncate":
            del out[index:]
        elif operation == "extend":
            out += random_bytes(rnd, 16) or b"\xff"
        elif operation == "splice" and out:
            start = rnd.randint(0, len(out) - 1)
            out[index:index] = out[start : start + rnd.randint(1, 16)]
    return bytes(out)


def random_json(rnd: random.Random, depth: int = 0) -> Any:
    kind = rnd.randrange(10 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rnd.random() < 0.5
    if kind == 2:
        return rnd.choice(INTERESTING_NUMBERS)
    if kind == 3:
        return rnd.randint(-(2**70), 2**70) if rnd.random() < 0.3 else rnd.randint(-5, 1000)
    if kind == 4:
        return rnd.uniform(-1e6, 1e6)
    if kind in (5, 6):
        return rnd.choice(INTERESTING_STRINGS)
    if kind == 7:
        return "".join(
            chr(rnd.choice((rnd.randint(32, 126), rnd.randint(0, 0x10FFFF))))
            for _ in range(rnd.randint(0, 12))
        )
    if kind == 8:
        return [random_json(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
    return {str(random_json(rnd, 3)): random_json(rnd, depth + 1) for _ in range(rnd.randint(0, 3))}


def mutate_document(document: Any, rnd: random.Random, rounds: int = 3) -> Any:
    document = json.loads(json.dumps(document))
    for _ in range(rnd.randint(1, rounds)):
        path = rnd.choice(_paths(document))
        operation = rnd.choice(JSON_OPERATIONS)
        value = _get(document, path)
        if not path:
            if operation == "replace":
                document = random_json(rnd)
            elif operation == "retype":
                document = _retype(document)
            elif operation == "wrap":
                document = [document]
            continue
        parent, last = _get(document, path[:-1]), path[-1]
        if operation == "replace":
            parent[last] = random_json(rnd)
        elif operation == "drop":
            del parent[last]
        elif operation == "add" and isinstance(value, dict):
            key = (
                rnd.choice([*value, "x", "name", "mrn", "", "_env_prefix", "_secrets_dir"])
                if rnd.random() < 0.5
                else str(random_json(rnd, 3))
            )
            value[key] = random_json(rnd)
        elif operation == "add" and isinstance(value, list):
            value.insert(rnd.randint(0, len(value)), random_json(rnd))
        elif operation == "retype":
            parent[last] = _retype(value)
        elif operation == "wrap":
            parent[last] = [value] if rnd.random() < 0.5 else {"value": value}
        elif operation == "duplicate" and isinstance(value, list) and value:
            value.append(json.loads(json.dumps(rnd.choice(value))))
        elif operation == "empty":
            parent[last] = type(value)() if isinstance(value, list | dict | str) else None
    return document


TOKENS = ("NaN", "Infinity", "-Infinity", "1e999", "-0", '"\\ud800"', '"\\u0000"', "null", "[]", "{}", ",")


def hostile_json_bytes(document: Any, rnd: random.Random) -> bytes:
    """Bytes that started as ``document``: structurally mutated, byte-mutated, or deeply nested."""
    how = rnd.choice(("structure", "structure", "structure", "bytes", "both", "deep", "tokens", "bytes-only"))
    if how == "deep":
        depth = rnd.choice((64, 200, 1000, 5000, 100_000))
        opener = rnd.choice(("[", '{"a":'))
        closer = "]" if opener == "[" else "}"
        return (opener * depth + "1" + closer * depth).encode()
    if how == "bytes-only":
        return random_bytes(rnd, 200)
    if how == "tokens":
        text = json.dumps(document)
        index = rnd.randint(0, len(text))
        return (text[:index] + rnd.choice(TOKENS) + text[index:]).encode("utf-8", "surrogatepass")
    if how in ("structure", "both"):
        document = mutate_document(document, rnd)
    raw = json.dumps(document, allow_nan=True).encode("utf-8", "surrogatepass")
    if how in ("bytes", "both"):
        raw = mutate_bytes(raw, rnd)
    return raw
