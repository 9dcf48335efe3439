"""The 'would a describer mention it' rule (edgecap.vision.salience) on the shipped bundle and real photos."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from conftest import SHARED_DATA
from edgecap.metrics.chair import chair_objects, load_chair_table
from edgecap.vision.grounding import gather
from edgecap.vision.salience import FEATURES, SUPERCATEGORY, mention_chance, mention_features, pool_shares

CAPTIONS = SHARED_DATA / "captioned" / "captions.jsonl"


@pytest.fixture(scope="module")
def describer():
    from edgecap.caption import describer_for
    from edgecap.core.model import OnnxCaptioner
    return describer_for(OnnxCaptioner.load(provider="cpu"))


def decisions(describer, images):
    """Per image: (texts, neighbours, perception), as Describer.describe_features gathers them."""
    cap = describer.captioner
    features = cap.encode(images)
    pools = cap.candidates(features)
    neighbours = cap.memory.nearest(features.pooled)
    return [([cap.tokenizer.decode(d.tokens) for d in pool], neighbours[j],
             describer.perceiver.perceive(img, features.pooled[j])) for j, (img, pool) in enumerate(zip(images, pools))]


def test_the_shipped_bundle_carries_a_fitted_mention_model(describer):
    rules = describer.rules
    assert set(rules.mention_model) <= {"bias", *FEATURES} and len(rules.mention_model) > 10
    assert 0 < rules.mention_candidate_at <= rules.mention_name_at < 1
    assert "train photos" in rules.mention_fitted_on
    assert len(SUPERCATEGORY) == 80 and set(SUPERCATEGORY) == set(load_chair_table().classes)


def test_a_large_centred_detection_outranks_a_small_corner_one(describer, photos, photo_paths):
    """On coffee.jpg the cup (big, central) is more likely mentioned than anything smaller the detector sees."""
    (texts, neighbours, perception), = decisions(describer, [photos[[p.stem for p in photo_paths].index("coffee")]])
    evidence = gather(perception, describer.rules)
    share, first = pool_shares(texts)
    chance = mention_chance(texts, evidence, describer.rules)
    assert chance("cup") >= describer.rules.mention_name_at
    f = mention_features("cup", evidence, share, first)
    others = [d for d in evidence.objects if d.name != "cup" and (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]) <
              f["area"] ** 2 and d.score < f["score"]]
    assert all(chance(d.name) < chance("cup") for d in others)
    choice = describer.decide_texts(texts, neighbours, perception)
    assert choice.confidence == "hedged" and "cup" in choice.named


def test_hedges_on_real_photos_name_what_references_mention(describer):
    """COCO val photos (everyday scenes, several things in view): with the rule, every named thing
    clears its threshold, and the share of hedge-named things a reference mentions is not lower."""
    if not CAPTIONS.is_file():
        pytest.skip("needs ../shared/data")
    from edgecap.core.image import as_rgb, read_image
    rows = [json.loads(line) for line in CAPTIONS.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["split"] == "val" and r["source"].startswith("coco")]
    table = load_chair_table()
    without = replace(describer.rules, mention_model={})
    right = {"with": [0, 0], "without": [0, 0]}
    hedges = 0
    for r, (texts, neighbours, perception) in zip(rows, decisions(
            describer, [as_rgb(read_image(CAPTIONS.parent / r["file"])) for r in rows])):
        truth = {o for ref in r["captions"] for o in chair_objects(ref, table)}
        rules = describer.rules
        chance = mention_chance(texts, gather(perception, rules), rules,
                                [describer.captioner.memory.captions[j] for j in neighbours])
        for name, d in (("with", describer), ("without", type(describer)(describer.captioner, describer.perceiver,
                                                                         without))):
            choice = d.decide_texts(texts, neighbours, perception)
            if choice.confidence != "hedged":
                continue
            if name == "with":
                hedges += 1
                least = rules.mention_name_at if choice.source is None else rules.mention_candidate_at
                assert all(chance(n) >= least for n in choice.named), (choice.sentence, r["file"])
            named = [n for n in choice.named if chair_objects(n, table)]
            right[name][0] += sum(chair_objects(n, table)[0] in truth for n in named)
            right[name][1] += len(named)
    assert hedges >= 5
    assert right["with"][0] / right["with"][1] >= right["without"][0] / right["without"][1], right
