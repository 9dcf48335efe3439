"""The torch captioner behind edgecap.core.decoding's step interface, so training-time decoding
(teacher captions, per-epoch validation, SPARC sweeps, self-critical samples) runs the
loop that ships: the same logit rules, beam search, sampling and SPARC gains
(edgecap/core/calibration.py) as the runtime, on the torch weights being trained.

`export.generate.sparc_generate` stays as the independent reference the parity tests
compare the exported graphs against; nothing here uses it.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from edgecap.core.bundle import TokenSpec
from edgecap.core.calibration import CalibrationSpec
from edgecap.core.decoding import Decoded, DecodingOptions, Pool, decode_pool
from edgecap.core.model import VisualFeatures
from export.model import Captioner
from export.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

# What the bundles exported from export.model.Captioner declare (export/pipeline.py).
TOKENS = TokenSpec(bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID, prompt_ids=(BOS_ID,),
                   suppress_ids=(PAD_ID, BOS_ID, UNK_ID))
# Greedy, as the training-time decoding always was: no length floor, 20 words at most.
GREEDY = DecodingOptions(beam_size=1, min_length=0, max_length=20, rerank=False)


class TorchDecoder:
    """decoding.StepModel over export.model.Captioner.step (caches stay torch tensors)."""

    def __init__(self, model: Captioner):
        self.model = model
        self.n_layers = model.cfg.n_layers

    def start(self, visual: VisualFeatures, rows_per_image: int):
        cross_k, cross_v = torch.from_numpy(visual.cross_k), torch.from_numpy(visual.cross_v)
        if rows_per_image == 1:
            return cross_k, cross_v
        return cross_k.repeat_interleave(rows_per_image, 1), cross_v.repeat_interleave(rows_per_image, 1)

    def empty_cache(self, rows: int):
        empty = self.model.empty_cache(rows)
        return empty, empty.clone()

    @torch.no_grad()
    def step(self, input_ids: np.ndarray, cache, visual_rows, gain: np.ndarray, attention="all"):
        """`attention` as edgecap.core.decoding.StepModel: "all", one layer index, or None."""
        logits, past_k, past_v, att = self.model.step(torch.from_numpy(np.asarray(input_ids, np.int64)),
                                                      cache[0], cache[1], visual_rows[0], visual_rows[1],
                                                      torch.from_numpy(gain))
        if attention is None:
            return logits.float().numpy(), (past_k, past_v), None
        att = att.float().numpy()
        return logits.float().numpy(), (past_k, past_v), att if attention == "all" else att[attention]

    def reorder_cache(self, cache, index: np.ndarray):
        rows = torch.from_numpy(np.asarray(index, np.int64))
        return cache[0].index_select(1, rows), cache[1].index_select(1, rows)


@torch.no_grad()
def visual_features(model: Captioner, grid: torch.Tensor) -> VisualFeatures:
    """What the exported encoder would hand the runtime, from cached backbone tokens (B, N, C)."""
    cross_k, cross_v = model.visual_cache(grid.float())
    return VisualFeatures(cross_k.numpy(), cross_v.numpy(), grid.float().mean(1).numpy())


@torch.no_grad()
def decode_grid(model: Captioner, grid: torch.Tensor, options: DecodingOptions = GREEDY,
                calibration: CalibrationSpec | None = None, pool: Pool = Pool(),
                seeds: list[int] | None = None, batch: int = 64) -> list[list[Decoded]]:
    """Each photo's [main decode, pool rows...] through edgecap.core.decoding.decode_pool.

    calibration None decodes with SPARC off. One loop per photo, as the runtime runs;
    the visual keys/values are computed `batch` photos at a time.
    """
    model.eval()
    decoder = TorchDecoder(model)
    options = replace(options, max_length=min(options.max_length, model.cfg.max_len - len(TOKENS.prompt_ids)))
    out: list[list[Decoded]] = []
    for start in range(0, len(grid), batch):
        features = visual_features(model, grid[start:start + batch])
        for i in range(len(features)):
            seed = None if seeds is None else seeds[start + i]
            out.append(decode_pool(decoder, features.take(slice(i, i + 1)), features.cross_k.shape[3], TOKENS,
                                   options, calibration, pool, seed))
    return out


def caption_tokens(model: Captioner, grid: torch.Tensor, calibration: CalibrationSpec | None = None,
                   options: DecodingOptions = GREEDY) -> list[list[int]]:
    """Token ids (no prompt, no EOS) of each photo's caption; greedy by default."""
    return [pool[0].tokens for pool in decode_grid(model, grid, options, calibration)]
