"""Token ids <-> text, on the `tokenizers` library (tokenizer.json from the bundle)."""
from __future__ import annotations

import re

from tokenizers import Tokenizer

_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:'])")


def tidy_caption(text: str) -> str:
    """'a dog runs on the grass .' -> 'A dog runs on the grass.'"""
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(text.split()))
    text = text.strip(" ,;:")
    if not text:
        return text
    text = text[0].upper() + text[1:]
    if text[-1] not in ".!?":
        text += "."
    return text


class CaptionTokenizer:
    def __init__(self, data: bytes):
        self.tokenizer = Tokenizer.from_str(data.decode("utf-8"))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return tidy_caption(self.tokenizer.decode(ids, skip_special_tokens=True))

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)
