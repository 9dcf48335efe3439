"""BLIP (BlipForConditionalGeneration) as an edgecap captioner.

The vision transformer's last hidden states (CLS + patches, after its post-LayerNorm)
are the N visual tokens. The text decoder is a post-LayerNorm BERT: each layer runs
causal self-attention, then cross-attention over the visual tokens (the one that
becomes ai.edgecap::CalibratedAttention), then the feed-forward block. The wrapper
walks `text_decoder.bert.encoder.layer[i]` and calls its Linear and LayerNorm
submodules, so the weights are the checkpoint's own.

generate() starts from text_config.bos_token_id ([DEC]) and stops at
text_config.sep_token_id ([SEP]), so those are the bundle's prompt and EOS.
"""
from __future__ import annotations

from export.hf_common import HFCaptioner, attention, merge_heads, no_bias, token_spec
from export.model import calibrated_attention


class BlipCaptioner(HFCaptioner):
    family = "blip"

    def __init__(self, model):
        super().__init__(model, model.config.text_config)
        self.decoder = model.text_decoder

    def vision_config(self):
        return self.model.config.vision_config

    def decoder_layers(self):
        return self.decoder.bert.encoder.layer

    def visual_tokens(self, pixels):
        image_embeds = self.model.vision_model(pixel_values=pixels).last_hidden_state
        return image_embeds, image_embeds.mean(dim=1)

    def visual_kv(self, layer, tokens):
        cross = layer.crossattention.self
        return self.heads(cross.key(tokens)), self.heads(cross.value(tokens)), tokens

    def embed(self, input_ids, positions):
        return self.decoder.bert.embeddings(input_ids=input_ids, position_ids=positions)

    def layer_step(self, layer, x, past_k, past_v, cross_k, cross_v, gain, mask):
        own = layer.attention.self
        k, v = self.extend(past_k, own.key(x)), self.extend(past_v, own.value(x))
        x = layer.attention.output(merge_heads(attention(self.heads(own.query(x)), k, v, mask, self.scale)), x)
        context, probs = calibrated_attention(self.heads(layer.crossattention.self.query(x)), cross_k, cross_v,
                                              gain, no_bias(x), self.scale)
        x = layer.crossattention.output(merge_heads(context), x)
        return layer.output(layer.intermediate(x), x), k, v, probs

    def head(self, x):
        return self.decoder.cls(x)

    def token_ids(self):
        text = self.model.config.text_config
        return token_spec(text.bos_token_id, text.sep_token_id, text.pad_token_id)
