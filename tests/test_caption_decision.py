"""The spoken decision (edgecap.caption, edgecap.vision.grounding) on real photos and hand-made evidence."""
import json
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edgecap.caption import CANT_TELL, CONFIDENCES, Describer, evidence_statement, looks_like_texture
from edgecap.evaluation.decision_metrics import DECISION_KEYS, decision_metrics
from edgecap.vision.grounding import GroundingRules, caption_classes, gather, judge
from edgecap.vision.perception import Detection, Perception

RULES = GroundingRules(sure={"cup": 0.8}, likely={"cup": 0.5}, default_sure=0.6, default_likely=0.4, face=0.8,
                       label_sure=0.7, label_likely=0.3)
LEFT, RIGHT, MIDDLE = (0.02, 0.2, 0.3, 0.9), (0.7, 0.2, 0.95, 0.9), (0.3, 0.3, 0.7, 0.8)
# COCO objects really in the example photos (looked at by a person).
ASSET_OBJECTS = {"chelsea": {"cat"}, "coffee": {"cup", "dining table", "spoon"}, "astronaut": {"person"},
                 "rocket": set()}


def seen(objects=(), faces=(), labels=()):
    return Perception(tuple(Detection(n, s, b) for n, s, b in objects),
                      tuple(Detection("face", s, b) for s, b in faces), tuple(labels), 0.0)


# --- grounding ------------------------------------------------------------------------------
def test_a_caption_naming_an_undetected_object_is_not_sure():
    evidence = gather(seen([("dog", 0.9, MIDDLE)]), RULES)
    assert judge("A dog runs on the grass.", evidence, RULES).level == "sure"
    verdict = judge("A dog chases a cat on the grass.", evidence, RULES)
    assert verdict.level == "unsupported" and "cat not detected" in verdict.problems


def test_a_dog_where_the_detector_sees_a_bear_is_contradicted():
    evidence = gather(seen([("bear", 0.93, MIDDLE), ("dog", 0.45, MIDDLE)]), RULES)
    verdict = judge("A brown dog is standing in the snow.", evidence, RULES)
    assert verdict.level == "unsupported" and any("bear" in p for p in verdict.problems)
    # the same from a confident ImageNet label, with the dog detected strongly
    evidence = gather(seen([("dog", 0.7, MIDDLE)], labels=[("bear", 0.95)]), RULES)
    assert judge("A dog in the snow.", evidence, RULES).level == "unsupported"
    assert judge("A bear in the snow.", gather(seen([("bear", 0.9, MIDDLE)]), RULES), RULES).level == "sure"


def test_counts_and_people():
    one = gather(seen([("person", 0.9, LEFT)]), RULES)
    assert judge("A man rides a bike.", gather(seen([("person", 0.9, LEFT), ("bicycle", 0.8, LEFT)]), RULES),
                 RULES).level == "sure"
    assert judge("Two men are talking.", one, RULES).level == "likely"  # says two, sees one
    assert judge("A group of people walk down the street.", one, RULES).level == "likely"
    faces = gather(seen(faces=[(0.95, LEFT), (0.9, RIGHT)]), RULES)  # a face is a person
    assert judge("Two women smile.", faces, RULES).level == "sure"
    assert judge("A hiker on a mountain.", gather(seen(), RULES), RULES).level == "unsupported"
    assert caption_classes("A hiker stands on a rock.") == ["person"]


def test_a_caption_that_skips_the_main_thing_in_view_is_not_sure():
    evidence = gather(seen([("cup", 0.9, MIDDLE), ("dining table", 0.75, (0, 0.5, 1, 1))]), RULES)
    assert judge("A plate of food on a table.", evidence, RULES).level == "unsupported"
    assert judge("A cup of coffee on a table.", evidence, RULES).level == "sure"


def test_statements_built_from_evidence():
    def say(**kw):
        return evidence_statement(gather(seen(**kw), RULES), RULES)

    assert say(objects=[("bear", 0.9, MIDDLE)]) == ("Probably a bear.", ("bear",))
    sentence, named = say(objects=[("cup", 0.6, MIDDLE), ("dining table", 0.5, (0, 0.5, 1, 1))])
    assert sentence == "I'm not sure. I can see a cup and a table." and named == ("cup", "dining table")
    assert say(objects=[("person", 0.5, LEFT), ("person", 0.45, LEFT)])[0] == \
        "I'm not sure. I can see two people on the left."
    assert say(labels=[("missile", 0.45), ("space shuttle", 0.35)])[0] == CANT_TELL  # weak labels: 3 of 11 right
    guessing = replace(RULES, hedge_might_be=True)
    assert evidence_statement(gather(seen(labels=[("missile", 0.45), ("space shuttle", 0.35)]), guessing),
                              guessing)[0] == "It might be a missile or a space shuttle."
    assert say(labels=[("space shuttle", 0.9)])[0] == "Probably a space shuttle."
    assert say(labels=[("wool", 0.2)]) == (CANT_TELL, ())


def test_the_decision_speaks_the_best_supported_candidate():
    describer = Describer(SimpleNamespace(memory=None, bundle=None), None, RULES)
    perception = seen([("dog", 0.9, MIDDLE)])
    pool = ["A man and a dog in the park.", "A dog runs in the park.", "A dog runs."]
    choice = describer.decide_texts(pool, None, perception)
    assert (choice.sentence, choice.confidence) == ("A dog runs in the park.", "sure")
    choice = describer.decide_texts(["A cat on a bed."], None, perception)
    assert (choice.sentence, choice.confidence) == ("Probably a dog.", "hedged")
    choice = describer.decide_texts(["A cat on a bed."], None, seen())
    assert (choice.sentence, choice.confidence) == (CANT_TELL, "unknown")


def test_decision_metrics():
    refs = {"a": ["A dog on grass."], "b": ["A cup of coffee."], "c": ["A red rocket."], "d": ["A man."]}
    spoken = {"a": SimpleNamespace(caption="A dog and a cat.", confidence="sure", named=("dog", "cat")),
              "b": SimpleNamespace(caption="I'm not sure. I can see a cup and a table.", confidence="hedged",
                                   named=("cup", "dining table")),
              "c": SimpleNamespace(caption="It might be a rocket.", confidence="hedged", named=("rocket",)),
              "d": SimpleNamespace(caption=CANT_TELL, confidence="unknown", named=())}
    m = decision_metrics(spoken, refs)
    assert set(DECISION_KEYS) <= set(m)
    assert m["coverage"] == 0.25 and m["chair_s_sure"] == 1.0 and m["chair_i_sure"] == 0.5
    assert m["hedged_precision"] == pytest.approx(2 / 3) and m["unknown_rate"] == 0.25


# --- the shipped model on real and synthetic photos ---------------------------------------------
@pytest.fixture(scope="module")
def describer():
    from edgecap.caption import describer_for
    from edgecap.core.model import OnnxCaptioner

    d = describer_for(OnnxCaptioner.load(provider="cpu"))
    assert d.perceiver is not None, "the shipped bundle has no perception members"
    return d


@pytest.fixture(scope="module")
def asset_results(describer, photos):
    from edgecap.core.decoding import preset

    return dict(zip(["chelsea", "coffee", "astronaut", "rocket"], describer.describe(photos, preset("brief"))))


def test_example_photos(asset_results):
    for name, res in asset_results.items():
        assert res.confidence in CONFIDENCES and res.caption, name
        named = set(caption_classes(res.caption))
        if res.confidence == "sure":  # nothing false said as sure
            assert named <= ASSET_OBJECTS[name], (name, res.caption)
    words = {name: res.caption.lower() for name, res in asset_results.items()}
    assert "cup" in words["coffee"] or "coffee" in words["coffee"], words["coffee"]
    assert "person" in caption_classes(words["astronaut"]), words["astronaut"]
    assert "person" not in caption_classes(words["rocket"]), words["rocket"]
    assert "cat" in words["chelsea"], words["chelsea"]


def synthetic_frames():
    rng = np.random.default_rng(0)
    stripes = (np.sin(np.arange(320) / 5)[None, :] * 100 + 128).repeat(240, 0).astype(np.uint8)
    checker = (((np.indices((240, 320)) // 20).sum(0) % 2) * 255).astype(np.uint8)
    return {"noise": rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
            "2x2": rng.integers(0, 256, (2, 2, 3), dtype=np.uint8),
            "blank": np.full((240, 320, 3), 200, np.uint8), "stripes": cv2.cvtColor(stripes, cv2.COLOR_GRAY2RGB),
            "checker": cv2.cvtColor(checker, cv2.COLOR_GRAY2RGB)}


def test_noise_textures_tiny_and_blank_frames_are_unknown(describer):
    frames = synthetic_frames()
    for name, res in zip(frames, describer.describe(list(frames.values()))):
        assert res.confidence == "unknown", (name, res.caption)
        assert "person" not in caption_classes(res.caption), (name, res.caption)


def test_real_photos_are_not_taken_for_textures(photos):
    assert not any(looks_like_texture(p) for p in photos)


def test_caption_json_has_the_decision(photo_paths):
    proc = subprocess.run([sys.executable, "-m", "edgecap", "caption", str(photo_paths[1]), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    [record] = json.loads(proc.stdout)
    assert {"path", "caption", "confidence", "objects", "faces", "candidate", "tokens", "ms", "status"} <= set(record)
    if record["tokens"]:  # the ids of the model's candidate behind the (possibly reworded) sentence
        from edgecap.core.model import OnnxCaptioner, default_model_dir
        tokenizer = OnnxCaptioner.load(default_model_dir(), threads=1).tokenizer
        assert tokenizer.decode(record["tokens"]) == record["candidate"]
    assert record["confidence"] in CONFIDENCES and isinstance(record["faces"], int)
    assert any(o["name"] == "cup" for o in record["objects"])
    for o in record["objects"]:
        assert set(o) == {"name", "score", "box"} and all(0 <= v <= 1 for v in o["box"])


# --- narration and evaluation speak the same decision --------------------------------------------
class ScriptedDescriber:
    """Stands in for the captioner: each new scene gets the next scripted (sentence, confidence)."""

    provider = "CPUExecutionProvider"

    def __init__(self, script):
        self.script = list(script)

    def encode(self, images):
        return None

    def caption_features(self, features, options):
        sentence, confidence = self.script.pop(0)
        return [SimpleNamespace(caption=sentence, confidence=confidence, ms=1.0)]


def test_narration_does_not_repeat_i_cant_tell_for_the_same_scene(tmp_path):
    from edgecap.audio.speech import SpeechWorker
    from edgecap.audio.voices import TextVoice
    from edgecap.narration.frames import MemorySource
    from edgecap.narration.narrate import EventLog, Narrator
    from edgecap.narration.scene import SceneChange

    script = [(CANT_TELL, "unknown"), (CANT_TELL, "unknown"), ("A dog runs.", "sure"), (CANT_TELL, "unknown"),
              (CANT_TELL, "unknown")]
    speech = SpeechWorker(TextVoice(), replace_pending=False)
    narrator = Narrator(MemorySource([]), ScriptedDescriber(script), None, speech, EventLog(tmp_path / "log.jsonl"))
    frame = np.zeros((8, 8, 3), np.uint8)
    for i, forced in enumerate([False, False, False, False, True]):
        narrator._announce(SceneChange(frame, float(i), None, 1.0, 1.0, forced))
    speech.drain(10)
    speech.close()
    narrator.log.close()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    captions = [(r["text"], r["speech"]) for r in records if r["kind"] == "caption"]
    assert [s for _, s in captions] == ["queued", "suppressed", "queued", "queued", "queued"]
    assert all(r["confidence"] for r in records if r["kind"] == "caption")


def test_eval_reports_the_decision_per_source(tmp_path, photo_paths):
    pytest.importorskip("pycocoevalcap")
    import shutil

    refs = {"chelsea": ["A ginger cat lies on a wooden floor."], "coffee": ["A cup of coffee on a table."],
            "astronaut": ["An astronaut in a space suit poses."], "rocket": ["A rocket launches into the sky."]}
    (tmp_path / "images").mkdir()
    rows = []
    for i, path in enumerate(photo_paths):
        shutil.copy(path, tmp_path / "images" / path.name)
        rows.append({"file": f"images/{path.name}", "captions": refs[path.stem], "split": "val",
                     "source": "coco-val2017" if i % 2 else "flickr8k"})
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, png = tmp_path / "m.json", tmp_path / "risk.png"
    proc = subprocess.run([sys.executable, "-m", "edgecap", "eval", "--data", str(tmp_path), "--split", "val",
                           "--json", str(out), "--risk-coverage", str(png), "--beams", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(out.read_text())
    from edgecap.evaluation.evaluate import METRIC_KEYS

    assert set(METRIC_KEYS) | set(DECISION_KEYS) <= set(metrics)
    assert set(metrics["by_source"]) == {"coco", "flickr8k"}
    for m in metrics["by_source"].values():
        assert set(METRIC_KEYS) | set(DECISION_KEYS) <= set(m) and m["n_images"] == 2
    assert metrics["n_sure"] + metrics["n_hedged"] + metrics["n_unknown"] == 4
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_number_is_not_sure_when_clearly_more_are_seen():
    two = seen([("person", 0.9, LEFT), ("person", 0.8, MIDDLE)])
    five = seen([("person", 0.9, LEFT), ("person", 0.8, MIDDLE), ("person", 0.7, (0.7, 0.2, 0.9, 0.9)),
                 ("person", 0.7, (0.1, 0.6, 0.3, 0.9)), ("person", 0.6, (0.5, 0.6, 0.6, 0.9))])
    assert judge("Two people are walking.", gather(two, RULES), RULES).level == "sure"
    verdict = judge("Two people are walking.", gather(five, RULES), RULES)
    assert verdict.level == "likely" and "says 2 person, sees 5 surely" in verdict.problems
    assert judge("A group of people are walking.", gather(five, RULES), RULES).level == "sure"  # no number said
    assert judge("Two people are walking.", gather(five, replace(RULES, overcount_margin=0)),
                 replace(RULES, overcount_margin=0)).level == "sure"


def test_a_colour_the_pixels_contradict_is_not_said_as_sure():
    import numpy as np

    describer = Describer(SimpleNamespace(memory=None, bundle=None), None, RULES)
    blue = np.zeros((120, 160, 3), np.uint8)
    blue[:] = (30, 60, 200)
    perception = seen([("car", 0.95, (0.1, 0.1, 0.9, 0.9))])
    pool = ["A red car is parked.", "A red car is parked on the street."]
    assert describer.decide_texts(pool, None, perception).sentence == "A red car is parked."  # no pixels given
    choice = describer.decide_texts(pool, None, perception, blue)
    assert (choice.sentence, choice.confidence) == ("A car is parked.", "sure")
    red = blue[..., ::-1].copy()
    assert describer.decide_texts(pool, None, perception, red).sentence == "A red car is parked."


def test_perception_runs_beside_the_decoder_and_decides_the_same(describer, photos, monkeypatch):
    import threading

    threads = []
    perceive = describer.perceiver.perceive
    monkeypatch.setattr(describer.perceiver, "perceive",
                        lambda *a: threads.append(threading.current_thread().name) or perceive(*a))
    monkeypatch.setenv("EDGECAP_PERCEPTION_BESIDE", "1")  # the default from three cores up
    beside = [res.caption for res in Describer(describer.captioner, describer.perceiver).describe(photos)]
    assert len(threads) == len(photos) and all(name.startswith("edgecap-perception") for name in threads), threads
    threads.clear()
    monkeypatch.setenv("EDGECAP_PERCEPTION_BESIDE", "0")  # the default on two cores: in turn, on this thread
    alone = [res.caption for res in Describer(describer.captioner, describer.perceiver).describe(photos)]
    assert threads == [threading.current_thread().name] * len(photos)
    assert beside == alone
