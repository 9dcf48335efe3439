"""What every Hugging Face captioner needs to follow the edgecap graph contract.

An `HFCaptioner` wraps a loaded transformers model (its own submodules and weights,
nothing re-implemented) and computes the two functions the bundle's graphs hold:

    encode(pixels)  -> cross_k, cross_v (L,B,H,N,hd), pooled (B,C)
    step(input_ids, past_k, past_v, cross_k, cross_v, visual_gain)
                    -> logits (B,V), present_k, present_v (L,B,H,P+T,hd), visual_attention (L,B,N)

Both loops live here, once. An architecture module (hf_blip, hf_vision_encoder_decoder,
hf_git) only says how its model does the per-architecture parts: the visual tokens,
one layer's keys/values over them, the text embedding, one decoder layer with its
attention over the image as `calibrated_attention` (one ai.edgecap::CalibratedAttention
node in the graph), and the output head. export/convert.py exports and verifies any
subclass the same way, and the runtime's single decode loop runs the result.

The output head is applied to the last position as a (B, 1, D) slice, not (B, D): a
2-D Linear exports as Gemm sharing the tied word-embedding initializer with the
embedding Gather, and onnxruntime's dynamic quantizer transposes that shared
initializer in place when it rewrites Gemm, corrupting the Gather.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from optimum.utils import DummyVisionInputGenerator, NormalizedVisionConfig
from torch import nn

from export.model import _causal_bias as causal_bias


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, D) -> (B, H, T, D / H)."""
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, hd) -> (B, T, H * hd)."""
    b, h, t, hd = x.shape
    return x.transpose(1, 2).reshape(b, t, h * hd)


def attention(q, k, v, bias, scale: float) -> torch.Tensor:
    """Plain softmax attention for the parts SPARC does not touch (text self-attention)."""
    return torch.softmax(q @ k.transpose(-1, -2) * scale + bias, dim=-1) @ v


def no_bias(like: torch.Tensor) -> torch.Tensor:
    """A zero additive mask that broadcasts over (B, H, T, N)."""
    return like.new_zeros((1, 1, 1, 1))


def example_pixels(vision_config, batch: int = 2) -> torch.Tensor:
    """Random pixels of the vision tower's input size, as optimum's dummy inputs make them."""
    generator = DummyVisionInputGenerator("image-to-text", NormalizedVisionConfig(vision_config), batch_size=batch)
    return generator.generate("pixel_values", framework="pt").float()


def first_id(value) -> int | None:
    """Token ids in configs may be an int, a list (several EOS) or None."""
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else None
    return None if value is None else int(value)


def token_spec(start, eos, pad=None) -> dict[str, Any]:
    """The bundle's tokens for a decoder that starts from `start` alone and stops at `eos`."""
    start, eos, pad = first_id(start), first_id(eos), first_id(pad)
    return {"bos_id": start, "eos_id": eos, "pad_id": eos if pad is None else pad, "prompt_ids": [start]}


def generation_tokens(generation_config) -> dict[str, Any]:
    """What generate() starts from (the decoder start token, else BOS) and stops at."""
    start = first_id(getattr(generation_config, "decoder_start_token_id", None))
    if start is None:
        start = generation_config.bos_token_id
    return token_spec(start, generation_config.eos_token_id, generation_config.pad_token_id)


class HFCaptioner(nn.Module, ABC):
    """A transformers image-to-text model seen through the edgecap graph contract.

    `forward` is `encode`, so the module itself is the encoder graph.
    """

    family: str = ""

    def __init__(self, model: nn.Module, text_config):
        """text_config: the decoder's config; its standard size names (transformers maps
        GPT-2's n_layer, n_head, ... onto them) give the graph sizes."""
        super().__init__()
        self.model = model.eval()
        self.n_layers = text_config.num_hidden_layers
        self.n_heads = text_config.num_attention_heads
        self.head_dim = text_config.hidden_size // text_config.num_attention_heads
        self.vocab_size = text_config.vocab_size
        self.max_positions = text_config.max_position_embeddings  # text positions with an embedding

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim)

    # --- what each architecture says ------------------------------------------------
    @abstractmethod
    def vision_config(self):
        """The config whose image_size / num_channels the encoder takes."""

    @abstractmethod
    def decoder_layers(self) -> Sequence[nn.Module]:
        """The decoder's layers, in order."""

    @abstractmethod
    def visual_tokens(self, pixels) -> tuple[torch.Tensor, torch.Tensor]:
        """(visual tokens in the decoder's width (B,N,D), pooled scene vector (B,C))."""

    @abstractmethod
    def visual_kv(self, layer: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One layer's keys and values over the visual tokens (B,H,N,hd), and the tokens the next layer sees."""

    @abstractmethod
    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Text embeddings (B,T,D) of input_ids at positions (1,T)."""

    @abstractmethod
    def layer_step(self, layer: nn.Module, x, past_k, past_v, cross_k, cross_v, gain, mask
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoder layer over new tokens x (B,T,D) with this layer's cache (B,H,P,hd).

        Returns (x, present_k, present_v, head-mean attention over the visual tokens (B,T,N)).
        """

    @abstractmethod
    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B,1,V) of the last position's hidden state (B,1,D)."""

    @abstractmethod
    def token_ids(self) -> dict[str, Any]:
        """bos_id, eos_id, pad_id and the prompt_ids generate() starts from."""

    # --- the two graphs ---------------------------------------------------------------
    def forward(self, pixels):
        return self.encode(pixels)

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens, pooled = self.visual_tokens(pixels)
        keys, values = [], []
        for layer in self.decoder_layers():
            k, v, tokens = self.visual_kv(layer, tokens)
            keys.append(k)
            values.append(v)
        return torch.stack(keys), torch.stack(values), pooled

    def step(self, input_ids, past_k, past_v, cross_k, cross_v, visual_gain
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n_past, t = past_k.shape[3], input_ids.shape[1]
        x = self.embed(input_ids, (torch.arange(t, device=input_ids.device) + n_past)[None])
        mask = self.attention_mask(t, n_past, cross_k.shape[3], x.dtype)
        present_k, present_v, visual_attention = [], [], []
        for i, layer in enumerate(self.decoder_layers()):
            x, k, v, probs = self.layer_step(layer, x, past_k[i], past_v[i], cross_k[i], cross_v[i],
                                             visual_gain[i], mask)
            present_k.append(k)
            present_v.append(v)
            visual_attention.append(probs[:, -1, :])
        logits = self.head(x[:, -1:, :])[:, 0]  # 3-D keeps a tied head a MatMul: see the module docstring
        return logits, torch.stack(present_k), torch.stack(present_v), torch.stack(visual_attention)

    def attention_mask(self, t: int, n_past: int, n_visual: int, dtype) -> torch.Tensor:
        """Additive mask of the text self-attention (T, P+T): causal."""
        return causal_bias(t, n_past, dtype)

    # --- helpers for the architecture modules -------------------------------------------
    def heads(self, x: torch.Tensor) -> torch.Tensor:
        return split_heads(x, self.n_heads)

    def extend(self, past: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """This layer's cache (B,H,P,hd) with the new tokens' keys or values (B,T,D) appended."""
        return torch.cat([past, self.heads(new)], dim=2)

    # --- tracing inputs and the transformers reference ------------------------------------
    def empty_cache(self, batch: int) -> torch.Tensor:
        return torch.zeros(self.n_layers, batch, self.n_heads, 0, self.head_dim)

    def example_past(self, batch: int, past: int) -> torch.Tensor:
        return torch.randn(self.n_layers, batch, self.n_heads, past, self.head_dim)

    def example_decoder_inputs(self, cross_k: torch.Tensor, past: int = 3, tokens: int = 2) -> tuple:
        """Decoder inputs for tracing; sizes > 1 so that torch.export keeps them symbolic."""
        batch, n_visual = cross_k.shape[1], cross_k.shape[3]
        past_k = self.example_past(batch, past)
        input_ids = torch.randint(0, self.vocab_size, (batch, tokens))
        return (input_ids, past_k, past_k.clone(), cross_k, cross_k.clone(),
                torch.ones(self.n_layers, batch, n_visual))

    def hf_generate(self, pixels: torch.Tensor, max_new_tokens: int) -> list[list[int]]:
        """transformers' own greedy generate(), prompt and EOS stripped: the parity reference."""
        tokens = self.token_ids()
        with torch.no_grad():
            out = self.model.generate(pixel_values=pixels, max_new_tokens=max_new_tokens, do_sample=False,
                                      num_beams=1, min_length=0, repetition_penalty=1.0, no_repeat_ngram_size=0)
        return [strip_prompt_and_eos(row.tolist(), tokens["prompt_ids"], tokens["eos_id"]) for row in out]


def strip_prompt_and_eos(ids: Sequence[int], prompt: Sequence[int], eos_id: int) -> list[int]:
    ids = list(ids)[len(prompt):]
    return ids[:ids.index(eos_id)] if eos_id in ids else ids
