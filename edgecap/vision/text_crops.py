"""Second looks at hard text for the reader (edgecap/vision/reading.py): other views of a weak line's
crop (turned half a turn, contrast stretched, sharpened), a block of several lines cut into its
lines, a line's box stretched past where the detector stopped, and a contrast-equalised copy of
the photo for the detector."""
from __future__ import annotations

import cv2
import numpy as np


def equalised_copy(bgr: np.ndarray) -> np.ndarray:
    """Local contrast equalised (CLAHE on the lightness), so faint text stands out."""
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def stretch(crop: np.ndarray) -> np.ndarray:
    """The crop's lightness range stretched to the full 0-255 (faint text on a plain ground)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    lo, hi = np.percentile(grey, (2, 98))
    if hi - lo < 4:
        return crop
    return np.clip((crop.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def sharpen(crop: np.ndarray) -> np.ndarray:
    """Unsharp mask, after enlarging small crops to the recogniser's 48 px height."""
    h = crop.shape[0]
    if h < 48:
        crop = cv2.resize(crop, None, fx=48 / h, fy=48 / h, interpolation=cv2.INTER_CUBIC)
    soft = cv2.GaussianBlur(crop, (0, 0), 2.0)
    return cv2.addWeighted(crop, 1.8, soft, -0.8, 0)


# name -> crop -> (the other view, whether it is the other way up)
CROP_VIEWS = {"flip": lambda c: (np.ascontiguousarray(np.rot90(c, 2)), True),
              "stretch": lambda c: (stretch(c), False),
              "sharpen": lambda c: (sharpen(c), False),
              "stretch_flip": lambda c: (np.ascontiguousarray(np.rot90(stretch(c), 2)), True)}


def line_bands(crop: np.ndarray) -> list[tuple[float, float]]:
    """Rows of ink in a crop, as (top, bottom) shares of its height with a margin: the lines of a
    block. Ink is the minority side of an Otsu threshold; [] when the rows do not part cleanly."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    if h < 16:
        return []
    _, bw = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    ink = bw > 0
    if ink.mean() > 0.5:
        ink = ~ink
    rows = ink[:, w // 20: w - w // 20].mean(1) > 0.02
    runs, start = [], None
    for y, on in enumerate(list(rows) + [False]):
        if on and start is None:
            start = y
        elif not on and start is not None:
            if y - start >= 4:
                runs.append([start, y])
            start = None
    merged = []
    for run in runs:  # a gap of a pixel or two is inside a line (a thin stroke), not between lines
        if merged and run[0] - merged[-1][1] <= 2:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    if len(merged) > 6:
        return []
    median = float(np.median([y1 - y0 for y0, y1 in merged]))
    merged = [(y0, y1) for y0, y1 in merged if y1 - y0 <= 2 * median]  # lines of a block are alike
    if len(merged) < 2:
        return []
    bands = []
    for y0, y1 in merged:
        pad = 0.35 * (y1 - y0)
        bands.append((max(0.0, (y0 - pad) / h), min(1.0, (y1 + pad) / h)))
    return bands


def band_box(box: np.ndarray, r0: float, r1: float, tall: bool, flipped: bool) -> np.ndarray:
    """The image corners of the rows r0-r1 (shares of height) of the upright crop cut from `box`
    (rapidocr's order: the crop's top left, top right, bottom right, bottom left)."""
    if (r0, r1) == (0.0, 1.0):
        return box
    if flipped:  # the rows are counted in the crop turned half a turn
        r0, r1 = 1 - r1, 1 - r0
    p0, p1, p2, p3 = box
    if tall:  # turned a quarter counter-clockwise: its rows are the cut's columns, right to left
        c0, c1 = 1 - r1, 1 - r0
        return np.array([p0 + c0 * (p1 - p0), p0 + c1 * (p1 - p0), p3 + c1 * (p2 - p3), p3 + c0 * (p2 - p3)])
    return np.array([p0 + r0 * (p3 - p0), p1 + r0 * (p2 - p1), p1 + r1 * (p2 - p1), p0 + r1 * (p3 - p0)])


def reached_box(box: np.ndarray, reach: float, tall: bool, flipped: bool, width: int, height: int) -> np.ndarray:
    """A detector box (rapidocr's corner order) stretched `reach` times the line's thickness past
    the end of its line (the end as read: `flipped`, read half a turn round), kept inside the
    image: the detector sometimes stops a letter or two short of a line's end ("ENTRANCE Plea")."""
    p0, p1, p2, p3 = np.asarray(box, np.float64)
    # rapidocr turns a tall crop a quarter counter-clockwise: its line runs from the p0-p1 edge
    # to the p3-p2 edge; a flat crop's from p0-p3 to p1-p2.
    along, across = (p3 - p0, p1 - p0) if tall else (p1 - p0, p3 - p0)
    step = along / max(np.linalg.norm(along), 1e-9) * reach * np.linalg.norm(across)
    ends = ((2, 3) if tall else (1, 2)) if not flipped else ((0, 1) if tall else (0, 3))
    out = np.array([p0, p1, p2, p3])
    out[list(ends)] += -step if flipped else step
    return np.clip(out, 0, [width - 1, height - 1]).astype(np.float32)


def overlaps_another(box: np.ndarray, boxes: list, own: int, share: float = 0.3) -> bool:
    """Whether box's bounding rectangle covers more than `share` of another box's (a neighbour on
    the same line, which a stretched box would read twice)."""
    (x0, y0), (x1, y1) = np.min(box, 0), np.max(box, 0)
    for j, other in enumerate(boxes):
        if j == own:
            continue
        (a0, b0), (a1, b1) = np.min(other, 0), np.max(other, 0)
        inter = max(0.0, min(x1, a1) - max(x0, a0)) * max(0.0, min(y1, b1) - max(y0, b0))
        if inter > share * max((a1 - a0) * (b1 - b0), 1e-9):
            return True
    return False


def tall(box: np.ndarray) -> bool:
    """Whether rapidocr turned this box's crop a quarter (its own rule: height >= 1.5 x width)."""
    width = int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
    height = int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
    return height / max(width, 1) >= 1.5


def _letters(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum())


def read_line_ends(engine, img: np.ndarray, boxes: list, texts: list, scores: list, flipped: list,
                   reach: float, floor: float) -> None:
    """Confident lines (score >= floor) read again by rapidocr's `engine` from their box in `img`
    stretched `reach` line heights past the line's end; the longer reading is kept (in place) when
    it is confident too, says more, and starts with the first reading, spaces and all, give or take
    its last character (a stretched box that runs two words together is not kept). Not tried where
    the stretched box would reach another box (the rest of the line, found on its own)."""
    h, w = img.shape[:2]
    jobs = []
    for i, box in enumerate(boxes):
        if scores[i] < floor or len(_letters(texts[i])) < 2:
            continue
        longer = reached_box(box, reach, tall(box), flipped[i], w, h)
        if not overlaps_another(longer, boxes, i):
            crop = engine.crop_text_regions(img, [longer])[0]
            jobs.append((i, np.ascontiguousarray(np.rot90(crop, 2)) if flipped[i] else crop))
    if not jobs:
        return
    again = engine.recognize_txt([crop for _, crop in jobs])
    for (i, _), text, score in zip(jobs, again.txts, again.scores):
        first, longer = texts[i].strip().lower(), text.strip().lower()
        if float(score) >= floor and len(_letters(longer)) > len(_letters(first)) and longer.startswith(first[:-1]):
            texts[i], scores[i] = text, float(score)
