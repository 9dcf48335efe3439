"""Colour words checked against the pixels of what they describe (edgecap.vision.colour_check)."""
from pathlib import Path

import numpy as np
import pytest

from edgecap.core.image import read_image
from edgecap.vision.colour_check import colour_targets, unsupported_colours
from edgecap.vision.grounding import grounding_table

REPO = Path(__file__).resolve().parents[1]
REAL_MODEL = REPO / "models" / "edgecap-base"


def test_each_colour_word_describes_the_next_thing_named():
    table = grounding_table()
    assert colour_targets("A black and white dog runs on green grass.", table) == [
        ("black", "dog"), ("white", "dog"), ("green", None)]
    assert colour_targets("A man in a red shirt rides a blue bike.", table) == [("red", None), ("blue", "bicycle")]


def test_a_flat_colour_supports_its_own_word_and_contradicts_others():
    table = grounding_table()
    blue = np.zeros((64, 96, 3), np.uint8)
    blue[:] = (30, 60, 200)
    boxes = {"car": (0.1, 0.1, 0.9, 0.9)}
    assert unsupported_colours("A blue car is parked.", blue, boxes, table) == set()
    assert unsupported_colours("A red car is parked.", blue, boxes, table) == {"red"}
    assert unsupported_colours("A striped car.", blue, boxes, table) == {"striped"}  # cannot be checked
    half = blue.copy()
    half[:, 48:] = (250, 250, 250)  # the car's box is the blue half; the photo is half white
    assert unsupported_colours("A white car.", half, {"car": (0.0, 0.0, 0.5, 1.0)}, table) == {"white"}
    assert unsupported_colours("A white car.", half, {}, table) == set()  # no box: the whole photo


@pytest.mark.skipif(not (REAL_MODEL / "manifest.json").is_file(), reason="no shipped model")
def test_the_cat_photo_is_not_a_black_or_white_cat():
    from edgecap.caption import perceive
    from edgecap.core.model import OnnxCaptioner

    captioner = OnnxCaptioner.load(REAL_MODEL, provider="cpu", threads=1)
    rgb = read_image(REPO / "assets" / "chelsea.jpg")
    perception = perceive(captioner, rgb, captioner.encode([rgb]).pooled)
    boxes = {d.name: d.box for d in reversed(perception.objects)}
    assert "cat" in boxes
    table = grounding_table()
    assert unsupported_colours("A brown cat.", rgb, boxes, table) == set()
    assert unsupported_colours("An orange cat.", rgb, boxes, table) == set()
    assert unsupported_colours("A black cat on a white bed.", rgb, boxes, table) == {"black", "white"}
