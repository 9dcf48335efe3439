"""Where each recognised line goes: lines of text, grouped into blocks, in the order a person reads them.

Blocks are read top to bottom within a column and left to right across columns, in the frame where
most of the text stands upright.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TextLine:
    text: str
    score: float
    box: tuple[tuple[float, float], ...]  # 4 corners (x, y) as fractions of width and height
    angle: int = 0  # 0, 90, 180 or 270: clockwise turn that makes this line upright


@dataclass(frozen=True)
class TextBlock:
    lines: tuple[TextLine, ...]

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


def upright_points(points: np.ndarray, angle: int, w: int, h: int) -> np.ndarray:
    """Pixel points after turning the whole image `angle` degrees clockwise."""
    x, y = points[:, 0], points[:, 1]
    if angle == 90:
        return np.stack([h - y, x], 1)
    if angle == 180:
        return np.stack([w - x, h - y], 1)
    if angle == 270:
        return np.stack([y, w - x], 1)
    return points


@dataclass
class _Item:
    line: TextLine
    x0: float
    y0: float
    x1: float
    y1: float
    parts: list = field(default_factory=list)

    @property
    def height(self) -> float:
        return max(self.y1 - self.y0, 1.0)


def _overlap(a0, a1, b0, b1) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _merge_row_fragments(items: list[_Item]) -> list[_Item]:
    """The detector sometimes cuts one line in two; pieces on one row with a small gap rejoin."""
    items = sorted(items, key=lambda it: it.x0)
    out: list[_Item] = []
    for it in items:
        for prev in out:
            h = min(prev.height, it.height)
            same_row = _overlap(prev.y0, prev.y1, it.y0, it.y1) > 0.6 * h
            similar = max(prev.height, it.height) < 1.5 * min(prev.height, it.height)
            if same_row and similar and -h < it.x0 - prev.x1 < 1.2 * h and it.x1 > prev.x1:
                prev.parts.append(it.line)
                prev.x1, prev.y0, prev.y1 = it.x1, min(prev.y0, it.y0), max(prev.y1, it.y1)
                break
        else:
            it.parts = [it.line]
            out.append(it)
    return out


def _same_block(a: _Item, b: _Item) -> bool:
    h = min(a.height, b.height)
    if max(a.height, b.height) > 1.8 * h:
        return False
    upper, lower = (a, b) if a.y0 <= b.y0 else (b, a)
    gap = lower.y0 - upper.y1
    columns_touch = _overlap(a.x0, a.x1, b.x0, b.x1) > 0.2 * min(a.x1 - a.x0, b.x1 - b.x0)
    return -0.5 * h < gap < 1.2 * h and columns_touch


def _before(a: tuple, b: tuple) -> bool:
    """Block a is read before block b: above it in the same column, or left of it on the same band."""
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    if _overlap(ax0, ax1, bx0, bx1) > 0 and ay1 <= by0 + 0.5 * (ay1 - ay0):
        return True
    return _overlap(ay0, ay1, by0, by1) > 0 and ax1 <= bx0


def arrange(lines: list[TextLine], width: int, height: int) -> tuple[TextBlock, ...]:
    """Lines -> blocks in reading order, in the frame where most of the text is upright."""
    if not lines:
        return ()
    votes: dict[int, int] = {}
    for line in lines:
        votes[line.angle] = votes.get(line.angle, 0) + len(line.text)
    angle = max(votes, key=votes.get)
    items = []
    for line in lines:
        pts = upright_points(np.array(line.box) * [width, height], angle, width, height)
        items.append(_Item(line, *pts.min(0), *pts.max(0)))
    items = _merge_row_fragments(items)
    parent = list(range(len(items)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            if _same_block(items[i], items[j]):
                parent[root(i)] = root(j)
    groups: dict[int, list[_Item]] = {}
    for i, it in enumerate(items):
        groups.setdefault(root(i), []).append(it)
    blocks = []
    for members in groups.values():
        members.sort(key=lambda it: (it.y0, it.x0))
        rect = (min(m.x0 for m in members), min(m.y0 for m in members),
                max(m.x1 for m in members), max(m.y1 for m in members))
        block_lines = tuple(_join(m.parts) for m in members)
        blocks.append((rect, TextBlock(block_lines)))
    ordered = []
    remaining = sorted(blocks, key=lambda rb: (rb[0][1], rb[0][0]))
    while remaining:  # the first block that nothing left is read before
        pick = next((rb for rb in remaining if not any(_before(o[0], rb[0]) for o in remaining if o is not rb)),
                    remaining[0])
        ordered.append(pick[1])
        remaining.remove(pick)
    return tuple(ordered)


def _join(parts: list[TextLine]) -> TextLine:
    if len(parts) == 1:
        return parts[0]
    pts = np.array([p for part in parts for p in part.box])
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    n = sum(len(p.text) for p in parts)
    return TextLine(" ".join(p.text for p in parts), sum(p.score * len(p.text) for p in parts) / max(n, 1),
                    ((x0, y0), (x1, y0), (x1, y1), (x0, y1)), parts[0].angle)
