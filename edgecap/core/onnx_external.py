"""Which external data files an ONNX graph refers to, read from its protobuf bytes.

onnxruntime given a graph as bytes resolves external weight files against the working
directory: a file planted there would be loaded instead of the bundle's. edgecap
therefore finds every external reference itself, accepts only members of the bundle
that the manifest hashes, and hands onnxruntime those hashed bytes from memory.

A small protobuf walk (the runtime does not depend on the onnx package): only the
fields that can hold a TensorProto are followed.
"""
from __future__ import annotations

# Field numbers from onnx.proto.
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_NODE_ATTRIBUTE = 5
_FUNCTION_NODE = 7
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_EXTERNAL = 1
MAX_NESTING = 64


class OnnxFormatError(ValueError):
    pass


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise OnnxFormatError("truncated or malformed protobuf")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: memoryview):
    """(field number, wire type, value) with length-delimited values as memoryviews."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = None, i + 8
        elif wire == 5:
            value, i = None, i + 4
        elif wire == 2:
            length, i = _varint(buf, i)
            if i + length > len(buf):
                raise OnnxFormatError("truncated or malformed protobuf")
            value, i = buf[i:i + length], i + length
        else:
            raise OnnxFormatError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _tensor(buf: memoryview, found: set[str]) -> None:
    external, location = False, None
    for number, wire, value in _fields(buf):
        if number == _TENSOR_DATA_LOCATION and wire == 0:
            external = value == _EXTERNAL
        elif number == _TENSOR_EXTERNAL_DATA and wire == 2:
            entry = {n: bytes(v).decode("utf-8", "replace") for n, w, v in _fields(value) if w == 2}
            if entry.get(_ENTRY_KEY) == "location":
                location = entry.get(_ENTRY_VALUE, "")
    if external or location is not None:
        found.add(location or "")


def _sparse(buf: memoryview, found: set[str]) -> None:
    for number, wire, value in _fields(buf):
        if number in (_SPARSE_VALUES, _SPARSE_INDICES) and wire == 2:
            _tensor(value, found)


def _nodes(nodes, found: set[str], level: int) -> None:
    for node in nodes:
        for number, wire, attr in _fields(node):
            if number != _NODE_ATTRIBUTE or wire != 2:
                continue
            for a_number, a_wire, value in _fields(attr):
                if a_wire != 2:
                    continue
                if a_number in (_ATTR_T, _ATTR_TENSORS):
                    _tensor(value, found)
                elif a_number in (_ATTR_G, _ATTR_GRAPHS):
                    _graph(value, found, level + 1)
                elif a_number in (_ATTR_SPARSE, _ATTR_SPARSES):
                    _sparse(value, found)


def _graph(buf: memoryview, found: set[str], level: int) -> None:
    if level > MAX_NESTING:
        raise OnnxFormatError("graphs nested too deeply")
    nodes = []
    for number, wire, value in _fields(buf):
        if wire != 2:
            continue
        if number == _GRAPH_INITIALIZER:
            _tensor(value, found)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            _sparse(value, found)
        elif number == _GRAPH_NODE:
            nodes.append(value)
    _nodes(nodes, found, level)


def external_locations(model: bytes) -> set[str]:
    """The `location` of every tensor stored outside the graph ("" when one has none)."""
    if b"location" not in model:
        # No tensor names an outside file (the key is stored as plain text), and onnxruntime
        # refuses one marked external without a location ("Missing 'location'"): the walk, ~5 ms
        # of Python per graph at every load, is left for graphs that may need it.
        return set()
    found: set[str] = set()
    for number, wire, value in _fields(memoryview(model)):
        if wire != 2:
            continue
        if number == _MODEL_GRAPH:
            _graph(value, found, 0)
        elif number == _MODEL_FUNCTIONS:
            _nodes([v for n, w, v in _fields(value) if n == _FUNCTION_NODE and w == 2], found, 0)
    return found
