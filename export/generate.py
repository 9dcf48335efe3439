"""Greedy torch reference decoding with SPARC: the ground truth that ONNX runtimes must match."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from edgecap.core.calibration import CalibrationSpec, SparcState, sparc_update

# step(input_ids (B,T), past_k, past_v (L,B,H,P,hd), cross_k, cross_v, visual_gain (L,B,N))
#   -> logits (B,V), present_k, present_v, visual_attention (L,B,N)
StepFn = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


@torch.no_grad()
def sparc_generate(step: StepFn, cross_k: torch.Tensor, cross_v: torch.Tensor, empty_past: torch.Tensor, *,
                   prompt_ids: Sequence[int], eos_id: int, max_new_tokens: int = 30,
                   calibration: CalibrationSpec | None = CalibrationSpec(), min_new_tokens: int = 0,
                   suppress_ids: Sequence[int] = ()) -> list[list[int]]:
    """Greedy decoding with a KV cache, applying SPARC as the reference implementation does.

    The prompt step initialises the EMA of the selection layer's head-mean visual
    attention; from the first generated token on, tokens with r >= tau are selected and
    the gains alpha**count apply in the calibrated layers from the next step. Works for
    any model whose decoder step follows the edgecap graph contract. Returns token lists
    without prompt or EOS, at most max_new_tokens long.
    """
    n_layers, b, _, n_visual, _ = cross_k.shape
    ones = torch.ones(b, n_visual)
    state = SparcState()
    if calibration is not None:
        selection = calibration.resolve_selection_layer(n_layers)
        layer_on = calibration.layer_mask(n_layers)
    past_k, past_v = empty_past, empty_past.clone()
    input_ids = torch.tensor([list(prompt_ids)] * b, dtype=torch.long)
    finished = [False] * b
    out: list[list[int]] = [[] for _ in range(b)]
    for i in range(max_new_tokens + 1):
        if calibration is None:
            gain = ones.expand(n_layers, b, n_visual)
        else:
            g = state.gain(calibration, ones)
            gain = torch.stack([g if on else ones for on in layer_on])
        logits, past_k, past_v, attention = step(input_ids, past_k, past_v, cross_k, cross_v, gain)
        if calibration is not None:
            state = sparc_update(state, attention[selection], calibration)
        logits = logits.clone()
        logits[:, [t for t in suppress_ids if t != eos_id]] = float("-inf")
        if i < min_new_tokens:
            logits[:, eos_id] = float("-inf")
        next_token = logits.argmax(-1)
        if i == max_new_tokens:
            break
        for row in range(b):
            if not finished[row]:
                if int(next_token[row]) == eos_id:
                    finished[row] = True
                else:
                    out[row].append(int(next_token[row]))
        if all(finished):
            break
        input_ids = next_token[:, None]
    return out


def captioner_generate(model, pixels: torch.Tensor, *, max_new_tokens: int = 30,
                       calibration: CalibrationSpec | None = CalibrationSpec(),
                       suppress_ids: Sequence[int] = (0, 1, 3)) -> list[list[int]]:
    """sparc_generate for an edgecap Captioner on normalised pixels (B,3,S,S)."""
    model.eval()
    cross_k, cross_v = model.visual_cache(model.grid_tokens(pixels))
    cfg = model.cfg
    return sparc_generate(model.step, cross_k, cross_v, model.empty_cache(pixels.shape[0]),
                          prompt_ids=[cfg.bos_id], eos_id=cfg.eos_id, max_new_tokens=max_new_tokens,
                          calibration=calibration, suppress_ids=suppress_ids)
