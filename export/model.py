"""The edgecap captioner: an EfficientNet-Lite grid encoder and a small transformer decoder.

Why cross-attention rather than a visual prefix: the visual tokens never enter the
self-attention cache, so their keys/values are projected once per frame (in the
encoder graph) and every decoding step costs the same however many visual tokens
there are. It also gives SPARC a clean handle: the gain acts on one distinct set of
value vectors, the cross-attention values, in each layer.

Shapes: B batch, T new tokens, P past tokens, N visual tokens, L layers, H heads,
D model width, hd = D / H.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from export.efficientnet import EfficientNetLite

OP_DOMAIN = "ai.edgecap"
OP_NAME = "CalibratedAttention"


@dataclass(frozen=True)
class CaptionerConfig:
    vocab_size: int
    encoder: str = "lite0"  # lite0 | lite1 | lite2 | tiny
    image_size: int = 224
    d_model: int = 256
    n_layers: int = 3
    n_heads: int = 4
    d_ff: int = 1024
    max_len: int = 40
    dropout: float = 0.1
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)


def calibrated_attention(q, k, v, gain, bias, scale: float):
    """softmax(q k^T * scale + bias), values of key j scaled by gain[:, j].

    q (B,H,T,hd); k, v (B,H,N,hd); gain (B,N); bias broadcastable to (B,H,T,N).
    Returns the attention output (B,H,T,hd) and the head-mean probabilities (B,T,N).
    Scaling a value row by g equals scaling its probability column by g, which is what
    the ONNX function body does. During ONNX export this becomes one
    ai.edgecap::CalibratedAttention node.
    """
    if torch.onnx.is_in_onnx_export():
        out, mean_probs = torch.onnx.ops.symbolic_multi_out(
            f"{OP_DOMAIN}::{OP_NAME}",
            [q, k, v, gain, bias],
            {"scale": float(scale)},
            dtypes=[q.dtype, q.dtype],
            shapes=[q.shape, (q.shape[0], q.shape[2], k.shape[2])],
            version=1,
        )
        return out, mean_probs
    probs = torch.softmax(q @ k.transpose(-1, -2) * scale + bias, dim=-1)
    mean_probs = probs.mean(dim=1)
    out = (probs * gain[:, None, None, :]) @ v
    return out, mean_probs


class TinyConvEncoder(nn.Module):
    """A random four-conv backbone for tests: 16 visual tokens at 64 px, < 100 kB."""

    def __init__(self, channels: int = 32):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 16, 3, 2, 1), nn.Conv2d(16, 24, 3, 2, 1),
                                    nn.Conv2d(24, channels, 3, 2, 1), nn.Conv2d(channels, channels, 3, 2, 1)])
        self.out_channels = channels

    def forward_grid(self, x):
        for conv in self.convs:
            x = F.relu(conv(x))
        return x


def build_backbone(name: str) -> nn.Module:
    """The ImageNet EfficientNet-Lite (its shapes come from the weight file) or the tiny test net."""
    if name == "tiny":
        return TinyConvEncoder()
    return EfficientNetLite.pretrained(name)


class MLP(nn.Module):
    def __init__(self, cfg: CaptionerConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x))))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: CaptionerConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.ln_self, self.ln_cross, self.ln_mlp = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_qkv = nn.Linear(d, 3 * d)
        self.self_out = nn.Linear(d, d)
        self.cross_q = nn.Linear(d, d)
        self.cross_kv = nn.Linear(d, 2 * d)
        self.cross_out = nn.Linear(d, d)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def split_heads(self, x):
        b, t, _ = x.shape
        return x.view(b, t, self.cfg.n_heads, self.cfg.head_dim).transpose(1, 2)

    def merge_heads(self, x):
        b, _, t, _ = x.shape
        return x.transpose(1, 2).reshape(b, t, self.cfg.d_model)

    def visual_keys_values(self, visual):
        k, v = self.cross_kv(visual).chunk(2, dim=-1)
        return self.split_heads(k), self.split_heads(v)

    def forward(self, x, past_k, past_v, cross_k, cross_v, gain, causal_bias=None):
        """One layer over new tokens x (B,T,D) given cached self and visual keys/values.

        With past_k None (training) runs causal attention over the whole sequence.
        """
        q, k, v = self.self_qkv(self.ln_self(x)).chunk(3, dim=-1)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        if past_k is not None:
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_bias,
                                           is_causal=causal_bias is None and past_k is None,
                                           dropout_p=self.cfg.dropout if self.training else 0.0)
        x = x + self.drop(self.self_out(self.merge_heads(h)))

        cq = self.split_heads(self.cross_q(self.ln_cross(x)))
        scale = 1.0 / math.sqrt(self.cfg.head_dim)
        if gain is None:  # training: plain fused attention, no probabilities needed
            c = F.scaled_dot_product_attention(cq, cross_k, cross_v,
                                               dropout_p=self.cfg.dropout if self.training else 0.0)
            visual_attention = None
        else:
            c, visual_attention = calibrated_attention(cq, cross_k, cross_v, gain, _zero_bias(x), scale)
        x = x + self.drop(self.cross_out(self.merge_heads(c)))
        x = x + self.mlp(self.ln_mlp(x))
        return x, k, v, visual_attention


def _zero_bias(x):
    return x.new_zeros((1, 1, 1, 1))


class Captioner(nn.Module):
    def __init__(self, cfg: CaptionerConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.encoder)
        self.visual_proj = nn.Sequential(nn.Linear(self.backbone.out_channels, cfg.d_model), nn.LayerNorm(cfg.d_model))
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.n_layers)])
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self._init_decoder()

    def _init_decoder(self):
        for name, p in self.named_parameters():
            if name.startswith("backbone."):
                continue
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)

    # --- encoder side -------------------------------------------------------------
    def grid_tokens(self, pixels):
        """Backbone features as tokens (B, N, C): what training caches."""
        return self.backbone.forward_grid(pixels).flatten(2).transpose(1, 2)

    def visual_cache(self, grid_tokens):
        """Per-layer visual keys and values, each (L, B, H, N, hd)."""
        visual = self.visual_proj(grid_tokens)
        ks, vs = zip(*(layer.visual_keys_values(visual) for layer in self.layers))
        return torch.stack(ks), torch.stack(vs)

    # --- decoder side -------------------------------------------------------------
    def logits(self, x):
        return self.ln_f(x) @ self.tok_emb.weight.T  # tied output embedding

    def forward(self, grid_tokens, input_ids):
        """Teacher-forced logits (B, T, V) for training."""
        cross_k, cross_v = self.visual_cache(grid_tokens)
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(pos))
        for i, layer in enumerate(self.layers):
            x, _, _, _ = layer(x, None, None, cross_k[i], cross_v[i], None)
        return self.logits(x)

    def step(self, input_ids, past_k, past_v, cross_k, cross_v, visual_gain):
        """Decode T new tokens with a KV cache: exactly the graph exported to ONNX.

        past_k/past_v (L,B,H,P,hd); visual_gain (L,B,N). Returns last-position logits
        (B,V), the grown caches and each layer's head-mean attention of the newest
        query over the visual tokens (L,B,N).
        """
        n_past = past_k.shape[3]
        t = input_ids.shape[1]
        pos = torch.arange(t, device=input_ids.device) + n_past
        x = self.tok_emb(input_ids) + self.pos_emb(pos)
        causal_bias = _causal_bias(t, n_past, x.dtype)
        present_k, present_v, attention = [], [], []
        for i, layer in enumerate(self.layers):
            x, k, v, att = layer(x, past_k[i], past_v[i], cross_k[i], cross_v[i], visual_gain[i], causal_bias)
            present_k.append(k)
            present_v.append(v)
            attention.append(att[:, -1, :])
        return (self.logits(x[:, -1, :]), torch.stack(present_k), torch.stack(present_v), torch.stack(attention))

    def empty_cache(self, batch: int):
        c = self.cfg
        return torch.zeros(c.n_layers, batch, c.n_heads, 0, c.head_dim)


def _causal_bias(t: int, n_past: int, dtype):
    """Additive mask letting new token i see every past token and new tokens up to i."""
    rows = torch.arange(t)[:, None] + n_past
    cols = torch.arange(n_past + t)[None, :]
    return torch.zeros(t, n_past + t, dtype=dtype).masked_fill(cols > rows, float("-inf"))
