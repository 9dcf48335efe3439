"""Run-time captioner: a verified bundle, two onnxruntime sessions and the decode loop."""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgecap.core.bundle import Bundle, BundleError
from edgecap.core.calibration import CalibrationSpec
from edgecap.core.decoding import Decoded, DecodingOptions, Pool, decode_pool, image_seed
from edgecap.core.early import (DEFAULT_MODEL_NAME, Started, decoder_session, default_model_dir,  # noqa: F401
                                start_loading)
from edgecap.core.image import EXPOSURE_MESSAGES, as_rgb, exposure_problem, normalize, resize_for_model
from edgecap.core.memory import CaptionMemory, MemorySettings
from edgecap.core.providers import (CPU, create_session, in_background, pin_blas_threads, resolve_providers,
                                    return_freed_memory, settle)
from edgecap.core.tokenizer import CaptionTokenizer

log = logging.getLogger("edgecap")

@dataclass
class VisualFeatures:
    cross_k: np.ndarray  # (L, B, H, N, hd) per-layer keys of the visual tokens
    cross_v: np.ndarray
    pooled: np.ndarray  # (B, C) mean of the backbone grid: a scene embedding
    image_ids: np.ndarray | None = None  # (B,) uint64 hash of each model-size image: its random stream

    def __len__(self) -> int:
        return self.pooled.shape[0]

    def take(self, index) -> "VisualFeatures":
        ids = None if self.image_ids is None else self.image_ids[index]
        return VisualFeatures(self.cross_k[:, index], self.cross_v[:, index], self.pooled[index], ids)

    def image_id(self, i: int) -> int | np.ndarray:
        """What seeds image i's random stream: its pixel hash, else its features."""
        return int(self.image_ids[i]) if self.image_ids is not None else self.pooled[i]

    @staticmethod
    def concat(parts: list["VisualFeatures"]) -> "VisualFeatures":
        ids = None if any(p.image_ids is None for p in parts) else np.concatenate([p.image_ids for p in parts])
        return VisualFeatures(np.concatenate([p.cross_k for p in parts], axis=1),
                              np.concatenate([p.cross_v for p in parts], axis=1),
                              np.concatenate([p.pooled for p in parts], axis=0), ids)


@dataclass
class CaptionResult:
    caption: str
    tokens: list[int]
    ms: float
    status: str = "ok"  # ok | dark | bright | uniform
    logprob: float = 0.0
    sparc_selected: int = 0


class OnnxDecoder:
    """The decoder graph behind decoding.StepModel.

    On the CPU, caches are numpy arrays fed to session.run (onnxruntime neither copies them in
    nor out; this costs less Python per step than an IO binding). On an accelerator, present
    keys/values come back as OrtValues on the device and go straight into the next step through
    an IO binding: no host round trip. Only beam reordering and dropping finished rows gather
    rows. Graphs rewritten by export/optimize.py have one cache input/output per layer (nothing
    is split or stacked inside the graph) and let one image's visual keys/values (batch 1)
    serve all of its rows; stacked graphs (L, B, ...) are still run as exported.
    """

    def __init__(self, session: ort.InferenceSession, n_layers: int):
        self.session = session
        self.n_layers = n_layers
        self.device = "cuda" if session.get_providers()[0] in ("CUDAExecutionProvider",
                                                               "TensorrtExecutionProvider") else "cpu"
        inputs = {i.name: i for i in session.get_inputs()}
        self.layered = "past_k_0" in inputs
        past = inputs["past_k_0" if self.layered else "past_k"]
        self.past_shape = past.shape if not self.layered else [n_layers, *past.shape]  # (L, B, H, P, hd)
        meta = session.get_modelmeta().custom_metadata_map
        self.broadcast_visual = self.layered and meta.get("edgecap.visual_broadcast") == "1"
        self._outputs: dict = {}  # output names per attention request
        self._per_thread = threading.local()  # an IO binding is not thread-safe: narration streams share sessions

    def _value(self, array: np.ndarray):
        if self.device == "cpu":
            return np.ascontiguousarray(array)
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device)

    def start(self, visual: VisualFeatures, rows_per_image: int):
        """Visual keys/values bound for rows_per_image rows of each image."""
        k = rows_per_image
        if self.broadcast_visual and len(visual) == 1:
            k = 1  # the graph broadcasts one image over its rows
        last = getattr(self._per_thread, "started", None)
        if last is not None and last[0] is visual and last[1] == k:
            return last[2]  # the same values again: an accelerator's binding has nothing new to bind
        bound = self._start(visual, k)
        self._per_thread.started = (visual, k, bound)
        return bound

    def _start(self, visual: VisualFeatures, k: int):
        cross_k = visual.cross_k if k == 1 else np.repeat(visual.cross_k, k, axis=1)
        cross_v = visual.cross_v if k == 1 else np.repeat(visual.cross_v, k, axis=1)
        if self.layered:
            return ([self._value(c) for c in cross_k], [self._value(c) for c in cross_v])
        return self._value(cross_k), self._value(cross_v)

    def empty_cache(self, rows: int):
        n_layers, _, heads, _, head_dim = self.past_shape
        empty = np.zeros((n_layers, rows, heads, 0, head_dim), dtype=np.float32)
        if self.layered:
            return ([self._value(e) for e in empty], [self._value(e) for e in empty])
        return self._value(empty), self._value(empty)

    def step(self, input_ids, cache, visual_rows, gain, attention="all"):
        """One decoder run. `attention`: "all" returns every layer's visual attention (L, rows, n_visual),
        a layer index only that layer's (rows, n_visual), None none (outputs not asked for are not
        fetched). On an accelerator the IO binding persists between runs, so inputs that did not
        change since the last step (visual keys/values, a constant gain) are not bound again."""
        if self.device == "cpu":
            return self._run(input_ids, cache, visual_rows, gain, attention)
        state = self._per_thread
        if not hasattr(state, "binding"):
            state.binding, state.bound = self.session.io_binding(), {}
        binding = state.binding
        binding.bind_cpu_input("input_ids", np.ascontiguousarray(input_ids, dtype=np.int64))
        fresh_visual = visual_rows is not state.bound.get("visual")
        fresh_gain = gain is not state.bound.get("gain")
        if self.layered:
            for layer in range(self.n_layers):
                binding.bind_ortvalue_input(f"past_k_{layer}", cache[0][layer])
                binding.bind_ortvalue_input(f"past_v_{layer}", cache[1][layer])
                if fresh_visual:
                    binding.bind_ortvalue_input(f"cross_k_{layer}", visual_rows[0][layer])
                    binding.bind_ortvalue_input(f"cross_v_{layer}", visual_rows[1][layer])
                if fresh_gain:
                    binding.bind_cpu_input(f"visual_gain_{layer}", np.ascontiguousarray(gain[layer]))
        else:
            binding.bind_ortvalue_input("past_k", cache[0])
            binding.bind_ortvalue_input("past_v", cache[1])
            if fresh_visual:
                binding.bind_ortvalue_input("cross_k", visual_rows[0])
                binding.bind_ortvalue_input("cross_v", visual_rows[1])
            if fresh_gain:
                binding.bind_cpu_input("visual_gain", np.ascontiguousarray(gain))
        # keep what is bound alive and recognisable (bind_cpu_input does not copy)
        state.bound = {"visual": visual_rows, "gain": gain}
        binding.clear_binding_outputs()  # a bound output would be reused as a buffer of the old shape
        names = self._output_names(attention)
        for name in names:
            binding.bind_output(name, self.device if name.startswith("present") else "cpu")
        self.session.run_with_iobinding(binding)
        return self._unpack(binding.get_outputs(), attention, lambda value: value.numpy())

    def _run(self, input_ids, cache, visual_rows, gain, attention):
        """One decoder run on the CPU with numpy feeds (session.run is thread-safe)."""
        feed = {"input_ids": np.ascontiguousarray(input_ids, dtype=np.int64)}
        if self.layered:
            for layer in range(self.n_layers):
                feed[f"past_k_{layer}"], feed[f"past_v_{layer}"] = cache[0][layer], cache[1][layer]
                feed[f"cross_k_{layer}"], feed[f"cross_v_{layer}"] = visual_rows[0][layer], visual_rows[1][layer]
                feed[f"visual_gain_{layer}"] = gain[layer]
        else:
            feed.update(past_k=cache[0], past_v=cache[1], cross_k=visual_rows[0], cross_v=visual_rows[1],
                        visual_gain=gain)
        return self._unpack(self.session.run(self._output_names(attention), feed), attention, lambda value: value)

    def _unpack(self, outputs, attention, host):
        """(logits, cache, attention) from the outputs named by _output_names(attention)."""
        if self.layered:
            n = self.n_layers
            cache = (outputs[1:1 + n], outputs[1 + n:1 + 2 * n])
            seen = [host(a) for a in outputs[1 + 2 * n:]]
            if attention == "all":
                return host(outputs[0]), cache, np.stack(seen)
            return host(outputs[0]), cache, seen[0] if seen else None
        logits, present_k, present_v, *seen = outputs
        if attention is None:
            return host(logits), (present_k, present_v), None
        stacked = host(seen[0])
        return host(logits), (present_k, present_v), stacked if attention == "all" else stacked[attention]

    def _output_names(self, attention="all") -> list[str]:
        key = attention if attention is None or attention == "all" else int(attention) % self.n_layers
        if key not in self._outputs:
            if self.layered:
                layers = [] if key is None else range(self.n_layers) if key == "all" else [key]
                self._outputs[key] = ["logits", *(f"{kind}_{layer}" for kind in ("present_k", "present_v")
                                                  for layer in range(self.n_layers)),
                                      *(f"visual_attention_{layer}" for layer in layers)]
            else:
                self._outputs[key] = ["logits", "present_k", "present_v"] + ([] if key is None else
                                                                             ["visual_attention"])
        return self._outputs[key]

    def reorder_cache(self, cache, index):
        """Rows `index` of the cache (beam reordering, finished rows dropped, a first step copied)."""
        if len(index) == self._rows(cache) and np.array_equal(index, np.arange(len(index))):
            return cache
        axis = 0 if self.layered else 1
        if self.layered:
            return tuple([self._value(np.take(_host(c), index, axis=axis)) for c in part] for part in cache)
        return tuple(self._value(np.take(_host(c), index, axis=axis)) for c in cache)

    def _rows(self, cache) -> int:
        return _host(cache[0][0]).shape[0] if self.layered else _host(cache[0]).shape[1]


def _host(value) -> np.ndarray:
    """A numpy view of a cache tensor (numpy already, or an OrtValue)."""
    return value if isinstance(value, np.ndarray) else value.numpy()


class OnnxCaptioner:
    def __init__(self, bundle: Bundle, provider: str = "auto", threads: int | None = None,
                 feature_cache_size: int = 8, perception=None, started: Started | None = None):
        """perception: None, or (bundle, providers, threads) -> perceiver, built on a thread of its own
        beside the captioner's graphs; edgecap.caption waits for it (`perception_soon`)."""
        pin_blas_threads()
        self.bundle = bundle
        self.arch = bundle.architecture
        self.providers = resolve_providers(provider)
        self.threads = threads
        providers = list(self.providers)
        self.perception_soon = None if perception is None else (
            tuple(providers), in_background(lambda: perception(bundle, providers, threads)))
        decoder = started.decoder if started is not None else in_background(
            lambda: decoder_session(bundle, providers, threads))
        try:
            self.tokenizer = CaptionTokenizer(bundle.read_verified("tokenizer"))
            self.encoder = create_session(bundle.read_verified("encoder"), self.providers, threads, "encoder")
            self.memory = _load_memory(bundle)
            self.decoder = OnnxDecoder(decoder(), self.arch.n_layers)
        except BaseException:
            # Wait for the other threads: none is left inside onnxruntime while the error ends the program.
            settle(decoder, *(self.perception_soon[1:] if self.perception_soon else ()))
            raise
        self._features: OrderedDict[bytes, VisualFeatures] = OrderedDict()
        self._feature_cache_size = feature_cache_size
        return_freed_memory()

    @classmethod
    def load(cls, model: str | Path | None = None, provider: str = "auto", threads: int | None = None,
             verify: bool = True, perception=None) -> "OnnxCaptioner":
        return cls.finish(start_loading(model, provider, threads, verify), perception)

    @classmethod
    def finish(cls, started: Started, perception=None) -> "OnnxCaptioner":
        """The captioner of a bundle whose loading edgecap.core.early started."""
        return cls(started.bundle, started.provider, started.threads, perception=perception, started=started)

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
            ids = np.asarray([int.from_bytes(key[:8], "little") for key in first], dtype=np.uint64)
            fresh = VisualFeatures(cross_k, cross_v, pooled, ids)
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
        Each image's pool is decoded in one loop with a random stream seeded from its
        own features, so an image gets the same pool alone or in any batch.
        """
        options = replace(options, max_length=min(options.max_length, self.arch.max_length - len(
            self.bundle.tokens.prompt_ids)))
        pool = Pool()
        if options.rerank and self.memory is not None and options.temperature == 0:
            settings = self.memory.settings
            pool = Pool(greedy=options.beam_size > 1, samples=settings.samples, temperature=settings.temperature)
        calibration = self.calibration_for(options)
        return [decode_pool(self.decoder, features.take(slice(i, i + 1)), features.cross_k.shape[3],
                            self.bundle.tokens, options, calibration, pool,
                            image_seed(features.image_id(i), options.seed))
                for i in range(len(features))]

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
