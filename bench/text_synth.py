"""The synthetic text set of bench/text_eval.py: words rendered onto real photos, with what a
person could see of them.

Words in OpenCV's Hershey fonts (and DejaVu through Pillow when the system has it) on photos from
<data>/unlabeled, 640x480, 1-3 lines; cap height 12-56 px, turned 0/90/180 degrees, some blurred,
some low-contrast, some in perspective, JPEG-compressed. A word drawn where the photo beneath is as
bright as its letters is marked hidden (`hidden_words`).
"""
from __future__ import annotations

import glob
import random

import cv2
import numpy as np

SIZES = (12, 16, 20, 28, 40, 56)  # cap height in pixels of the 640x480 frame
WORDS = """EXIT STOP OPEN CLOSED PUSH PULL ENTRANCE NO PARKING ONE WAY YIELD DANGER CAUTION WET FLOOR
Main Street Avenue Road Station Platform Pharmacy Bakery Coffee Tea Hotel Museum Library Hospital
Police Taxi Bus Train Airport Terminal Gate Ticket Office Toilets Ladies Gentlemen Lift Stairs Floor
Sale Fresh Bread Milk Butter Cheese Apple Orange Sugar Salt Pepper Water Juice Organic Price Total
Paracetamol Ibuprofen tablets capsules daily dose Take twice with food Keep out of reach children
Warning Fragile Handle care Private Staff only Welcome Thank you Please wait here Emergency Fire
North South East West Centre Park Garden Bridge Market Square Castle Church School University
Monday Tuesday Friday Sunday hours until from Speed Limit Slow Children Crossing Keep Right Left
kitchen bathroom bedroom office printer paper recycling glass plastic metal batteries tickets""".split()
FONTS_CV = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)
TTF = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/DejaVu*.ttf"))


def _phrase(rng: random.Random) -> list[str]:
    words = [rng.choice(WORDS) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.2:
        words.append(str(rng.randint(1, 999)))
    case = rng.random()
    if case < 0.35:
        words = [w.upper() for w in words]
    elif case < 0.5:
        words = [w.lower() for w in words]
    return words


def _draw_line(canvas: np.ndarray, text: str, x: int, y: int, cap: int, colour, font, rng,
               mask: np.ndarray | None = None) -> int:
    """Draws text with its baseline at y and capital letters `cap` px tall; returns its width.
    With `mask` (one channel), the same glyphs are drawn there too, in 255."""
    if isinstance(font, str):
        from PIL import Image, ImageDraw, ImageFont

        face = ImageFont.truetype(font, size=64)
        size = max(6, round(64 * cap / (face.getbbox("H")[3] - face.getbbox("H")[1])))
        face = ImageFont.truetype(font, size=size)
        img = Image.fromarray(canvas)
        ImageDraw.Draw(img).text((x, y), text, font=face, fill=tuple(int(c) for c in colour), anchor="ls")
        canvas[:] = np.asarray(img)
        if mask is not None:
            img = Image.fromarray(mask)
            ImageDraw.Draw(img).text((x, y), text, font=face, fill=255, anchor="ls")
            mask[:] = np.asarray(img)
        return int(face.getlength(text))
    (w1, h1), _ = cv2.getTextSize("H", font, 1.0, 1)
    scale = cap / h1
    thick = max(1, round(cap / 10)) + rng.randint(0, 1)
    cv2.putText(canvas, text, (x, y), font, scale, tuple(int(c) for c in colour), thick, cv2.LINE_AA)
    if mask is not None:
        cv2.putText(mask, text, (x, y), font, scale, 255, thick, cv2.LINE_AA)
    return cv2.getTextSize(text, font, scale, thick)[0][0]


def _width(text: str, cap: int, font) -> int:
    """The drawn width of text, without drawing (and without touching the random stream)."""
    if isinstance(font, str):
        from PIL import ImageFont

        face = ImageFont.truetype(font, size=64)
        face = ImageFont.truetype(font, size=max(6, round(64 * cap / (face.getbbox("H")[3] - face.getbbox("H")[1]))))
        return int(face.getlength(text))
    (_, h1), _ = cv2.getTextSize("H", font, 1.0, 1)
    return cv2.getTextSize(text, font, cap / h1, max(1, round(cap / 10)))[0][0]


MIN_CONTRAST = 10  # grey levels between a glyph pixel and the photo beneath it: below this it is not seen
MAX_HIDDEN = 0.2  # a word with more of its glyph pixels below MIN_CONTRAST than this is not legible


def hidden_words(before: np.ndarray, mask: np.ndarray, grey: float, spans: list[tuple[str, int, int]]) -> list[str]:
    """Words drawn where the photo beneath is about as bright as the letters (pale text over a
    window, dark text over a shadow): a person could not read them either."""
    lum = cv2.cvtColor(before, cv2.COLOR_RGB2GRAY).astype(np.float32)
    out = []
    for word, x0, x1 in spans:
        glyph = mask[:, max(0, x0):x1] > 128
        if not glyph.any():
            continue
        low = np.abs(lum[:, max(0, x0):x1][glyph] - grey) < MIN_CONTRAST
        if low.mean() > MAX_HIDDEN:
            out.append(word)
    return out


def render(rng: random.Random, backgrounds: list[str]) -> tuple[np.ndarray, list[str], dict]:
    meta = {"size": rng.choice(SIZES), "angle": rng.choice((0, 90, 180)), "blur": rng.choice((0.0, 0.0, 0.8, 1.5)),
            "low_contrast": rng.random() < 0.25, "perspective": rng.random() < 0.3, "plate": rng.random() < 0.6,
            "font": "dejavu" if TTF and rng.random() < 0.4 else "hershey"}
    bg = cv2.cvtColor(cv2.imread(rng.choice(backgrounds)), cv2.COLOR_BGR2RGB)
    canvas = cv2.resize(bg, (640, 480), interpolation=cv2.INTER_CUBIC)
    font = rng.choice(TTF) if meta["font"] == "dejavu" else rng.choice(FONTS_CV)
    cap = meta["size"]
    lines = [" ".join(_phrase(rng)) for _ in range(rng.randint(1, 3))]
    # Fit: shrink the phrase list rather than the letters (the size is the condition under test).
    probe = np.zeros((10, 10, 3), np.uint8)
    x0 = rng.randint(50, 80)  # clear of the edges even after the perspective warp (corners move <= 40 px)
    while lines and max(_draw_line(probe.copy(), ln, 0, 5, cap, (0, 0, 0), font, rng) for ln in lines) > 580 - x0:
        lines = [" ".join(ln.split()[:-1]) for ln in lines if len(ln.split()) > 1]
    if not lines:
        lines = [rng.choice(WORDS)[:4]]
    step = int(cap * 1.9)
    y0 = rng.randint(cap + 45, max(cap + 46, 440 - step * (len(lines) - 1)))
    region = canvas[max(0, y0 - cap - 10):min(480, y0 + step * (len(lines) - 1) + cap), :].reshape(-1, 3)
    local = float(region.mean()) if region.size else 128.0
    if meta["plate"]:
        plate = np.array(rng.choice([(245, 245, 240), (200, 30, 30), (20, 90, 40), (30, 50, 140), (250, 210, 40)]))
        cv2.rectangle(canvas, (x0 - 12, y0 - cap - 12), (600, min(470, y0 + step * (len(lines) - 1) + cap // 2 + 10)),
                      tuple(int(c) for c in plate), -1)
        local = float(plate.mean())
    dark = local > 128
    delta = rng.uniform(35, 55) if meta["low_contrast"] else rng.uniform(140, 230)
    grey = np.clip(local - delta if dark else local + delta, 0, 255)
    colour = (grey, grey, grey)
    before = canvas.copy()
    hidden = []
    for i, text in enumerate(lines):
        mask = np.zeros(canvas.shape[:2], np.uint8)
        _draw_line(canvas, text, x0, y0 + i * step, cap, colour, font, rng, mask)
        spans, words = [], text.split()
        for k, word in enumerate(words):
            start = x0 + (_width(" ".join(words[:k]) + " ", cap, font) if k else 0)
            spans.append((word, start, start + _width(word, cap, font)))
        hidden += hidden_words(before, mask, float(grey), spans)
    meta["illegible"] = hidden
    if meta["perspective"]:
        src = np.float32([[0, 0], [640, 0], [640, 480], [0, 480]])
        dst = src + np.float32([[rng.uniform(-40, 40), rng.uniform(-30, 30)] for _ in range(4)])
        canvas = cv2.warpPerspective(canvas, cv2.getPerspectiveTransform(src, dst), (640, 480),
                                     borderMode=cv2.BORDER_REFLECT)
    if meta["blur"]:
        canvas = cv2.GaussianBlur(canvas, (0, 0), meta["blur"])
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    canvas = cv2.cvtColor(cv2.imdecode(jpg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    canvas = {0: canvas, 90: cv2.rotate(canvas, cv2.ROTATE_90_CLOCKWISE), 180: cv2.rotate(canvas, cv2.ROTATE_180)}[
        meta["angle"]]
    return canvas, " ".join(lines).split(), meta
