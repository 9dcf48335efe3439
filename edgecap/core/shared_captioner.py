"""One loaded captioner used from several threads: narration streams and the app's workers."""
from __future__ import annotations

import threading

from edgecap.core.providers import CPU


class SharedCaptioner:
    """onnxruntime sessions may run from several threads at once and the decoder keeps its IO
    bindings per thread, so decoding is not serialised. Encoding is, because
    OnnxCaptioner.encode keeps a feature cache (and `caption` encodes), and so is the switch to
    the CPU after an accelerator fails, done once for all users. `lock` is reentrant: a caller
    that needs a run of calls to see one provider (the app's describe job) holds it around them.

    Every user of the same model should go through the same SharedCaptioner, so that the
    describer it builds (perception sessions included, edgecap.caption.describer_for) is one.
    """

    def __init__(self, captioner):
        self.inner = captioner
        self.lock = threading.RLock()

    def encode(self, images):
        with self.lock:
            return self.inner.encode(images)

    def caption(self, images, options):
        with self.lock:
            return self.inner.caption(images, options)

    def caption_features(self, features, options):
        return self.inner.caption_features(features, options)

    def fall_back_to_cpu(self) -> None:
        with self.lock:
            if self.inner.provider != CPU:
                self.inner.fall_back_to_cpu()

    def __getattr__(self, name):  # provider, providers, bundle, memory ...: read-only attributes
        return getattr(self.inner, name)
