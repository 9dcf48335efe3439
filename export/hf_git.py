"""GIT (GitForCausalLM) as an edgecap captioner.

GIT has no cross-attention: the projected image tokens are prepended to the text and
one self-attention per layer runs over [image tokens, text]. Image tokens attend only
to each other (bidirectionally); text attends to every image token and causally to
earlier text. Two consequences shape the graphs:

* Image tokens never see text, so their keys/values in every layer depend on the
  image alone. The encoder graph runs the GIT layers over the image tokens and hands
  out each layer's keys/values as cross_k/cross_v: exactly what transformers keeps in
  its cache after the first generate() step.
* The decoder's joint attention becomes one ai.edgecap::CalibratedAttention per layer
  with keys = [image keys, past text keys, new text keys], gain = [visual_gain, ones]
  and an additive mask that is zero over the image and causal over the text. Its
  head-mean probabilities, sliced to the image keys, are the visual attention SPARC
  reads (they sum to less than one: the rest went to the text).

Text positions count text tokens only (P + arange(T)), as in GitModel's forward.
generate() starts from the generation config's BOS ([CLS]) and stops at its EOS.
"""
from __future__ import annotations

import torch

from export.hf_common import HFCaptioner, attention, generation_tokens, merge_heads
from export.model import calibrated_attention


class UnsupportedGitVariant(ValueError):
    pass


class GitCaptioner(HFCaptioner):
    family = "git"

    def __init__(self, model):
        if model.config.num_image_with_embedding is not None:
            raise UnsupportedGitVariant("GIT video checkpoints (num_image_with_embedding set) are not supported; "
                                        "use an image GIT checkpoint")
        super().__init__(model, model.config)
        self.git = model.git

    def vision_config(self):
        return self.model.config.vision_config

    def decoder_layers(self):
        return self.git.encoder.layer

    def visual_tokens(self, pixels):
        features = self.git.image_encoder(pixel_values=pixels).last_hidden_state
        return self.git.visual_projection(features), features.mean(dim=1)

    def visual_kv(self, layer, tokens):
        """The layer over the image tokens alone (they never attend to text); the last
        layer's image outputs feed nothing and drop out of the exported graph."""
        own = layer.attention.self
        k, v = self.heads(own.key(tokens)), self.heads(own.value(tokens))
        context = attention(self.heads(own.query(tokens)), k, v, 0.0, self.scale)
        tokens = layer.attention.output(merge_heads(context), tokens)
        return k, v, layer.output(layer.intermediate(tokens), tokens)

    def embed(self, input_ids, positions):
        return self.git.embeddings(input_ids=input_ids, position_ids=positions)

    def attention_mask(self, t, n_past, n_visual, dtype):
        """Text sees every image token, and earlier text causally: (T, N+P+T)."""
        text = super().attention_mask(t, n_past, n_visual, dtype)
        return torch.cat([text.new_zeros((t, n_visual)), text], dim=1)

    def layer_step(self, layer, x, past_k, past_v, cross_k, cross_v, gain, mask):
        own = layer.attention.self
        k, v = self.extend(past_k, own.key(x)), self.extend(past_v, own.value(x))
        text_gain = x.new_ones((x.shape[0], k.shape[2]))
        context, probs = calibrated_attention(self.heads(own.query(x)), torch.cat([cross_k, k], dim=2),
                                              torch.cat([cross_v, v], dim=2), torch.cat([gain, text_gain], dim=1),
                                              mask, self.scale)
        x = layer.attention.output(merge_heads(context), x)
        return layer.output(layer.intermediate(x), x), k, v, probs[..., :cross_k.shape[2]]

    def head(self, x):
        return self.model.output(x)

    def token_ids(self):
        return generation_tokens(self.model.generation_config)
