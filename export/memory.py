"""Give a bundle its caption memory (edgecap/core/memory.py): the train photos, as the bundle sees them.

For each train photo the bundle's own encoder gives the pooled features and its own beam
caption (brief preset, no reranking) gives the text. No human caption is stored.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edgecap.core.bundle import load_bundle
from edgecap.core.decoding import preset
from edgecap.core.image import ImageError, read_image
from edgecap.core.memory import MEMORY_FILE, CaptionMemory, MemorySettings
from edgecap.core.model import OnnxCaptioner
from export.bundle import update_manifest

log = logging.getLogger(__name__)


def add_memory(bundle_dir: Path, photos: list[Path], dims: int = 128, settings: MemorySettings = MemorySettings(),
               batch: int = 32) -> CaptionMemory:
    """Caption the photos with the bundle itself (beam, no reranking) and store that as its memory."""
    bundle_dir = Path(bundle_dir)
    start = time.time()
    captioner = OnnxCaptioner.load(bundle_dir, provider="cpu")
    plain = preset("brief", rerank=False)
    pooled, captions = [], []
    for i in range(0, len(photos), batch):
        images = []
        for path in photos[i:i + batch]:
            try:
                images.append(read_image(path))
            except ImageError as exc:
                log.warning("%s; skipped", exc)
        if not images:
            continue
        features = captioner.encode(images)
        pooled.append(features.pooled)
        captions += [r.caption for r in captioner.caption_features(features, plain)]
    if len(captions) < 2:
        raise ValueError(f"a memory needs at least 2 readable photos, got {len(captions)}")
    memory = CaptionMemory.fit(np.concatenate(pooled), captions, dims, settings)
    write_memory(bundle_dir, memory)
    log.info("memory of %d photos (%d dims) added to %s in %.0f s", len(captions), memory.basis.shape[1],
             bundle_dir, time.time() - start)
    return memory


def write_memory(bundle_dir: Path, memory: CaptionMemory) -> None:
    """Store the memory in the bundle, list it in the manifest with its hash, and check it loads."""
    bundle = load_bundle(bundle_dir)  # before memory.npz lands: a file the manifest does not list is refused
    (bundle_dir / MEMORY_FILE).write_bytes(memory.to_bytes())
    update_manifest(bundle_dir, files={**bundle.manifest["files"], "memory": MEMORY_FILE},
                    memory={**asdict(memory.settings), "photos": len(memory.captions),
                            "dims": int(memory.basis.shape[1]),
                            "captions": "the bundle's own captions of the photos (no human captions)"})
    OnnxCaptioner.load(bundle_dir)  # refuse to hand out a memory the runtime would refuse
