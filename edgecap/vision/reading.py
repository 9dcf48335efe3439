"""Reading the text in a photo: PP-OCR (through the `rapidocr` package) run strictly offline,
junk removed, and the lines put in reading order (lines -> blocks; top to bottom, left to
right; columns kept apart; sideways and upside-down text turned upright first).

The detector, the 0/180 orientation classifier and the recogniser are the ONNX files inside
the pinned `rapidocr` wheel; every path is given explicitly, so the library never reaches
its download code (tests/test_reading.py proves it with a socket guard and an empty HOME).
"""
from __future__ import annotations

import logging
import os
import time
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from edgecap.vision.reading_order import TextBlock, TextLine, arrange, upright_points
from edgecap.vision.ctc_spaces import SPACE_FLOOR, install as install_spacing
from edgecap.vision.text_crops import CROP_VIEWS, band_box, equalised_copy, line_bands, read_line_ends, tall as _tall

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
log = logging.getLogger("edgecap")

MODEL_FILES = {"Det": "PP-OCRv6_det_small.onnx", "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
               "Rec": "PP-OCRv6_rec_small.onnx"}
# Writing systems the recogniser knows, by the Unicode name prefix of their letters.
SCRIPTS = {"latin": ("LATIN",), "greek": ("GREEK",), "cyrillic": ("CYRILLIC",),
           "cjk": ("CJK", "HIRAGANA", "KATAKANA", "HANGUL")}
SECOND_PASS_SCORE = 0.8  # lines this confident vote on which way up the photo is
MAX_BLOCKS = 3  # regions per pass that may be cut into lines (the weakest first)
MAX_ZOOM = 2.0  # a thumbnail enlarged further has no text the detector could find that a person could read
LANG_SCRIPTS = {"el": "greek", "ru": "cyrillic", "uk": "cyrillic", "bg": "cyrillic", "sr": "cyrillic",
                "zh": "cjk", "ja": "cjk", "ko": "cjk"}  # any other code: Latin


class ReadingError(ValueError):
    """The text reader cannot run (package or model files missing); one line for the user
    (a ValueError, so `edgecap` reports it as an error line, not a traceback)."""


@dataclass(frozen=True)
class ReadOptions:
    # Junk filter, chosen on bench/text_eval.py's curves (false text on val photos without
    # legible text against word accuracy on rendered text); see /work/notes/14.md.
    min_score: float = 0.9  # recogniser confidence (mean over characters)
    min_chars: int = 2  # letters or digits in the line (2 keeps "NO" and bus numbers)
    scripts: tuple[str, ...] = ("latin",)
    # Detector input: the longest side is scaled to this many pixels (upscaling small photos
    # finds 12 px text; downscaling big ones keeps the cost flat), enlarging at most MAX_ZOOM times.
    det_side: int = 960
    # The detector's own thresholds (rapidocr's defaults: 0.3, 0.5, 1.6).
    det_thresh: float = 0.3
    det_box_thresh: float = 0.5
    det_unclip: float = 1.6
    # Nothing confident found: the detector looks again at an equalised copy. Off: it found 2 more
    # words of 142 but read "406" and "inek" on val photos without text (docs/reading.md).
    det_clahe: bool = False
    # Lines read with less confidence than this are read again from other views of the same
    # crop (turned 180 degrees, contrast stretched, sharpened); the most confident reading wins.
    rescue_score: float = 0.95
    rescue_views: str = "flip,stretch,sharpen"
    split_blocks: bool = True  # regions holding several lines are cut into lines and read again
    # A space is put between two characters where the recogniser gave the space at least this
    # probability but the blank won (words run together: "COFFEEUNTIL"); 0: off. See ctc_spaces.py.
    space_floor: float = SPACE_FLOOR
    # Confident lines read again from their box stretched this many line heights past the line's
    # end (the detector stops short of some: "ENTRANCE offi"). Off: 1.5 found 2 more words of 614
    # but cost 20% more CPU on average, p90 1.4 -> 1.9 s (docs/reading.md); 0: off.
    reach: float = 0.0
    threads: int | None = None

    def __post_init__(self):
        unknown = [s for s in self.scripts if s not in SCRIPTS]
        if unknown:
            raise ValueError(f"unknown script {unknown[0]!r} (choose from {', '.join(SCRIPTS)})")
        views = [v for v in self.rescue_views.split(",") if v not in CROP_VIEWS]
        if views:
            raise ValueError(f"unknown view {views[0]!r} (choose from {', '.join(CROP_VIEWS)})")


def scripts_for(langs: list[str] | None) -> tuple[str, ...]:
    """ISO 639-1 codes -> scripts to keep; Latin is always kept (signs mix it in)."""
    picked = ["latin"] + [LANG_SCRIPTS[code.lower()[:2]] for code in langs or [] if code.lower()[:2] in LANG_SCRIPTS]
    return tuple(dict.fromkeys(picked))


@dataclass(frozen=True)
class Reading:
    blocks: tuple[TextBlock, ...] = ()
    rejected: tuple[TextLine, ...] = ()  # what the junk filter removed
    regions: int = 0  # text regions the detector found (0: recognition never ran)
    ms: float = 0.0

    @property
    def lines(self) -> tuple[TextLine, ...]:
        return tuple(line for block in self.blocks for line in block.lines)

    @property
    def text(self) -> str:
        return "\n\n".join(block.text for block in self.blocks)

    def __bool__(self) -> bool:
        return bool(self.blocks)

    def to_dict(self) -> dict:
        return {"text": self.text,
                "lines": [{"text": ln.text, "score": round(ln.score, 4), "angle": ln.angle,
                           "box": [[round(x, 4), round(y, 4)] for x, y in ln.box]} for ln in self.lines],
                "blocks": [block.text for block in self.blocks], "regions": self.regions, "ms": round(self.ms, 1)}


# --- the junk filter --------------------------------------------------------------------------
def _script_of(ch: str) -> str | None:
    name = unicodedata.name(ch, "")
    for script, prefixes in SCRIPTS.items():
        if name.startswith(prefixes):
            return script
    return None


def keep_line(text: str, score: float, options: ReadOptions) -> bool:
    """A recognised line worth saying: confident, long enough, in an expected script."""
    if score < options.min_score:
        return False
    letters = [ch for ch in text if ch.isalnum()]
    if len(letters) < options.min_chars:
        return False
    return all(ch.isdigit() or _script_of(ch) in options.scripts for ch in letters)


# --- the reader -------------------------------------------------------------------------------
def model_dir() -> Path:
    try:
        import rapidocr
    except ImportError as exc:
        raise ReadingError(f"reading text needs the rapidocr package ({exc}); pip install 'rapidocr==3.10.0'") \
            from None
    folder = Path(rapidocr.__file__).parent / "models"
    missing = [name for name in MODEL_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise ReadingError(f"the text models are missing from {folder} ({', '.join(missing)}); "
                           "reinstall rapidocr==3.10.0, whose wheel carries them")
    return folder


class TextReader:
    """Reads text in RGB images; one caller at a time per instance (narration gives it its own thread)."""

    def __init__(self, options: ReadOptions = ReadOptions()):
        self.options = options
        folder = model_dir()
        from rapidocr import RapidOCR

        threads = options.threads or -1
        params = {"Global.log_level": "error", "Global.model_root_dir": str(folder), "Global.text_score": 0.0,
                  "Det.limit_type": "max", "Det.limit_side_len": options.det_side,
                  "Det.thresh": options.det_thresh, "Det.box_thresh": options.det_box_thresh,
                  "Det.unclip_ratio": options.det_unclip,
                  "Global.max_side_len": max(2000, options.det_side),
                  "EngineConfig.onnxruntime.intra_op_num_threads": threads}
        params.update({f"{task}.model_path": str(folder / name) for task, name in MODEL_FILES.items()})
        self._engine = RapidOCR(params=params)
        install_spacing(self._engine._load_rec_model(), options.space_floor)
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)

    def _prepare(self, rgb: np.ndarray) -> np.ndarray:
        """The detector's view: small photos scaled up so their longest side is det_side."""
        h, w = rgb.shape[:2]
        scale = min(self.options.det_side / max(h, w), MAX_ZOOM)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if scale > 1.05:
            bgr = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
        return bgr

    def recognise(self, rgb: np.ndarray) -> tuple[list[TextLine], int]:
        """Every line the models find, unfiltered and unordered, and the number of regions.

        When most of the confident text lies sideways or upside down, the photo is turned that
        way up and read again (short words in a turned photo are otherwise read sideways)."""
        lines, regions = self._one_pass(rgb)
        equalise = False
        if self.options.det_clahe and not _says(lines, self.options.min_score):
            # Nothing confident: the detector looks again at an equalised copy (faint text).
            again, found = self._one_pass(rgb, equalise=True)
            if _says(again, self.options.min_score):
                lines, regions, equalise = again, found, True
        votes: dict[int, int] = {}
        for line in lines:
            if line.score >= SECOND_PASS_SCORE:
                votes[line.angle] = votes.get(line.angle, 0) + len(line.text)
        turn = max(votes, key=votes.get) if votes else 0
        if turn == 0:
            return lines, regions
        turned = np.ascontiguousarray(np.rot90(rgb, k=-turn // 90))  # k < 0: clockwise
        again, turned_regions = self._one_pass(turned, equalise)
        if _says(again, self.options.min_score) < _says(lines, self.options.min_score):
            return lines, regions  # the turned photo lost text the first look read (a 12 px line not found again)
        regions = turned_regions
        th, tw = turned.shape[:2]
        back, size = (360 - turn) % 360, [rgb.shape[1], rgb.shape[0]]
        return [TextLine(ln.text, ln.score,
                         tuple(map(tuple, upright_points(np.array(ln.box) * [tw, th], back, tw, th) / size)),
                         (ln.angle + turn) % 360) for ln in again], regions

    def _one_pass(self, rgb: np.ndarray, equalise: bool = False) -> tuple[list[TextLine], int]:
        from rapidocr.main import RapidOCRError
        from rapidocr.utils.process_img import map_boxes_to_original

        bgr = self._prepare(rgb)
        h, w = bgr.shape[:2]
        engine = self._engine
        img, record = engine.preprocess_img(bgr)
        try:
            crops, det, img = self._detect_and_crop(img, record, equalise)
        except RapidOCRError:  # rapidocr's way of saying "no text region": recognition never runs
            return [], 0
        sideways = [_tall(box) for box in det.boxes]
        upright, cls = engine.cls_and_rotate(crops)
        rec = engine.recognize_txt(upright)
        texts, scores = list(rec.txts), [float(x) for x in rec.scores]
        # upright[i] is the box's crop turned half a turn when crop_flipped[i]; flipped[i] is
        # which way up the kept reading of line i was made.
        crop_flipped = ["180" in label and conf > engine.cfg.Cls.cls_thresh for label, conf in cls.cls_res]
        flipped = list(crop_flipped)
        reread = self._second_look(upright, texts, scores, flipped)
        self._rescue(upright, texts, scores, flipped, crop_flipped, reread)
        if self.options.reach > 0:
            read_line_ends(engine, img, det.boxes, texts, scores, flipped, self.options.reach, self.options.min_score)
        bands = self._split_blocks(upright, texts, scores, h * w)
        boxes = map_boxes_to_original(det.boxes, record, h, w)
        lines, cut_from = [], []
        for i, (box, text, score, turned) in enumerate(zip(boxes, texts, scores, sideways)):
            if i in bands:  # lines cut from upright[i] and read turned or not; shares of the read way up
                parts, turned_again = bands[i]
                flip = crop_flipped[i] != turned_again
            else:
                parts, flip = [(text, score, 0.0, 1.0)], flipped[i]
            # rapidocr turns tall crops a quarter counter-clockwise: the image text ran top to bottom.
            angle = ((270 if turned else 0) + (180 if flip else 0)) % 360
            for part, part_score, r0, r1 in parts:
                corners = band_box(np.asarray(box, np.float64), r0, r1, turned, flip)
                lines.append(TextLine(part.strip(), part_score, tuple((float(x) / w, float(y) / h) for x, y in corners),
                                      angle))
                cut_from.append(i if i in bands else -1)
        # A line cut from a block that the detector also found on its own is said once.
        keep = [k for k, line in enumerate(lines) if cut_from[k] < 0 or not any(
            cut_from[j] != cut_from[k] and _covers(other, line) for j, other in enumerate(lines))]
        return [lines[k] for k in keep], len(crops)

    def _split_blocks(self, crops: list, texts: list, scores: list, image_area: int) -> dict[int, tuple]:
        """Regions that hold several lines (small blurred text on a plate is found as one block)
        are cut into their lines and each line read: {region: ([(text, score, r0, r1)], turned)},
        r0-r1 the line's share of the upright crop's height, turned when the lines read better
        the other way up; kept when the lines say more than the block did."""
        if not self.options.split_blocks:
            return {}
        # A block is weak or not much wider than tall, and small in the photo (a big region is
        # rarely a plate of text, and reading its slices both ways costs seconds).
        blocks = [i for i, crop in enumerate(crops) if (scores[i] < self.options.rescue_score or
                                                          crop.shape[1] < 3 * crop.shape[0])
                  and crop.shape[0] * crop.shape[1] <= 0.25 * image_area]
        cuts = {i: line_bands(crops[i]) for i in sorted(blocks, key=lambda i: scores[i])[:MAX_BLOCKS]}
        cuts = {i: bands for i, bands in cuts.items() if len(bands) >= 2}
        if not cuts:
            return {}
        jobs = []  # each line both ways up: a block's orientation is the classifier's weakest guess
        for i, bands in cuts.items():
            for r0, r1 in bands:
                piece = crops[i][round(r0 * crops[i].shape[0]):round(r1 * crops[i].shape[0])]
                jobs += [(i, False, r0, r1, np.ascontiguousarray(piece)),
                         (i, True, 1 - r1, 1 - r0, np.ascontiguousarray(np.rot90(piece, 2)))]
        read = self._engine.recognize_txt([job[4] for job in jobs])
        ways: dict[tuple, list] = {}
        for (i, turned, r0, r1, _), text, score in zip(jobs, read.txts, read.scores):
            ways.setdefault((i, turned), []).append((text, float(score), r0, r1))
        floor = self.options.min_score  # the reading that says more confident letters wins

        def says(parts):
            return sum(len(text.strip()) for text, score, *_ in parts if score >= floor)

        out = {}
        for i in cuts:
            turned = says(ways[i, True]) > says(ways[i, False])
            parts = ways[i, turned]
            if says(parts) > says([(texts[i], scores[i])]):
                out[i] = (sorted(parts, key=lambda p: p[2]), turned)
        return out

    def _detect_and_crop(self, img: np.ndarray, record: dict, equalise: bool = False) -> tuple[list, object, np.ndarray]:
        """rapidocr's detect_and_crop, also giving the (padded) image the crops were cut from; with
        `equalise` the detector sees an equalised copy, the recogniser still gets crops of the photo."""
        from rapidocr.main import RapidOCRError
        from rapidocr.utils.process_img import apply_vertical_padding

        engine = self._engine
        img, record = apply_vertical_padding(img, record, engine.width_height_ratio, engine.min_height)
        det = engine._load_det_model()(equalised_copy(img) if equalise else img)
        if det.boxes is None:
            raise RapidOCRError("The text detection result is empty")
        return engine.crop_text_regions(img, det.boxes), det, img

    def _rescue(self, crops: list, texts: list, scores: list, flipped: list, crop_flipped: list | None = None,
                reread: set = frozenset()) -> None:
        """Weak lines read again from other views of their crop; the most confident reading wins
        (in place). `crop_flipped`: which crops are turned half a turn from their box (default:
        as `flipped` says). Lines in `reread` were already read half a turn round: that view is
        not repeated."""
        weak = [i for i, score in enumerate(scores) if score < self.options.rescue_score]
        if not weak:
            return
        crop_flipped = list(flipped) if crop_flipped is None else crop_flipped
        views = []  # (line, image, whether this view is the other way up)
        for i in weak:
            for name in self.options.rescue_views.split(","):
                if not (name == "flip" and i in reread):
                    views.append((i, *CROP_VIEWS[name](crops[i])))
        if not views:
            return
        again = self._engine.recognize_txt([image for _, image, _ in views])
        for (i, _, turned), text, score in zip(views, again.txts, again.scores):
            if float(score) > scores[i]:
                texts[i], scores[i] = text, float(score)
                flipped[i] = crop_flipped[i] != turned  # every view is cut from the crop as it is

    def _second_look(self, crops: list, texts: list, scores: list, flipped: list) -> set:
        """Lines the orientation classifier turned the other way from most of the text are read
        again the majority's way up; the more confident reading wins (in place). Returns the
        lines read again."""
        upside_down = sum(len(t) for t, f in zip(texts, flipped) if f)
        majority = upside_down > sum(len(t) for t in texts) / 2
        odd = [i for i, f in enumerate(flipped) if f != majority]
        if not odd or len(odd) == len(texts):
            return set()
        again = self._engine.recognize_txt([np.ascontiguousarray(np.rot90(crops[i], 2)) for i in odd])
        for i, text, score in zip(odd, again.txts, again.scores):
            if float(score) > scores[i]:
                texts[i], scores[i], flipped[i] = text, float(score), majority
        return set(odd)

    def read(self, rgb: np.ndarray) -> Reading:
        """The text in an RGB uint8 image, junk removed, in reading order."""
        start = time.perf_counter()
        lines, regions = self.recognise(rgb)
        reading = tidy(lines, regions, rgb.shape[1], rgb.shape[0], self.options)
        return replace(reading, ms=(time.perf_counter() - start) * 1000)


def tidy(lines: list[TextLine], regions: int, width: int, height: int, options: ReadOptions) -> Reading:
    """Raw lines -> a Reading: the junk filter, then reading order."""
    kept = [line for line in lines if keep_line(line.text, line.score, options)]
    rejected = tuple(line for line in lines if line not in kept)
    return Reading(arrange(kept, width, height), rejected, regions)


def _says(lines: list[TextLine], floor: float) -> int:
    """Letters and digits in the lines read at least this confidently."""
    return sum(sum(ch.isalnum() for ch in line.text) for line in lines if line.score >= floor)


def _covers(a: TextLine, b: TextLine) -> bool:
    """Line a's box holds most of line b's (axis-aligned boxes)."""
    pa, pb = np.array(a.box), np.array(b.box)
    (ax0, ay0), (ax1, ay1) = pa.min(0), pa.max(0)
    (bx0, by0), (bx1, by1) = pb.min(0), pb.max(0)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    return inter > 0.5 * max((bx1 - bx0) * (by1 - by0), 1e-9)


_shared: dict[ReadOptions, TextReader] = {}


def shared_reader(options: ReadOptions = ReadOptions()) -> TextReader:
    """One reader per options in this process (loading the three models takes ~1 s)."""
    if options not in _shared:
        _shared[options] = TextReader(options)
    return _shared[options]
