"""The one decode loop: greedy, beam search and sampling, with SPARC between steps.

Every architecture an edgecap bundle can hold exposes the same step function (see
`StepModel`), so this loop never branches on the model family. Work per step is
vectorised over all rows (images x beams); Python only touches the few beam
candidates of each image.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from edgecap.bundle import TokenSpec
from edgecap.calibration import CalibrationSpec, SparcState, sparc_update

NEG_INF = np.float32(-1e9)


@dataclass(frozen=True)
class DecodingOptions:
    beam_size: int = 3
    temperature: float = 0.0  # 0: deterministic (greedy or beam); > 0: sampling
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    length_penalty: float = 1.0
    min_length: int = 1
    max_length: int = 24
    calibrate: bool = True  # SPARC on/off
    calibration: CalibrationSpec | None = None  # None: the bundle's tuned defaults
    seed: int | None = None
    rerank: bool = True  # with a bundle memory: pick among candidates by similar photos (edgecap/memory.py)

    def __post_init__(self):
        if not 1 <= self.beam_size <= 8:
            raise ValueError(f"beam size must be 1..8, got {self.beam_size}")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if self.temperature > 0 and self.beam_size > 1:
            raise ValueError("sampling (temperature > 0) decodes one beam; use --beams 1")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.repetition_penalty < 1:
            raise ValueError("repetition penalty must be >= 1")
        if not 0 <= self.min_length <= self.max_length:
            raise ValueError("need 0 <= min_length <= max_length")


PRESETS: dict[str, DecodingOptions] = {
    # One short sentence: what a person wants to hear first.
    "brief": DecodingOptions(beam_size=3, max_length=20, length_penalty=0.8, no_repeat_ngram_size=3),
    # Longer, with repeats discouraged: naive length pushes small decoders into loops.
    "detailed": DecodingOptions(beam_size=4, min_length=8, max_length=40, length_penalty=1.4,
                                repetition_penalty=1.2, no_repeat_ngram_size=3, rerank=False),
}


def preset(name: str, **overrides: Any) -> DecodingOptions:
    if name not in PRESETS:
        raise ValueError(f"unknown detail level {name!r} (choose from {', '.join(PRESETS)})")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


class StepModel(Protocol):
    n_layers: int

    def start(self, visual: Any, rows_per_image: int) -> Any: ...
    def empty_cache(self, rows: int) -> Any: ...
    def step(self, input_ids: np.ndarray, cache: Any, visual_rows: Any,
             gain: np.ndarray) -> tuple[np.ndarray, Any, np.ndarray]: ...
    def reorder_cache(self, cache: Any, index: np.ndarray) -> Any: ...


@dataclass
class Decoded:
    tokens: list[int]
    logprob: float
    selected_tokens: int = 0  # visual tokens SPARC selected at least once


@dataclass
class _Beams:
    """Finished hypotheses of one image."""

    done: list[tuple[float, list[int], float]] = field(default_factory=list)

    def add(self, tokens: list[int], logprob: float, length_penalty: float):
        self.done.append((logprob / max(len(tokens), 1) ** length_penalty, tokens, logprob))

    def best(self) -> tuple[list[int], float]:
        _, tokens, logprob = max(self.done, key=lambda d: d[0])
        return tokens, logprob


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _banned_ngram_tokens(history: list[int], n: int) -> list[int]:
    if len(history) < n - 1 or n <= 0:
        return []
    prefix = tuple(history[len(history) - n + 1:]) if n > 1 else ()
    return [history[i + n - 1] for i in range(len(history) - n + 1) if tuple(history[i:i + n - 1]) == prefix]


class _Processor:
    """Logit rules applied to every row before choosing tokens."""

    def __init__(self, options: DecodingOptions, tokens: TokenSpec, rows: int, vocab: int):
        self.o, self.t = options, tokens
        self.seen = np.zeros((rows, vocab), dtype=bool)
        self.always_banned = sorted(i for i in set(tokens.suppress_ids) if i != tokens.eos_id and 0 <= i < vocab)

    def __call__(self, logits: np.ndarray, step: int, history: list[list[int]]) -> np.ndarray:
        logits = logits.astype(np.float32, copy=True)
        if self.o.repetition_penalty != 1.0:
            p = np.float32(self.o.repetition_penalty)
            logits = np.where(self.seen, np.where(logits > 0, logits / p, logits * p), logits)
        logits[:, self.always_banned] = NEG_INF
        if step < self.o.min_length:
            logits[:, self.t.eos_id] = NEG_INF
        if self.o.no_repeat_ngram_size:
            for row, hist in enumerate(history):
                banned = _banned_ngram_tokens(hist, self.o.no_repeat_ngram_size)
                if banned:
                    logits[row, banned] = NEG_INF
        return logits

    def reorder(self, index: np.ndarray):
        self.seen = self.seen[index]

    def record(self, next_tokens: np.ndarray):
        self.seen[np.arange(len(next_tokens)), next_tokens] = True


def _sample(logprobs: np.ndarray, options: DecodingOptions, rng: np.random.Generator) -> np.ndarray:
    scaled = logprobs / options.temperature
    probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    if options.top_p < 1.0:
        order = np.argsort(-probs, axis=-1)
        sorted_p = np.take_along_axis(probs, order, axis=-1)
        keep_sorted = np.cumsum(sorted_p, axis=-1) - sorted_p < options.top_p  # always keeps the top token
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=-1, keepdims=True)
    cumulative = probs.cumsum(axis=-1)
    draws = rng.random((probs.shape[0], 1)) * cumulative[:, -1:]
    return np.minimum((cumulative < draws).sum(axis=-1), probs.shape[1] - 1)


def decode(model: StepModel, visual: Any, n_images: int, n_visual: int, tokens: TokenSpec,
           options: DecodingOptions, calibration: CalibrationSpec | None) -> list[Decoded]:
    """Caption token ids for each image (prompt and EOS removed)."""
    k = options.beam_size
    rows = n_images * k
    visual_rows = model.start(visual, k)
    cache = model.empty_cache(rows)
    prompt = np.tile(np.asarray(tokens.prompt_ids, dtype=np.int64), (rows, 1))
    input_ids = prompt
    history: list[list[int]] = [[] for _ in range(rows)]
    beam_logprob = np.zeros(rows, dtype=np.float64)
    if k > 1:  # only the first beam of each image is live before the first split
        beam_logprob.reshape(n_images, k)[:, 1:] = -np.inf
    finished = [_Beams() for _ in range(n_images)]
    image_done = np.zeros(n_images, dtype=bool)
    row_done = np.zeros(rows, dtype=bool)
    rng = np.random.default_rng(options.seed)
    processor: _Processor | None = None

    ones = np.ones((rows, n_visual), dtype=np.float32)
    state = SparcState()
    if calibration is not None:
        selection = calibration.resolve_selection_layer(model.n_layers)
        layer_on = np.asarray(calibration.layer_mask(model.n_layers))[:, None, None]
    gain = np.broadcast_to(ones, (model.n_layers, rows, n_visual))

    for step in range(options.max_length + 1):
        if calibration is not None:
            gain = np.where(layer_on, state.gain(calibration, ones)[None], np.float32(1)).astype(np.float32)
        logits, cache, attention = model.step(input_ids, cache, visual_rows, np.ascontiguousarray(gain))
        if calibration is not None:
            state = sparc_update(state, attention[selection], calibration)
        if processor is None:
            processor = _Processor(options, tokens, rows, logits.shape[-1])
        logprobs = _log_softmax(processor(logits, step, history))
        if step == options.max_length:  # out of length: end every live hypothesis here
            logprobs[:] = NEG_INF
            logprobs[:, tokens.eos_id] = 0.0

        if k == 1:
            if options.temperature > 0:
                next_tokens = _sample(logprobs, options, rng)
            else:
                next_tokens = logprobs.argmax(axis=-1)
            for row in np.flatnonzero(~row_done):
                if next_tokens[row] == tokens.eos_id:
                    row_done[row] = True
                    finished[row].add(history[row], beam_logprob[row], options.length_penalty)
                else:
                    beam_logprob[row] += logprobs[row, next_tokens[row]]
            image_done = row_done
            order = np.arange(rows)
        else:
            order, next_tokens = _beam_step(logprobs, beam_logprob, history, finished, image_done, k,
                                            tokens.eos_id, options.length_penalty)
        if image_done.all():
            break
        history = [history[i] + [int(t)] for i, t in zip(order, next_tokens)]
        if k > 1:
            cache = model.reorder_cache(cache, order)
            processor.reorder(order)
            if calibration is not None:
                state = state.reorder(order)
        processor.record(next_tokens)
        input_ids = next_tokens.astype(np.int64)[:, None]

    results = []
    for beams in finished:
        toks, logprob = beams.best() if beams.done else ([], 0.0)
        results.append(Decoded(tokens=toks, logprob=float(logprob)))
    if calibration is not None and state.counts is not None:
        counts = state.counts.reshape(n_images, k, n_visual)[:, 0]
        for res, c in zip(results, counts):
            res.selected_tokens = int((c > 0).sum())
    return results


def _beam_step(logprobs, beam_logprob, history, finished, image_done, k, eos_id, length_penalty):
    """One beam-search step for all images; updates beam_logprob/finished/image_done in place."""
    rows, vocab = logprobs.shape
    n_images = rows // k
    total = (beam_logprob[:, None] + logprobs).reshape(n_images, k * vocab)
    top = np.argpartition(-total, 2 * k - 1, axis=1)[:, :2 * k]
    top_scores = np.take_along_axis(total, top, axis=1)
    ranked = np.take_along_axis(top, np.argsort(-top_scores, axis=1, kind="stable"), axis=1)
    order = np.arange(rows)
    next_tokens = np.full(rows, eos_id, dtype=np.int64)
    for b in range(n_images):
        if image_done[b]:
            continue
        chosen = 0
        for rank, flat in enumerate(ranked[b]):
            beam, token = divmod(int(flat), vocab)
            row = b * k + beam
            score = total[b, flat]
            if not np.isfinite(score) or score <= NEG_INF / 2:
                continue
            if token == eos_id:
                if rank < k:
                    finished[b].add(history[row], score, length_penalty)
                continue
            target = b * k + chosen
            order[target], next_tokens[target] = row, token
            beam_logprob[target] = score
            chosen += 1
            if chosen == k:
                break
        if len(finished[b].done) >= k or chosen == 0:
            image_done[b] = True
        for j in range(chosen, k):  # too few live candidates: park the rest
            beam_logprob[b * k + j] = -np.inf
    return order, next_tokens
