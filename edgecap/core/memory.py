"""Pick among candidate captions by what the model said about similar training photos.

A bundle may carry `memory.npz`: for each training photo, its pooled encoder features
(reduced by PCA, unit length, fp16) and the bundle's own beam caption of it, plus the
CIDEr-D document frequencies of those captions, so loading does not rebuild them. Human
captions are never stored. At run time the captioner writes a pool of candidates
(beam, greedy and a few samples), finds the training photos nearest to the frame, and
keeps the candidate with the highest CIDEr-D against what it said about them. A
caption that names something the model would not say about similar scenes loses.
"""
from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from edgecap.core.bundle import npz_bytes
from edgecap.metrics.cider import CiderD, JoinedCounts

MEMORY_FILE = "memory.npz"


@dataclass(frozen=True)
class MemorySettings:
    neighbours: int = 15
    samples: int = 8  # sampled candidates per photo, besides the beam and greedy captions
    temperature: float = 0.7

    @classmethod
    def from_dict(cls, d: dict) -> "MemorySettings":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class CaptionMemory:
    def __init__(self, mean: np.ndarray, basis: np.ndarray, keys: np.ndarray, captions: list[str],
                 settings: MemorySettings = MemorySettings(), df: Mapping[tuple[str, ...], int] | None = None):
        if basis.shape[0] != mean.shape[0] or keys.shape[1] != basis.shape[1] or len(keys) != len(captions):
            raise ValueError(f"inconsistent memory: mean {mean.shape}, basis {basis.shape}, keys {keys.shape}, "
                             f"{len(captions)} captions")
        if not captions:
            raise ValueError("empty memory")
        if not all(np.isfinite(a).all() for a in (mean, basis, keys)):
            raise ValueError("memory holds NaN or infinite numbers")
        self.mean = np.asarray(mean, dtype=np.float32)  # no copy of what is float32 already
        self.basis = np.asarray(basis, dtype=np.float32)
        self.keys = np.asarray(keys, dtype=np.float32)
        self.captions = captions
        self.settings = settings
        self.cider = CiderD([[c] for c in captions], df=df)  # idf from the memory's own captions

    @classmethod
    def from_bytes(cls, data: bytes, settings: MemorySettings = MemorySettings()) -> "CaptionMemory":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                captions = z["captions"].tolist()
                df = None
                if "df_ngrams" in z and int(z["df_docs"]) == len(captions):  # stored at export: no rebuild
                    df = JoinedCounts(dict(zip(z["df_ngrams"].tolist(), z["df_counts"].tolist())))
                return cls(z["mean"], z["basis"], z["keys"], captions, settings, df)
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"unreadable {MEMORY_FILE}: {exc}") from None

    def to_bytes(self) -> bytes:
        df = self.cider.document_frequencies()
        return npz_bytes(dict(mean=self.mean, basis=self.basis, keys=self.keys.astype(np.float16),
                              captions=np.asarray(self.captions), df_docs=np.int64(len(self.captions)),
                              df_ngrams=np.asarray([" ".join(g) for g in df]),
                              df_counts=np.asarray(list(df.values()), dtype=np.int32)))

    @staticmethod
    def fit(pooled: np.ndarray, captions: list[str], dims: int = 128,
            settings: MemorySettings = MemorySettings()) -> "CaptionMemory":
        """PCA of the training photos' pooled features; keys are their unit-length projections."""
        pooled = np.asarray(pooled, dtype=np.float64)
        mean = pooled.mean(axis=0)
        dims = max(1, min(dims, len(pooled) - 1, pooled.shape[1]))
        _, _, vt = np.linalg.svd(pooled - mean, full_matrices=False)
        basis = vt[:dims].T
        return CaptionMemory(mean, basis, _unit((pooled - mean) @ basis), captions, settings)

    def nearest(self, pooled: np.ndarray) -> np.ndarray:
        """(B, k) indices of the memory photos closest (cosine) to each row of pooled."""
        query = _unit((np.asarray(pooled, dtype=np.float32) - self.mean) @ self.basis)
        k = min(self.settings.neighbours, len(self.keys))
        sims = query @ self.keys.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        return np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1), axis=1)

    def scores(self, candidates: list[str], neighbours: np.ndarray) -> list[float]:
        """How close each candidate is to the memory captions of `neighbours` (CIDEr-D)."""
        said = [self.cider.reference_vectors(int(j))[0] for j in neighbours]
        return [self.cider.similarity(self.cider.vector(c), said) for c in candidates]

    def choose(self, candidates: list[str], neighbours: np.ndarray) -> int:
        """Index of the candidate closest to the memory captions of `neighbours` (first wins ties)."""
        return int(np.argmax(self.scores(candidates, neighbours)))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
