"""Where the spoken sentence is decided.

    exposure gate -> encode -> candidate captions -> perception -> grounding -> rerank
      -> the sentence and its confidence: "sure", "hedged" or "unknown"

* sure: the best candidate (by the caption memory) among those whose every named object
  the detectors see (edgecap.vision.grounding);
* hedged: "Probably ..." when a candidate's objects are only likely, otherwise a
  statement built from the evidence ("Probably a bear.", "I'm not sure. I can see a cup
  and a table.", "It might be a missile or a space shuttle."; worded by edgecap.statements);
* unknown: "I can't tell what this is." (and the exposure messages for dark, white,
  blank or tiny frames).

The CLI, eval, bench and narration all speak what this module decides; the captioner
(edgecap.core.model) only supplies features and candidates. Nothing here depends on the
other photos of a batch: perception, grounding and the memory's choice are per image.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from edgecap.core.decoding import DecodingOptions
from edgecap.core.image import EXPOSURE_MESSAGES, as_rgb, exposure_problem
from edgecap.core.model import CaptionResult
from edgecap.core.providers import in_background
from edgecap.details import agreement, supported_part
from edgecap.statements import CANT_TELL, evidence_statement, probably
from edgecap.vision.colour_check import unsupported_colours
from edgecap.vision.grounding import GroundingRules, caption_classes, gather, grounding_table, judge
from edgecap.vision.salience import mention_chance
from edgecap.wording import flaws, generic, repaired, specifics, words

TOO_SMALL = "The image is too small to describe."
MIN_SIDE = 16  # pixels; a smaller frame (a 2x2 icon) shows nothing a sentence could be about
CONFIDENCES = ("sure", "hedged", "unknown")
_DESCRIBER_BUILD = threading.Lock()
# A frame whose 4x4 grid of cells all share one brightness and one contrast is a texture or
# noise, not a scene: 0 of 872 real photos (captioned and unlabelled) come this close.
TEXTURE_MEAN_SPREAD = 0.2
TEXTURE_CONTRAST_SPREAD = 0.15


@dataclass
class SpokenCaption(CaptionResult):
    confidence: str = "unknown"  # sure | hedged | unknown
    objects: list = field(default_factory=list)  # perception Detections at or above their likely threshold
    faces: int = 0
    named: tuple[str, ...] = ()  # what the sentence names: COCO classes and ImageNet names
    model_caption: str = ""  # the candidate the sentence came from, or the model's first choice
    support: float = 0.0  # grounding margin of model_caption (edgecap.vision.grounding.Verdict.margin)
    text: str | None = None  # legible text read in the photo (with read_text), "" when none
    candidate: str = ""  # the model's candidate the sentence was made from, as `tokens` decode; "" for evidence

    def to_json(self) -> dict:
        record = {"caption": self.caption, "confidence": self.confidence,
                  "objects": [{"name": d.name, "score": round(d.score, 3), "box": [round(v, 3) for v in d.box]}
                              for d in self.objects],
                  "faces": self.faces, "candidate": self.candidate,
                  "tokens": self.tokens, "ms": round(self.ms, 2), "status": self.status}
        if self.text is not None:
            record["text"] = self.text
        return record


@dataclass(frozen=True)
class Choice:
    sentence: str
    confidence: str
    source: str | None  # the candidate spoken (as is or after "Probably"), None for an evidence statement
    named: tuple[str, ...]
    model_caption: str
    support: float
    objects: list
    faces: int


class Describer:
    """A captioner, its perception graphs and the grounding rules of its bundle."""

    def __init__(self, captioner, perceiver=None, rules: GroundingRules | None = None):
        self.captioner = captioner
        self.perceiver = perceiver
        self.rules = rules or GroundingRules.from_dict(captioner.bundle.manifest.get("grounding"))

    @classmethod
    def for_captioner(cls, captioner) -> "Describer":
        """The captioner's describer, made once per provider list (a CPU fallback reloads perception)."""
        from edgecap.vision.perception import Perceiver

        with _DESCRIBER_BUILD:  # narrator threads start together: one set of perception sessions
            key = tuple(captioner.providers)
            cached = getattr(captioner, "_describer", None)
            if cached is None or cached[0] != key:
                soon = getattr(captioner, "perception_soon", None)  # started when the captioner loaded
                perceiver = soon[1]() if soon is not None and soon[0] == key else Perceiver.from_bundle(
                    captioner.bundle, captioner.providers, captioner.threads)
                cached = (key, cls(captioner, perceiver))
                captioner._describer = cached
            return cached[1]

    # --- entry points ----------------------------------------------------------------
    def describe(self, images: list[np.ndarray], options: DecodingOptions = DecodingOptions(),
                 read_text=None) -> list[SpokenCaption]:
        """The spoken sentence for each RGB uint8 frame.

        read_text: None, or RGB -> (clause, text) (edgecap.vision.read_aloud.caption_text_reader); the
        clause ("It says: STOP.") is added to the sentence of every describable frame.
        """
        start = time.perf_counter()
        results: list[SpokenCaption | None] = [None] * len(images)
        frames, describable = [], []
        for i, image in enumerate(images):
            rgb = as_rgb(image)
            gate = _gate(rgb)
            if gate is not None:
                results[i] = gate
            else:
                frames.append(rgb)
                describable.append(i)
        if describable:
            features = self.captioner.encode(frames)
            for i, res in zip(describable, self.describe_features(frames, features, options)):
                results[i] = res
            per_image = (time.perf_counter() - start) * 1000 / len(describable)
            for i in describable:
                results[i].ms = per_image  # type: ignore[union-attr]
        if read_text is not None:
            for i, rgb in zip(describable, frames):
                clause, results[i].text = read_text(rgb)  # type: ignore[union-attr]
                results[i].caption = f"{results[i].caption} {clause}".strip()  # type: ignore[union-attr]
        return results  # type: ignore[return-value]

    def describe_features(self, frames: list[np.ndarray], features, options: DecodingOptions = DecodingOptions()
                          ) -> list[SpokenCaption]:
        """The decision for frames whose encoder features are already computed (narration)."""
        start = time.perf_counter()
        seeing = self._perceive_meanwhile(frames, features.pooled)
        pools = self.captioner.candidates(features, options)
        memory = self.captioner.memory
        neighbours = memory.nearest(features.pooled) if memory is not None and len(pools[0]) > 1 else None
        seen = seeing() if seeing is not None else [None] * len(frames)
        results = []
        for j, (frame, pool) in enumerate(zip(frames, pools)):
            results.append(self.decide(pool, None if neighbours is None else neighbours[j], seen[j], frame))
        ms = (time.perf_counter() - start) * 1000 / max(len(frames), 1)
        for r in results:
            r.ms = ms
        return results

    def _perceive_meanwhile(self, frames: list[np.ndarray], pooled):
        """Perception of the frames: the function that waits for it, or None without perception
        graphs. With three cores or more it runs on a thread of its own while the decoder writes
        the candidates (onnxruntime lets go of the GIL). On two cores it runs at once, leaving one
        core to capture and speech (issue #13: CPU time per caption at most 1.1x wall). Beside the
        decoder there it saved 7-10 ms of a 55-68 ms caption for 1.4x CPU (edgecap bench,
        interleaved runs). EDGECAP_PERCEPTION_BESIDE=1 or 0 decides instead."""
        if self.perceiver is None:
            return None
        beside = os.environ.get("EDGECAP_PERCEPTION_BESIDE", "1" if (os.cpu_count() or 1) >= 3 else "0") != "0"
        return in_background(lambda: [self.perceiver.perceive(f, pooled[j]) for j, f in enumerate(frames)],
                             serial=not beside, name="edgecap-perception")

    # --- the decision ----------------------------------------------------------------
    def decide(self, pool: list, neighbours, perception, rgb: np.ndarray | None = None) -> SpokenCaption:
        """The sentence for one image from its candidate pool (Decoded), memory neighbours, perception
        and pixels (for colour words)."""
        texts = [self.captioner.tokenizer.decode(d.tokens) for d in pool]
        choice = self.decide_texts(texts, neighbours, perception, rgb)
        d = pool[texts.index(choice.source)] if choice.source is not None else None
        return SpokenCaption(caption=choice.sentence, tokens=list(d.tokens) if d else [], ms=0.0,
                             logprob=d.logprob if d else 0.0, sparc_selected=d.selected_tokens if d else 0,
                             confidence=choice.confidence, objects=choice.objects, faces=choice.faces,
                             named=choice.named, model_caption=choice.model_caption, support=choice.support,
                             candidate=choice.source or "")

    def decide_texts(self, texts: list[str], neighbours, perception, rgb: np.ndarray | None = None) -> "Choice":
        unique = list(dict.fromkeys(texts))
        scored: dict[str, float] = {}  # each text scored against the memory once
        first = self._choose(unique, neighbours, scored)
        origin = {t: t for t in unique}  # what may be said -> the candidate it comes from
        if self.rules.reject_garbled:  # a garbled candidate is said only when a repeated last phrase can go
            origin = {}
            for t in unique:
                fixed = t if not flaws(t) else repaired(t) if self.rules.repair_repeats else None
                if fixed:
                    origin.setdefault(fixed, t)
            unique = list(origin)
        if perception is None:  # a bundle without detectors: nothing can be checked, all is hedged
            said = self._choose(unique, neighbours, scored) if unique else first
            return Choice(probably(said), "hedged", origin.get(said, said), (), first, 0.0, [], 0)
        evidence = gather(perception, self.rules)
        objects = [d for dets in evidence.likely.values() for d in dets]
        verdicts = {text: judge(text, evidence, self.rules) for text in {*unique, first}}
        memory = self.captioner.memory
        neighbour_captions = [memory.captions[j] for j in neighbours] if memory and neighbours is not None else []
        chance = mention_chance(texts, evidence, self.rules, neighbour_captions)  # None: not used

        def stated(v) -> bool:  # sure, or only weakly seen things a describer would surely mention
            return v.level == "sure" or (v.level == "likely" and self.rules.mention_sure_at <= 1 and chance and all(
                chance(c) >= self.rules.mention_sure_at for c in v.named)
                and not any(", sees" in p for p in v.problems))
        sure = [t for t in unique if stated(verdicts[t])]
        unseen = self._unseen_colours(rgb, evidence)
        said = {plain: t for plain, t in self._without_specifics(sure, texts, unseen).items()  # "two people": again
                if plain == t or stated(judge(plain, evidence, self.rules))}
        if said:
            pick = self._choose(list(said), neighbours, scored)
            v = verdicts[said[pick]]
            sentence = self._supported_details(pick, texts, neighbour_captions)
            named = tuple(c for c in v.named if c in caption_classes(sentence))  # a cut phrase may have named one
            return Choice(sentence, "sure", origin[said[pick]], named, said[pick], v.margin, objects, evidence.faces)
        likely = [t for t in unique if verdicts[t].level == "likely"]
        if self.rules.specifics == "hedge":
            likely = sure + likely
        if chance is not None:
            likely = [t for t in likely if all(chance(c) >= self.rules.mention_candidate_at for c in verdicts[t].named)]
        hedged = self._without_specifics(likely, texts, unseen) if self.rules.generic_hedges else {t: t for t in likely}
        if hedged:
            pick = self._choose(list(hedged), neighbours, scored)
            v = verdicts[hedged[pick]]
            return Choice(probably(pick), "hedged", origin[hedged[pick]], v.named, hedged[pick], v.margin, objects,
                          evidence.faces)
        sentence, named = evidence_statement(evidence, self.rules, self.perceiver, chance)
        return Choice(sentence, "hedged" if named else "unknown", None, named, first, verdicts[first].margin,
                      objects, evidence.faces)

    def _supported_details(self, sentence: str, pool: list[str], neighbour_captions: list[str]) -> str:
        """The sentence without the actions and places the model does not say consistently."""
        if not self.rules.check_details:
            return sentence
        share = agreement(pool, neighbour_captions)
        pool_at, neighbours_at = self.rules.detail_pool_share, self.rules.detail_neighbour_share

        def supported(word: str) -> bool:
            in_pool, in_neighbours = share(word)
            return in_pool >= pool_at or (bool(neighbour_captions) and in_neighbours >= neighbours_at)
        return supported_part(sentence, supported, grounding_table(), self.rules.detail_verbs)

    def _unseen_colours(self, rgb: np.ndarray | None, evidence):
        """caption -> its colour words the pixels of what they describe do not bear out."""
        if rgb is None or not self.rules.check_colours:
            return lambda caption: frozenset()
        boxes = {cls: dets[0].box for cls, dets in evidence.likely.items() if dets}
        shares: dict = {}  # each region's colours counted once for all candidates
        return lambda caption: frozenset(unsupported_colours(caption, rgb, boxes, grounding_table(),
                                                             self.rules.colour_min_share, shares))

    def _without_specifics(self, candidates: list[str], pool: list[str], unseen=None) -> dict[str, str]:
        """Sentence -> the candidate it comes from, with what no detector checks said generically
        (and colours the pixels contradict, `unseen`)."""
        if self.rules.specifics == "keep":
            return {t: t for t in candidates}
        said_by = [set(words(t)) for t in pool]
        share = self.rules.specifics_agreement
        agreed = frozenset(w for kind, found in specifics(" ".join(pool)).items() for w in found
                           if sum(w in s for s in said_by) >= share.get(kind, 1.01) * len(pool))
        said: dict[str, str] = {}
        for t in candidates:
            keep = agreed - unseen(t) if unseen else agreed
            plain = t if not any(specifics(t, keep).values()) else (
                generic(t, keep) if self.rules.specifics == "generic" else None)
            if plain:
                said.setdefault(plain, t)
        return said

    def _choose(self, texts: list[str], neighbours, scored: dict[str, float]) -> str:
        """The text closest to the memory's neighbours (the first on a tie); `scored` keeps scores."""
        memory = self.captioner.memory
        if len(texts) == 1 or memory is None or neighbours is None:
            return texts[0]
        missing = [t for t in texts if t not in scored]
        scored.update(zip(missing, memory.scores(missing, neighbours)))
        return max(texts, key=scored.__getitem__)


def describer_for(captioner) -> Describer:
    return Describer.for_captioner(captioner)


def perceive(captioner, rgb: np.ndarray, pooled: np.ndarray | None = None):
    """The perception step alone (edgecap bench times it as a stage); None without detectors."""
    describer = describer_for(captioner)
    return describer.perceiver.perceive(as_rgb(rgb), pooled) if describer.perceiver else None


def describe_scene(captioner, rgb: np.ndarray, features, options: DecodingOptions):
    """Narration's hook: the spoken decision for one steady frame and its features."""
    if not hasattr(captioner, "bundle"):  # a stand-in captioner (tests) speaks its own caption
        return captioner.caption_features(features, options)[0]
    return describer_for(captioner).describe_features([as_rgb(rgb)], features, options)[0]


def _gate(rgb: np.ndarray) -> SpokenCaption | None:
    if min(rgb.shape[:2]) < MIN_SIDE:
        return SpokenCaption(caption=TOO_SMALL, tokens=[], ms=0.0, status="small")
    problem = exposure_problem(rgb)
    if problem:
        return SpokenCaption(caption=EXPOSURE_MESSAGES[problem], tokens=[], ms=0.0, status=problem)
    if looks_like_texture(rgb):
        return SpokenCaption(caption=CANT_TELL, tokens=[], ms=0.0, status="texture")
    return None


def looks_like_texture(rgb: np.ndarray) -> bool:
    """Noise, a pattern or a texture: every part of the frame looks like every other."""
    gray = cv2.cvtColor(cv2.resize(rgb, (128, 128), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    cells = gray.astype(np.float32).reshape(4, 32, 4, 32).transpose(0, 2, 1, 3).reshape(16, -1)
    means, contrasts = cells.mean(axis=1), cells.std(axis=1)
    scale = contrasts.mean() + 1.0
    return bool(means.std() / scale < TEXTURE_MEAN_SPREAD and contrasts.std() / scale < TEXTURE_CONTRAST_SPREAD)
