"""The one decode loop: greedy, beam search and sampling, with SPARC between steps.

Every architecture an edgecap bundle can hold exposes the same step function (see
`StepModel`), so this loop never branches on the model family. One loop decodes one
image's whole candidate pool (the beam or single main row, plus optional greedy and
sampled rows): the first step runs once for all rows, a row that has finished is
dropped from the next step, and running out of length ends the live hypotheses
without another model run. Each image has its own loop and its own random stream,
so its words never depend on the other images of a batch (int8 activations are
quantized over all rows of a step, and a shared stream would hand out different
draws by position).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from edgecap.core.bundle import TokenSpec
from edgecap.core.calibration import CalibrationSpec, SparcState, sparc_update

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
    rerank: bool = True  # with a bundle memory: pick among candidates by similar photos (edgecap/core/memory.py)

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
    def step(self, input_ids: np.ndarray, cache: Any, visual_rows: Any, gain: np.ndarray,
             attention: int | None | str = "all") -> tuple[np.ndarray, Any, np.ndarray | None]: ...
    # attention: "all" -> (L, rows, n_visual); a layer index -> that layer's (rows, n_visual); None -> None
    def reorder_cache(self, cache: Any, index: np.ndarray) -> Any: ...


@dataclass
class Decoded:
    tokens: list[int]
    logprob: float
    selected_tokens: int = 0  # visual tokens SPARC selected at least once


@dataclass(frozen=True)
class Pool:
    """Rows decoded for one image besides the main decode (beam, greedy or sample)."""

    greedy: bool = False  # one more greedy row (meaningful when the main decode is a beam)
    samples: int = 0  # sampled rows at `temperature`
    temperature: float = 0.7


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
    """Logit rules applied to every live row before choosing tokens."""

    def __init__(self, options: DecodingOptions, tokens: TokenSpec, rows: int, vocab: int):
        self.o, self.t = options, tokens
        self.seen = np.zeros((rows, vocab), dtype=bool) if options.repetition_penalty != 1.0 else None
        self.always_banned = sorted(i for i in set(tokens.suppress_ids) if i != tokens.eos_id and 0 <= i < vocab)

    def __call__(self, logits: np.ndarray, step: int, history: list[list[int]]) -> np.ndarray:
        logits = logits.astype(np.float32, copy=True)
        if self.seen is not None:
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

    def take(self, index: np.ndarray):
        if self.seen is not None:
            self.seen = self.seen[index]

    def record(self, next_tokens: np.ndarray):
        if self.seen is not None:
            self.seen[np.arange(len(next_tokens)), next_tokens] = True


def _sample(logprobs: np.ndarray, rows: np.ndarray, temperature: np.ndarray, top_p: float,
            rng: np.random.Generator) -> np.ndarray:
    """One token per sampled row: row i draws from logprobs[rows[i]] at temperature[i] -> (len(rows),).

    The distribution of each distinct (row, temperature) is built once; each sampled row
    still takes its own draw, in order.
    """
    pairs: dict[tuple[int, float], int] = {}
    group = np.asarray([pairs.setdefault(p, len(pairs)) for p in zip(rows.tolist(), temperature.tolist())])
    distinct_rows = np.fromiter((r for r, _ in pairs), dtype=np.int64, count=len(pairs))
    distinct_t = np.fromiter((t for _, t in pairs), dtype=np.float64, count=len(pairs))
    scaled = logprobs[distinct_rows] / distinct_t[:, None]
    probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-probs, axis=-1)
        sorted_p = np.take_along_axis(probs, order, axis=-1)
        keep_sorted = np.cumsum(sorted_p, axis=-1) - sorted_p < top_p  # always keeps the top token
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=-1, keepdims=True)
    cumulative = probs.cumsum(axis=-1)
    draws = rng.random((len(rows), 1)) * cumulative[group, -1:]
    # cumulative is non-decreasing, so the count of entries below a draw is its sorted position
    chosen = np.asarray([np.searchsorted(cumulative[g], d, side="left") for g, d in zip(group.tolist(), draws[:, 0])])
    return np.minimum(chosen, probs.shape[1] - 1)


def image_seed(image_id: int | np.ndarray, seed: int | None) -> np.random.SeedSequence:
    """One image's random stream, from its own id (a pixel hash, or an array hashed here) and the
    user's seed; never from its position in a batch."""
    if not isinstance(image_id, (int, np.integer)):
        image_id = int.from_bytes(hashlib.blake2b(np.ascontiguousarray(image_id).tobytes(),
                                                  digest_size=8).digest(), "little")
    return np.random.SeedSequence([0 if seed is None else int(seed), int(image_id)])


def decode_pool(model: StepModel, visual: Any, n_visual: int, tokens: TokenSpec, options: DecodingOptions,
                calibration: CalibrationSpec | None, pool: Pool = Pool(),
                seed: np.random.SeedSequence | int | None = None) -> list[Decoded]:
    """One image's candidates in one loop: [main decode, greedy row?, samples...].

    The main decode is a beam of options.beam_size rows, or one row that is greedy or
    sampled at options.temperature. All rows share the logit rules of `options`.

    Rows that have written the same words so far (every row at the first step, sampled
    rows that drew the same early words, a beam that follows the greedy row) share one
    decoder row: their logits, logit rules, SPARC state and cache are the same, so the
    model runs once for them. This changes no number: a step's rows are computed
    independently, and a repeated row does not move the range that int8 activations are
    quantized over.
    """
    if options.max_length <= 0:
        return [Decoded(tokens=[], logprob=0.0) for _ in range(1 + pool.greedy + pool.samples)]
    k = options.beam_size
    beam_rows = k if k > 1 else 0
    temps = ([] if k > 1 else [options.temperature]) + [0.0] * pool.greedy + [pool.temperature] * pool.samples
    n_rows = beam_rows + len(temps)
    # slot of each row in the result: 0 is the main decode
    slot = np.concatenate([np.zeros(beam_rows, np.int64), np.arange(len(temps)) + (1 if k > 1 else 0)])
    temperature = np.concatenate([np.zeros(beam_rows), np.asarray(temps, dtype=np.float64)])
    beams = _Beams()
    results: list[Decoded | None] = [None] * (1 + pool.greedy + pool.samples)
    rng = np.random.default_rng(seed)

    layer_on = selection = None
    if calibration is not None:
        selection = calibration.resolve_selection_layer(model.n_layers)
        layer_on = np.asarray(calibration.layer_mask(model.n_layers))[:, None, None]
    state = SparcState()

    # Step 0: every row starts from the same prompt: one decoder row.
    prompt = np.asarray(tokens.prompt_ids, dtype=np.int64)[None]
    gain = np.ones((model.n_layers, 1, n_visual), dtype=np.float32)
    logits, cache, attention = model.step(prompt, model.empty_cache(1), model.start(visual, 1), gain,
                                          attention=selection)
    if calibration is not None:
        state = sparc_update(state, attention, calibration)
    live = np.arange(n_rows)  # result rows still decoding
    row_of = np.zeros(n_rows, dtype=np.int64)  # live row -> decoder row (rows with the same words share one)
    visual_rows = {}
    history: list[list[int]] = [[] for _ in range(n_rows)]  # per live row
    shared_history: list[list[int]] = [[]]  # per decoder row
    logprob = np.zeros(n_rows, dtype=np.float64)
    if beam_rows:  # only the first beam is live before the first split
        logprob[1:beam_rows] = -np.inf
    processor = _Processor(options, tokens, 1, logits.shape[-1])

    def finish(position: int, text: list[int], score: float):
        s = int(slot[live[position]])
        counts = state.counts[row_of[position]] if state.counts is not None else None
        results[s] = Decoded(tokens=text, logprob=float(score),
                             selected_tokens=int((counts > 0).sum()) if counts is not None else 0)

    step = 0
    while True:
        shared = _log_softmax(processor(logits, step, shared_history))  # per decoder row
        keep = np.ones(len(live), dtype=bool)
        order = np.arange(len(live))
        next_tokens = np.full(len(live), tokens.eos_id, dtype=np.int64)
        n_beam = beam_rows if results[0] is None and beam_rows else 0
        if n_beam:
            b_order, b_tokens, done = _beam_step(shared[row_of[:n_beam]], logprob[:n_beam], history[:n_beam],
                                                 beams, k, tokens.eos_id, options.length_penalty)
            order[:n_beam], next_tokens[:n_beam] = b_order, b_tokens
            if done:
                finish(0, *beams.best())
                keep[:n_beam] = False
        single = np.arange(n_beam, len(live))
        if len(single):
            t = temperature[live[single]]
            chosen = shared.argmax(axis=-1)[row_of[single]]
            hot = t > 0
            if hot.any():
                chosen[hot] = _sample(shared, row_of[single[hot]], t[hot], options.top_p, rng)
            next_tokens[single] = chosen
            for pos, token in zip(single.tolist(), chosen.tolist()):
                if token == tokens.eos_id:
                    finish(pos, history[pos], logprob[pos])
                    keep[pos] = False
                else:
                    logprob[pos] += shared[row_of[pos], token]
        step += 1
        if not keep.any():
            break
        index = order[keep]
        next_tokens = next_tokens[keep]
        # new decoder rows: one per distinct (old decoder row, token), in order of first appearance
        parent = row_of[index]
        pairs: dict[tuple[int, int], int] = {}
        new_row = np.asarray([pairs.setdefault(pair, len(pairs)) for pair in zip(parent.tolist(),
                                                                                 next_tokens.tolist())],
                             dtype=np.int64)
        source = np.fromiter((p for p, _ in pairs), dtype=np.int64, count=len(pairs))
        row_tokens = np.fromiter((t for _, t in pairs), dtype=np.int64, count=len(pairs))
        history = [history[i] + [t] for i, t in zip(index.tolist(), next_tokens.tolist())]
        shared_history = [shared_history[p] + [t] for p, t in pairs]
        logprob = logprob[keep]  # beam scores were written to their new positions by _beam_step
        live = live[keep]
        row_of = new_row
        moved = len(source) != len(shared) or not np.array_equal(source, np.arange(len(source)))
        if moved and state.ema is not None:
            state = state.reorder(source)
        if step == options.max_length:  # out of length: every live hypothesis ends here, without a model run
            n_beam = int((slot[live] == 0).sum()) if beam_rows else 0
            for pos in range(n_beam):
                if np.isfinite(logprob[pos]):
                    beams.add(history[pos], logprob[pos], options.length_penalty)
            if n_beam:
                finish(0, *beams.best())
            for pos in range(n_beam, len(live)):
                finish(pos, history[pos], logprob[pos])
            break
        if moved:
            cache = model.reorder_cache(cache, source)
            processor.take(source)
        processor.record(row_tokens)
        rows = len(source)
        if calibration is not None:
            gain = np.where(layer_on, state.gain(calibration, np.ones((rows, n_visual), np.float32))[None],
                            np.float32(1)).astype(np.float32)
        elif gain.shape[1] != rows:  # constant: the same array lets the model skip rebinding it
            gain = np.ones((model.n_layers, rows, n_visual), dtype=np.float32)
        if rows not in visual_rows:
            visual_rows[rows] = model.start(visual, rows)
        logits, cache, attention = model.step(row_tokens[:, None], cache, visual_rows[rows],
                                              np.ascontiguousarray(gain), attention=selection)
        if calibration is not None:
            state = sparc_update(state, attention, calibration)
    return [r if r is not None else Decoded(tokens=[], logprob=0.0) for r in results]


def _beam_step(logprobs, beam_logprob, history, finished, k, eos_id, length_penalty):
    """One beam-search step of one image: (source row per new row, tokens, done).

    Writes the new beam scores into beam_logprob (in new-row order) and finished
    hypotheses into `finished`.
    """
    vocab = logprobs.shape[1]
    total = (beam_logprob[:, None] + logprobs).reshape(k * vocab)
    top = np.argpartition(-total, 2 * k - 1)[:2 * k]
    ranked = top[np.argsort(-total[top], kind="stable")]
    order = np.arange(k)
    next_tokens = np.full(k, eos_id, dtype=np.int64)
    scores = np.full(k, -np.inf)
    chosen = 0
    for rank, flat in enumerate(ranked):
        beam, token = divmod(int(flat), vocab)
        score = total[flat]
        if not np.isfinite(score) or score <= NEG_INF / 2:
            continue
        if token == eos_id:
            if rank < k:
                finished.add(history[beam], score, length_penalty)
            continue
        order[chosen], next_tokens[chosen], scores[chosen] = beam, token, score
        chosen += 1
        if chosen == k:
            break
    beam_logprob[:] = scores  # too few live candidates: the rest are parked at -inf
    return order, next_tokens, len(finished.done) >= k or chosen == 0
