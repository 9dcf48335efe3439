"""Run-time captioner: a verified bundle, two onnxruntime sessions and the decode loop."""
from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgecap.bundle import Bundle, BundleError, load_bundle
from edgecap.calibration import CalibrationSpec
from edgecap.decoding import Decoded, DecodingOptions, decode
from edgecap.image import EXPOSURE_MESSAGES, as_rgb, exposure_problem, normalize, resize_for_model
from edgecap.memory import CaptionMemory, MemorySettings
from edgecap.providers import CPU, create_session, resolve_providers
from edgecap.tokenizer import CaptionTokenizer

log = logging.getLogger("edgecap")

DEFAULT_MODEL_NAME = "edgecap-base"


def default_model_dir() -> Path:
    """$EDGECAP_MODEL, else the bundle shipped in the checkout's models/ folder."""
    env = os.environ.get("EDGECAP_MODEL")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "models" / DEFAULT_MODEL_NAME


@dataclass
class VisualFeatures:
    cross_k: np.ndarray  # (L, B, H, N, hd) per-layer keys of the visual tokens
    cross_v: np.ndarray
    pooled: np.ndarray  # (B, C) mean of the backbone grid: a scene embedding

    def __len__(self) -> int:
        return self.pooled.shape[0]

    def take(self, index) -> "VisualFeatures":
        return VisualFeatures(self.cross_k[:, index], self.cross_v[:, index], self.pooled[index])

    @staticmethod
    def concat(parts: list["VisualFeatures"]) -> "VisualFeatures":
        return VisualFeatures(np.concatenate([p.cross_k for p in parts], axis=1),
                              np.concatenate([p.cross_v for p in parts], axis=1),
                              np.concatenate([p.pooled for p in parts], axis=0))


@dataclass
class CaptionResult:
    caption: str
    tokens: list[int]
    ms: float
    status: str = "ok"  # ok | dark | bright | uniform
    logprob: float = 0.0
    sparc_selected: int = 0


class OnnxDecoder:
    """The decoder graph behind decoding.StepModel, with caches kept as OrtValues.

    Present keys/values come back as OrtValues on the provider's device and go straight
    into the next step: no host round trip, no concatenation in Python. Only beam
    reordering gathers rows.
    """

    def __init__(self, session: ort.InferenceSession, n_layers: int):
        self.session = session
        self.n_layers = n_layers
        self.device = "cuda" if session.get_providers()[0] in ("CUDAExecutionProvider",
                                                               "TensorrtExecutionProvider") else "cpu"
        past = next(i for i in session.get_inputs() if i.name == "past_k")
        self.past_shape = past.shape  # (L, B, H, P, hd) with B, P symbolic

    def start(self, visual: VisualFeatures, rows_per_image: int):
        k = rows_per_image
        cross_k = visual.cross_k if k == 1 else np.repeat(visual.cross_k, k, axis=1)
        cross_v = visual.cross_v if k == 1 else np.repeat(visual.cross_v, k, axis=1)
        return (ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(cross_k), self.device),
                ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(cross_v), self.device))

    def empty_cache(self, rows: int):
        n_layers, _, heads, _, head_dim = self.past_shape
        empty = np.zeros((n_layers, rows, heads, 0, head_dim), dtype=np.float32)
        return (ort.OrtValue.ortvalue_from_numpy(empty, self.device),
                ort.OrtValue.ortvalue_from_numpy(empty.copy(), self.device))

    def step(self, input_ids, cache, visual_rows, gain):
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", input_ids)
        binding.bind_ortvalue_input("past_k", cache[0])
        binding.bind_ortvalue_input("past_v", cache[1])
        binding.bind_ortvalue_input("cross_k", visual_rows[0])
        binding.bind_ortvalue_input("cross_v", visual_rows[1])
        binding.bind_cpu_input("visual_gain", gain)
        binding.bind_output("logits", "cpu")
        binding.bind_output("present_k", self.device)
        binding.bind_output("present_v", self.device)
        binding.bind_output("visual_attention", "cpu")
        self.session.run_with_iobinding(binding)
        logits, present_k, present_v, attention = binding.get_outputs()
        return logits.numpy(), (present_k, present_v), attention.numpy()

    def reorder_cache(self, cache, index):
        if np.array_equal(index, np.arange(len(index))):
            return cache
        return tuple(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(c.numpy()[:, index]), self.device)
                     for c in cache)


class Captioner:
    def __init__(self, bundle: Bundle, provider: str = "auto", threads: int | None = None,
                 feature_cache_size: int = 8):
        self.bundle = bundle
        self.arch = bundle.architecture
        self.providers = resolve_providers(provider)
        self.threads = threads
        self.tokenizer = CaptionTokenizer(bundle.read_verified("tokenizer"))
        self.encoder = create_session(bundle.read_verified("encoder"), self.providers, threads, "encoder")
        self.decoder = OnnxDecoder(create_session(bundle.read_verified("decoder"), self.providers, threads,
                                                  "decoder"), self.arch.n_layers)
        self._features: OrderedDict[bytes, VisualFeatures] = OrderedDict()
        self._feature_cache_size = feature_cache_size
        self.memory = _load_memory(bundle)

    @classmethod
    def load(cls, model: str | Path | None = None, provider: str = "auto", threads: int | None = None,
             verify: bool = True) -> "Captioner":
        path = Path(model) if model else default_model_dir()
        if model is None and not path.exists():
            raise BundleError(f"the default model is not installed at {path}; pass --model DIR "
                              "or set EDGECAP_MODEL")
        return cls(load_bundle(path, verify=verify), provider=provider, threads=threads)

    @property
    def provider(self) -> str:
        return self.encoder.get_providers()[0]

    def fall_back_to_cpu(self) -> None:
        """Recreate both sessions on the CPU (after an accelerator failed mid-run)."""
        self.providers = [CPU]
        self.encoder = create_session(self.bundle.read_verified("encoder"), [CPU], self.threads, "encoder")
        self.decoder = OnnxDecoder(create_session(self.bundle.read_verified("decoder"), [CPU], self.threads,
                                                  "decoder"), self.arch.n_layers)

    # --- visual features -------------------------------------------------------
    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        return resize_for_model(as_rgb(rgb), self.bundle.preprocessing)

    def encode(self, images: list[np.ndarray]) -> VisualFeatures:
        """Visual features of RGB uint8 frames; an identical frame is encoded only once."""
        resized = [self.preprocess(im) for im in images]
        keys = [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in resized]
        found: dict[bytes, VisualFeatures] = {}
        for key in keys:
            if key in self._features:
                self._features.move_to_end(key)
                found[key] = self._features[key]
        first = {}
        for i, key in enumerate(keys):
            if key not in found:
                first.setdefault(key, i)
        if first:
            pixels = np.stack([normalize(resized[i], self.bundle.preprocessing) for i in first.values()])
            cross_k, cross_v, pooled = self.encoder.run(["cross_k", "cross_v", "pooled"], {"pixels": pixels})
            fresh = VisualFeatures(cross_k, cross_v, pooled)
            for j, key in enumerate(first):
                found[key] = fresh.take(slice(j, j + 1))
                self._remember(key, found[key])
        return VisualFeatures.concat([found[key] for key in keys])

    def _remember(self, key: bytes, features: VisualFeatures) -> None:
        self._features[key] = features
        while len(self._features) > self._feature_cache_size:
            self._features.popitem(last=False)

    # --- captions --------------------------------------------------------------
    def calibration_for(self, options: DecodingOptions) -> CalibrationSpec | None:
        if not options.calibrate:
            return None
        return options.calibration or self.bundle.calibration

    def caption_features(self, features: VisualFeatures, options: DecodingOptions = DecodingOptions()
                         ) -> list[CaptionResult]:
        start = time.perf_counter()
        pools = self.candidates(features, options)
        if len(pools[0]) > 1:
            neighbours = self.memory.nearest(features.pooled)
            decoded = [self._choose_by_memory(pool, near) for pool, near in zip(pools, neighbours)]
        else:
            decoded = [pool[0] for pool in pools]
        ms = (time.perf_counter() - start) * 1000 / max(len(features), 1)
        return [CaptionResult(caption=self.tokenizer.decode(d.tokens), tokens=d.tokens, ms=ms, logprob=d.logprob,
                              sparc_selected=d.selected_tokens) for d in decoded]

    def candidates(self, features: VisualFeatures, options: DecodingOptions = DecodingOptions()
                   ) -> list[list[Decoded]]:
        """Per image, the captions to choose from; the first is the plain decode (beam, greedy or sample).

        With a memory and reranking on, the pool adds the greedy caption and sampled ones.
        """
        options = replace(options, max_length=min(options.max_length, self.arch.max_length - len(
            self.bundle.tokens.prompt_ids)))
        best = self._decode(features, options)
        if not (options.rerank and self.memory is not None and options.temperature == 0):
            return [[d] for d in best]
        settings = self.memory.settings
        n = len(features)
        greedy = self._decode(features, replace(options, beam_size=1)) if options.beam_size > 1 else []
        sampled = self._decode(features.take(np.repeat(np.arange(n), settings.samples)),
                               replace(options, beam_size=1, temperature=settings.temperature,
                                       seed=0 if options.seed is None else options.seed))
        return [[best[i], *greedy[i:i + 1], *sampled[i * settings.samples:(i + 1) * settings.samples]]
                for i in range(n)]

    def _decode(self, features: VisualFeatures, options: DecodingOptions) -> list[Decoded]:
        return decode(self.decoder, features, len(features), features.cross_k.shape[3], self.bundle.tokens,
                      options, self.calibration_for(options))

    def _choose_by_memory(self, pool: list[Decoded], neighbours: np.ndarray) -> Decoded:
        """The candidate closest to what the memory says about the nearest training photos."""
        texts = [self.tokenizer.decode(d.tokens) for d in pool]
        unique = list(dict.fromkeys(texts))
        pick = unique[self.memory.choose(unique, neighbours)]
        return pool[texts.index(pick)]

    def caption(self, images: list[np.ndarray], options: DecodingOptions = DecodingOptions()
                ) -> list[CaptionResult]:
        """The model's own captions, unchecked (what edgecap says is decided in edgecap.caption)."""
        start = time.perf_counter()
        results: list[CaptionResult | None] = [None] * len(images)
        describable = []
        for i, image in enumerate(images):
            problem = exposure_problem(as_rgb(image))
            if problem:
                results[i] = CaptionResult(caption=EXPOSURE_MESSAGES[problem], tokens=[], ms=0.0, status=problem)
            else:
                describable.append(i)
        if describable:
            features = self.encode([images[i] for i in describable])
            for i, res in zip(describable, self.caption_features(features, options)):
                results[i] = res
            per_image = (time.perf_counter() - start) * 1000 / len(describable)
            for i in describable:
                results[i].ms = per_image
        return results  # type: ignore[return-value]


def _load_memory(bundle: Bundle) -> CaptionMemory | None:
    if "memory" not in bundle.files:
        return None
    try:
        memory = CaptionMemory.from_bytes(bundle.read_verified("memory"),
                                          MemorySettings.from_dict(bundle.manifest.get("memory", {})))
    except ValueError as exc:
        raise BundleError(f"{bundle.path}: {exc}") from None
    if memory.mean.shape[0] != bundle.architecture.pooled_dim:
        raise BundleError(f"{bundle.path}: memory was built for {memory.mean.shape[0]}-d features, "
                          f"the encoder gives {bundle.architecture.pooled_dim}")
    return memory
