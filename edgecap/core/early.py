"""Start loading a bundle before the rest of edgecap is imported.

What a spoken caption needs to import after numpy and onnxruntime (cv2, tokenizers, the decision
and perception modules) is ~70 ms of Python that holds the GIL. Reading, hashing and building the
decoder's session mostly does not. So `edgecap caption` and `edgecap bench` check the bundle and
start the decoder here, and then import the rest while it builds; OnnxCaptioner takes the
started decoder over. Only numpy, onnxruntime and the bundle checks are needed to get here. On
two cores or fewer the decoder is built at once instead (see providers.in_background).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgecap.core.bundle import Bundle, BundleError, load_bundle
from edgecap.core.providers import create_session, in_background, resolve_providers, settle

DEFAULT_MODEL_NAME = "edgecap-base"


def default_model_dir() -> Path:
    """$EDGECAP_MODEL, else the bundle shipped in the checkout's models/ folder."""
    env = os.environ.get("EDGECAP_MODEL")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "models" / DEFAULT_MODEL_NAME


@dataclass(frozen=True)
class Started:
    """A checked bundle whose decoder session is being built (`decoder()` waits for it)."""

    bundle: Bundle
    provider: str
    threads: int | None
    providers: tuple[str, ...]
    decoder: Callable

    def abandon(self) -> None:
        """Wait for the decoder thread after another error, so none is left inside onnxruntime."""
        settle(self.decoder)


def start_loading(model: str | Path | None = None, provider: str = "auto", threads: int | None = None,
                  verify: bool = True) -> Started:
    path = Path(model) if model else default_model_dir()
    if model is None and not path.exists():
        raise BundleError(f"the default model is not installed at {path}; pass --model DIR "
                          "or set EDGECAP_MODEL")
    bundle = load_bundle(path, verify=verify)
    providers = resolve_providers(provider)
    return Started(bundle, provider, threads, tuple(providers),
                   in_background(lambda: decoder_session(bundle, providers, threads)))


def decoder_session(bundle: Bundle, providers: list[str], threads: int | None):
    import numpy.random  # noqa: F401 - numpy loads it on first use: in the first caption (~15 ms) unless here

    return create_session(bundle.read_verified("decoder"), providers, threads, "decoder")
