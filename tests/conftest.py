from pathlib import Path

import numpy as np
import pytest
from make_tiny_bundle import SEED as TINY_SEED
from make_tiny_bundle import TINY_BUNDLE

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
SHARED_DATA = REPO.parent / "shared" / "data"
PHOTOS = ["chelsea", "coffee", "astronaut", "rocket"]


@pytest.fixture(scope="session")
def photo_paths() -> list[Path]:
    return [ASSETS / f"{name}.jpg" for name in PHOTOS]


@pytest.fixture(scope="session")
def photos(photo_paths) -> list[np.ndarray]:
    from edgecap.core.image import read_image

    return [read_image(p) for p in photo_paths]


@pytest.fixture(scope="session")
def tiny_bundle() -> Path:
    """The committed tiny random test bundle (tests/make_tiny_bundle.py writes it): no torch needed."""
    return TINY_BUNDLE


@pytest.fixture(scope="session")
def tiny(tiny_bundle):
    """(torch captioner, bundle folder) of the tiny random test model: the weights the bundle was made from."""
    pytest.importorskip("torch")
    from export.tiny import build_tiny_captioner

    return build_tiny_captioner(TINY_SEED)[0], tiny_bundle


@pytest.fixture(scope="session")
def tiny_captioner(tiny_bundle):
    from edgecap.core.model import OnnxCaptioner

    return OnnxCaptioner.load(tiny_bundle, provider="cpu")
