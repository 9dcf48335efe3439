"""Word-level caption tokenizer (saved as tokenizer.json for the `tokenizers` runtime)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel

SPECIALS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)


def _pre_tokenizer():
    return pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])


def _normalizer():
    return normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])


def split_words(text: str) -> list[str]:
    normalized = _normalizer().normalize_str(text)
    return [w for w, _ in _pre_tokenizer().pre_tokenize_str(normalized)]


def build_word_tokenizer(texts: Iterable[str], min_count: int = 1, max_words: int | None = None) -> Tokenizer:
    """A lower-cased word + punctuation vocabulary; rare words map to [UNK]."""
    counts = Counter(w for t in texts for w in split_words(t))
    words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
    if max_words is not None:
        words = words[:max_words]
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = _normalizer()
    tok.pre_tokenizer = _pre_tokenizer()
    tok.add_special_tokens(SPECIALS)
    return tok


def encode_caption(tok: Tokenizer, text: str, max_len: int) -> list[int]:
    """[BOS] words [EOS], truncated to max_len tokens (EOS kept)."""
    ids = tok.encode(text, add_special_tokens=False).ids[: max_len - 2]
    return [BOS_ID, *ids, EOS_ID]
