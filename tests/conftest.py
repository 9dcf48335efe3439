from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
SHARED_DATA = REPO.parent / "shared" / "data"
PHOTOS = ["chelsea", "coffee", "astronaut", "rocket"]


@pytest.fixture(scope="session")
def photo_paths() -> list[Path]:
    return [ASSETS / f"{name}.jpg" for name in PHOTOS]


@pytest.fixture(scope="session")
def photos(photo_paths) -> list[np.ndarray]:
    from edgecap.image import read_image

    return [read_image(p) for p in photo_paths]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(torch captioner, bundle folder) of the tiny random test model, built once."""
    pytest.importorskip("torch")
    from export.tiny import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("tiny") / "edgecap-tiny")


@pytest.fixture(scope="session")
def tiny_captioner(tiny):
    from edgecap.model import OnnxCaptioner

    return OnnxCaptioner.load(tiny[1], provider="cpu")
