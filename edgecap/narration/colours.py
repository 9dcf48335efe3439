"""The colour channel: the name of the colour at the centre of the frame ("dark blue")."""
from __future__ import annotations

import cv2
import numpy as np

# OpenCV hue runs 0-179. Upper bounds of each hue band.
_HUES = [(8, "red"), (20, "orange"), (33, "yellow"), (78, "green"), (95, "turquoise"), (130, "blue"),
         (148, "purple"), (170, "pink"), (180, "red")]


def _hue_name(hue: float) -> str:
    return next(name for upper, name in _HUES if hue < upper)


def colour_name(rgb: np.ndarray, centre_fraction: float = 0.25) -> str:
    """The dominant colour at the centre of the frame, e.g. "red", "dark blue", "white", "gray".

    Each centre pixel votes for a colour family (black/white/gray by brightness when it
    has little saturation, otherwise a hue band); the winner gets "dark" or "light" from
    the median brightness and saturation of its own pixels.
    """
    h, w = rgb.shape[:2]
    ch, cw = max(1, int(h * centre_fraction)), max(1, int(w * centre_fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    centre = cv2.resize(rgb[top:top + ch, left:left + cw], (24, 24), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(centre, cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.float32)
    hue, sat, val = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    families = np.empty(len(hsv), dtype=object)
    achromatic = (sat < 45) | (val < 40)
    families[achromatic & (val < 50)] = "black"
    families[achromatic & (val >= 50) & (val < 190)] = "gray"
    families[achromatic & (val >= 190)] = "white"
    for i in np.flatnonzero(~achromatic):
        families[i] = _hue_name(hue[i])
    names, counts = np.unique(families.astype(str), return_counts=True)
    family = str(names[np.argmax(counts)])
    mine = families == family
    v, s = float(np.median(val[mine])), float(np.median(sat[mine]))
    if family in ("black", "white"):
        return family
    if family == "gray":
        return "dark gray" if v < 90 else "light gray" if v > 160 else "gray"
    if family in ("orange", "yellow") and v < 130:
        return "brown"
    if v < 100:
        return f"dark {family}"
    if s < 110 and v > 170:
        return f"light {family}"
    return family
