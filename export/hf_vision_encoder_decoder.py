"""VisionEncoderDecoderModel with a GPT-2 decoder (e.g. ViT-GPT2) as an edgecap captioner.

What is reused from optimum, and why: optimum already exports vision-encoder-decoder
models, and its knowledge of them lives in `optimum.utils`: the normalized configs
(NormalizedEncoderDecoderConfig routing image_size/num_channels to the encoder config
and layers/heads/width/vocab to the decoder config) and the dummy input generators
(pixel values at the encoder's input size, and the decoder's past key/values in its
(B, H, P, hd) layout). We use those for the tracing inputs; the sizes come from the
decoder config's standard names, where optimum reads them too. optimum's ONNX configs
themselves (which moved to the separate optimum-onnx package) cannot be reused: their
decoder graphs keep HF's per-layer cache inputs and fused attention, while an edgecap
decoder must take the stacked (L, B, H, P, hd) cache and route cross-attention
through ai.edgecap::CalibratedAttention, so the layer step below is ours.

The vision encoder is called as a whole (ViT, DeiT, Swin, ... all work), followed by
the model's enc_to_dec_proj when the widths differ. The GPT-2 decoder is walked block
by block (`decoder.transformer.h[i]`): ln_1 + causal self-attention, ln_cross_attn +
cross-attention over the visual tokens (the calibrated one), ln_2 + MLP; each uses
the block's own Conv1D/LayerNorm modules and attention scaling.
"""
from __future__ import annotations

import torch
from optimum.utils import (DummyVisionEncoderDecoderPastKeyValuesGenerator, NormalizedConfigManager,
                           NormalizedEncoderDecoderConfig, NormalizedVisionConfig)

from export.hf_common import HFCaptioner, attention, generation_tokens, merge_heads, no_bias
from export.model import calibrated_attention

SUPPORTED_DECODERS = ("gpt2",)


class UnsupportedDecoder(ValueError):
    pass


def normalized_config(config) -> NormalizedEncoderDecoderConfig:
    """optimum's view of a vision-encoder-decoder config, wired as its exporter wires it."""
    decoder_type = config.decoder.model_type
    if decoder_type not in SUPPORTED_DECODERS:
        raise UnsupportedDecoder(f"vision-encoder-decoder with a {decoder_type!r} decoder is not supported "
                                 f"(supported decoders: {', '.join(SUPPORTED_DECODERS)})")
    encoder_type = config.encoder.model_type
    try:
        encoder_class = NormalizedConfigManager.get_normalized_config_class(encoder_type)
    except KeyError:  # a vision tower optimum has no entry for: the generic vision names still apply
        encoder_class = NormalizedVisionConfig
    normalized = NormalizedEncoderDecoderConfig(config)
    normalized.ENCODER_NORMALIZED_CONFIG_CLASS = encoder_class(config.encoder)
    decoder = NormalizedConfigManager.get_normalized_config_class(decoder_type)(config.decoder)
    # The past generator asks for the cross- and self-attention head counts; GPT-2's
    # cross-attention has the decoder's own heads.
    decoder.ENCODER_NUM_ATTENTION_HEADS = decoder.DECODER_NUM_ATTENTION_HEADS = decoder.NUM_ATTENTION_HEADS
    normalized.DECODER_NORMALIZED_CONFIG_CLASS = decoder
    return normalized


class VisionEncoderDecoderCaptioner(HFCaptioner):
    family = "vision-encoder-decoder"

    def __init__(self, model):
        normalized = normalized_config(model.config)  # refuses unsupported decoders
        super().__init__(model, model.config.decoder)
        self.normalized = normalized
        self.gpt2 = model.decoder.transformer

    def vision_config(self):
        return self.model.config.encoder

    def decoder_layers(self):
        return self.gpt2.h

    def example_past(self, batch: int, past: int):
        generator = DummyVisionEncoderDecoderPastKeyValuesGenerator("image-to-text", self.normalized,
                                                                     batch_size=batch, sequence_length=past)
        per_layer = generator.generate("past_key_values", framework="pt")
        return torch.stack([k for k, _ in per_layer]).float()

    def visual_tokens(self, pixels):
        """The encoder's hidden states in the decoder's width; pooled in the encoder's."""
        hidden = self.model.encoder(pixel_values=pixels).last_hidden_state
        projection = getattr(self.model, "enc_to_dec_proj", None)
        return (projection(hidden) if projection is not None else hidden), hidden.mean(dim=1)

    def visual_kv(self, block, tokens):
        k, v = block.crossattention.c_attn(tokens).split(block.crossattention.split_size, dim=2)
        return self.heads(k), self.heads(v), tokens

    def embed(self, input_ids, positions):
        return self.gpt2.wte(input_ids) + self.gpt2.wpe(positions)

    def layer_step(self, block, x, past_k, past_v, cross_k, cross_v, gain, mask):
        own, cross = block.attn, block.crossattention
        q, k, v = own.c_attn(block.ln_1(x)).split(own.split_size, dim=2)
        k, v = self.extend(past_k, k), self.extend(past_v, v)
        x = x + own.c_proj(merge_heads(attention(self.heads(q), k, v, mask, own.scaling)))
        context, probs = calibrated_attention(self.heads(cross.q_attn(block.ln_cross_attn(x))), cross_k, cross_v,
                                              gain, no_bias(x), cross.scaling)
        x = x + cross.c_proj(merge_heads(context))
        return x + block.mlp(block.ln_2(x)), k, v, probs

    def head(self, x):
        return self.model.decoder.lm_head(self.gpt2.ln_f(x))

    def token_ids(self):
        # generate() reads its special tokens from the generation config (which save_pretrained writes
        # from the model config), and starts from BOS when no decoder start token is set.
        return generation_tokens(self.model.generation_config)
