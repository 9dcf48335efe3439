import numpy as np
import pytest

from edgecap.core.decoding import DecodingOptions, _banned_ngram_tokens, preset

BASE = dict(min_length=0, max_length=16, rerank=False)  # the decode loop alone, not the memory's choice


def test_beam_one_is_greedy_and_batching_does_not_change_captions(tiny_captioner, photos):
    batch = tiny_captioner.caption(photos, DecodingOptions(beam_size=1, **BASE))
    single = [tiny_captioner.caption([p], DecodingOptions(beam_size=1, **BASE))[0] for p in photos]
    assert [r.tokens for r in batch] == [r.tokens for r in single]


def test_beam_search_finds_higher_likelihood_than_greedy_on_average(tiny_captioner, photos):
    opts = dict(BASE, length_penalty=0.0, calibrate=False)
    greedy = tiny_captioner.caption(photos, DecodingOptions(beam_size=1, **opts))
    beam = tiny_captioner.caption(photos, DecodingOptions(beam_size=5, **opts))
    assert all(len(r.tokens) <= 16 for r in beam)
    assert sum(r.logprob for r in beam) >= sum(r.logprob for r in greedy) - 1e-4


def test_sampling_is_seeded_and_top_p_small_is_greedy(tiny_captioner, photos):
    greedy = tiny_captioner.caption(photos, DecodingOptions(beam_size=1, **BASE))
    nucleus = tiny_captioner.caption(photos, DecodingOptions(beam_size=1, temperature=1.0, top_p=1e-6, seed=3,
                                                             **BASE))
    assert [r.tokens for r in nucleus] == [r.tokens for r in greedy]
    a = tiny_captioner.caption(photos, DecodingOptions(beam_size=1, temperature=1.5, seed=7, **BASE))
    b = tiny_captioner.caption(photos, DecodingOptions(beam_size=1, temperature=1.5, seed=7, **BASE))
    c = tiny_captioner.caption(photos, DecodingOptions(beam_size=1, temperature=1.5, seed=8, **BASE))
    assert [r.tokens for r in a] == [r.tokens for r in b]
    assert [r.tokens for r in a] != [r.tokens for r in c]


def test_repetition_controls(tiny_captioner, photos):
    plain = tiny_captioner.caption(photos, DecodingOptions(beam_size=1, **BASE))
    assert any(len(set(r.tokens)) < len(r.tokens) for r in plain)  # the random model loops
    for r in tiny_captioner.caption(photos, DecodingOptions(beam_size=3, no_repeat_ngram_size=2, **BASE)):
        bigrams = list(zip(r.tokens, r.tokens[1:]))
        assert len(bigrams) == len(set(bigrams))
    penalised = tiny_captioner.caption(photos, DecodingOptions(beam_size=1, repetition_penalty=5.0, **BASE))
    assert sum(len(set(r.tokens)) for r in penalised) > sum(len(set(r.tokens)) for r in plain)


def test_min_and_max_length(tiny_captioner, photos):
    for r in tiny_captioner.caption(photos, DecodingOptions(beam_size=2, min_length=12, max_length=14)):
        assert 12 <= len(r.tokens) <= 14
    for r in tiny_captioner.caption(photos, DecodingOptions(beam_size=1, min_length=0, max_length=3)):
        assert len(r.tokens) <= 3


def test_identical_frames_are_encoded_once(tiny_captioner, photos):
    tiny_captioner._features.clear()
    calls = []
    real_run = tiny_captioner.encoder.run

    class Spy:
        def run(self, *args, **kwargs):
            calls.append(args[1]["pixels"].shape[0])
            return real_run(*args, **kwargs)

    tiny_captioner.encoder, original = Spy(), tiny_captioner.encoder
    try:
        tiny_captioner.encode([photos[0], photos[0].copy(), photos[1]])
        tiny_captioner.encode([photos[1]])
    finally:
        tiny_captioner.encoder = original
    assert calls == [2]


def test_option_validation_and_presets():
    with pytest.raises(ValueError):
        DecodingOptions(beam_size=9)
    with pytest.raises(ValueError):
        DecodingOptions(beam_size=3, temperature=0.7)
    with pytest.raises(ValueError):
        preset("verbose")
    assert preset("detailed").max_length > preset("brief").max_length
    assert preset("brief", beam_size=1).beam_size == 1


def test_banned_ngrams():
    assert _banned_ngram_tokens([5, 6, 7, 5, 6], 3) == [7]
    assert _banned_ngram_tokens([5, 6], 3) == []
    assert sorted(_banned_ngram_tokens([1, 2, 1, 3, 1], 2)) == [2, 3]
    assert np.isfinite(DecodingOptions().length_penalty)


def test_sampling_shared_rows_draws_as_one_row_each():
    """Rows that share a distribution (same words so far) are sampled from it once, yet every row
    keeps its own draw, in order: the tokens equal sampling each row separately."""
    from edgecap.core.decoding import _log_softmax, _sample

    rng = np.random.default_rng(5)
    logprobs = _log_softmax(rng.standard_normal((3, 500)).astype(np.float32) * 3)
    rows = np.array([0, 2, 0, 0, 1, 2])
    temps = np.array([0.7, 0.7, 0.7, 1.3, 0.7, 0.7])
    for top_p in (1.0, 0.9):
        shared = _sample(logprobs, rows, temps, top_p, np.random.default_rng(9))
        draws = np.random.default_rng(9).random(len(rows))
        alone = []
        for row, t, u in zip(rows, temps, draws):
            scaled = logprobs[row] / t
            p = np.exp(scaled - scaled.max())
            p /= p.sum()
            if top_p < 1:
                order = np.argsort(-p)
                keep = np.zeros(len(p), bool)
                keep[order] = np.cumsum(p[order]) - p[order] < top_p
                p = np.where(keep, p, 0.0)
                p /= p.sum()
            cumulative = np.cumsum(p)
            alone.append(min(int((cumulative < u * cumulative[-1]).sum()), len(p) - 1))
        assert shared.tolist() == alone
