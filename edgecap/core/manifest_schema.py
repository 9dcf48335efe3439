"""What a bundle's manifest.json may contain: types, ranges and required keys.

Every value that reaches the runtime is checked here first, so a malformed or hostile
manifest ends in one line naming the key ("tokens.bos_id: must be an integer in
[0, 2851)"), never in a traceback or in a 5 GB tensor from `image_size: [12000, 12000]`.
Keys the runtime does not read (provenance, quantization, config, ...) are free-form.
"""
from __future__ import annotations

import math
import re
from typing import Any

HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_IMAGE_SIDE = 1024  # the model input; a photo of any size is resized to it
MAX_DEPTH = 32


class SchemaError(ValueError):
    """One line: the key and what is wrong with it."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def need_int(d: dict, key: str, where: str, lo: int, hi: int, default: Any = ...) -> int:
    if key not in d:
        if default is ...:
            raise SchemaError(f"{where}.{key}: missing")
        return default
    v = d[key]
    if not _is_int(v) or not lo <= v <= hi:
        raise SchemaError(f"{where}.{key}: must be an integer in [{lo}, {hi}], got {_short(v)}")
    return v


def need_number(d: dict, key: str, where: str, lo: float, hi: float, default: Any = ...) -> float:
    if key not in d:
        if default is ...:
            raise SchemaError(f"{where}.{key}: missing")
        return default
    v = d[key]
    if not _is_number(v) or not lo <= v <= hi:
        raise SchemaError(f"{where}.{key}: must be a number in [{lo:g}, {hi:g}], got {_short(v)}")
    return float(v)


def need_dict(d: dict, key: str, where: str = "manifest", optional: bool = False) -> dict:
    if key not in d and optional:
        return {}
    v = d.get(key)
    if not isinstance(v, dict):
        raise SchemaError(f"{where}.{key}: must be an object, got {_short(v)}" if key in d
                          else f"{where}.{key}: missing")
    return v


def need_int_list(d: dict, key: str, where: str, lo: int, hi: int, min_len: int, max_len: int,
                  default: Any = ...) -> list[int]:
    if key not in d and default is not ...:
        return default
    v = d.get(key)
    if not isinstance(v, list) or not min_len <= len(v) <= max_len or not all(_is_int(x) and lo <= x <= hi for x in v):
        raise SchemaError(f"{where}.{key}: must be a list of {min_len}-{max_len} integers in [{lo}, {hi}], "
                          f"got {_short(v)}")
    return v


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def depth(v: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of JSON data, stopping once past limit."""
    stack, deepest = [(v, 1)], 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((x, level + 1) for x in item.values())
        elif isinstance(item, list):
            stack.extend((x, level + 1) for x in item)
    return deepest


def check_manifest(m: Any, format_name: str, format_version: int) -> None:
    """Raise SchemaError for the first problem in a parsed manifest."""
    if not isinstance(m, dict):
        raise SchemaError(f"must be a JSON object, got {type(m).__name__}")
    if depth(m) > MAX_DEPTH:
        raise SchemaError(f"nested more than {MAX_DEPTH} levels deep")
    if m.get("format") != format_name:
        raise SchemaError(f"format: not an {format_name} manifest")
    version = m.get("format_version")
    if not _is_int(version) or version < 1:
        raise SchemaError(f"format_version: must be a positive integer, got {_short(version)}")
    if version > format_version:
        raise SchemaError(f"format_version: bundle format {version} needs a newer edgecap")
    if "name" in m and (not isinstance(m["name"], str) or not 0 < len(m["name"]) <= 200):
        raise SchemaError(f"name: must be a short string, got {_short(m['name'])}")

    files = need_dict(m, "files")
    for role, rel in files.items():
        if not isinstance(rel, str) or not rel:
            raise SchemaError(f"files.{role}: must be a file name, got {_short(rel)}")
    hashes = need_dict(m, "sha256")
    for rel, digest in hashes.items():
        if not isinstance(digest, str) or not HEX64.fullmatch(digest):
            raise SchemaError(f"sha256[{rel!r}]: must be 64 lower-case hex digits, got {_short(digest)}")

    a = need_dict(m, "architecture")
    where = "architecture"
    if not isinstance(a.get("family"), str):
        raise SchemaError(f"{where}.family: must be a string")
    need_int(a, "n_layers", where, 1, 64)
    need_int(a, "n_heads", where, 1, 128)
    need_int(a, "head_dim", where, 1, 1024)
    need_int(a, "n_visual", where, 1, 16384)
    vocab = need_int(a, "vocab_size", where, 4, 1_000_000)
    max_length = need_int(a, "max_length", where, 2, 1024)
    need_int(a, "pooled_dim", where, 1, 65536)

    p = need_dict(m, "preprocessing")
    where = "preprocessing"
    need_int_list(p, "image_size", where, 16, MAX_IMAGE_SIDE, 2, 2)
    if p.get("resize", "squash") not in ("squash", "center_crop"):
        raise SchemaError(f"{where}.resize: must be squash or center_crop, got {_short(p.get('resize'))}")
    need_number(p, "rescale", where, 1e-6, 1e6, default=1.0)
    for key, lo in (("mean", -1e6), ("std", 1e-6)):
        v = p.get(key)
        if not isinstance(v, list) or len(v) != 3 or not all(_is_number(x) and lo <= x <= 1e6 for x in v):
            raise SchemaError(f"{where}.{key}: must be a list of 3 numbers in [{lo:g}, 1e6], got {_short(v)}")

    t = need_dict(m, "tokens")
    where = "tokens"
    for key in ("bos_id", "eos_id", "pad_id"):
        need_int(t, key, where, 0, vocab - 1)
    need_int_list(t, "prompt_ids", where, 0, vocab - 1, 1, max_length - 1)
    need_int_list(t, "suppress_ids", where, 0, vocab - 1, 0, vocab, default=[])

    c = need_dict(m, "calibration", optional=True)
    where = "calibration"
    need_number(c, "alpha", where, 1e-3, 100.0, default=None)
    need_number(c, "beta", where, 0.0, 0.999999, default=None)
    need_number(c, "tau", where, -1e3, 1e3, default=None)
    n_layers = a["n_layers"]
    need_int(c, "selection_layer", where, -n_layers, n_layers - 1, default=None)
    if c.get("gain_layers") is not None:
        need_int_list(c, "gain_layers", where, -n_layers, n_layers - 1, 0, n_layers)

    if "memory" in files:
        mem = need_dict(m, "memory", optional=True)
        where = "memory"
        need_int(mem, "neighbours", where, 1, 1000, default=None)
        need_int(mem, "samples", where, 0, 64, default=None)
        need_number(mem, "temperature", where, 1e-3, 10.0, default=None)
