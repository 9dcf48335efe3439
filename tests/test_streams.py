"""Several sources in one `edgecap narrate`: one model, a scene gate and a log per source."""
import json
import shutil
from pathlib import Path

import pytest

import edgecap.narration.streams
from edgecap.cli import main
from edgecap.narration.streams import Router, source_count, split_sources, stream_log_path

REPO = Path(__file__).resolve().parents[1]
REAL_MODEL = REPO / "models" / "edgecap-base"


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.skipif(not (REAL_MODEL / "manifest.json").is_file(), reason="no shipped model")
def test_two_slideshows_share_one_model_and_each_gets_its_own_captions(tmp_path, photo_paths, monkeypatch):
    folders = []
    for name, photos in (("a", photo_paths[:2]), ("b", photo_paths[2:])):
        folder = tmp_path / name
        folder.mkdir()
        for photo in photos:
            shutil.copy(photo, folder)
        folders.append(folder)
    loads = []
    real_load = edgecap.narration.streams.load_captioner
    monkeypatch.setattr(edgecap.narration.streams, "load_captioner", lambda args: loads.append(args) or real_load(args))
    log = tmp_path / "narration.jsonl"
    code = main(["narrate", "--images", str(folders[0]), "--images", str(folders[1]), "--seconds-per-image", "2",
                 "--speech", "none", "--no-keyboard", "--quiet", "--log-json", str(log), "--provider", "cpu"])
    assert code == 0 and len(loads) == 1
    captions = {}
    for i in (1, 2):
        stream = events(stream_log_path(log, f"cam{i}"))
        assert stream[0]["kind"] == "start" and stream[0]["text"] == str(folders[i - 1])
        assert stream[-1]["kind"] == "end"
        captions[i] = [e["text"] for e in stream if e["kind"] == "caption"]
        assert len(captions[i]) == 2, captions  # each photo of its own slideshow, once
    assert not set(captions[1]) & set(captions[2])
    spoken = [e["text"] for e in events(stream_log_path(log, "speech")) if e["kind"] == "speech"]
    for i in (1, 2):
        for caption in captions[i]:
            assert any(s == f"Camera {i}: {caption}" for s in spoken), (caption, spoken)


def test_a_bad_source_is_reported_and_the_others_still_run(tmp_path, photo_paths, capsys):
    folder = tmp_path / "ok"
    folder.mkdir()
    shutil.copy(photo_paths[0], folder)
    log = tmp_path / "n.jsonl"
    code = main(["narrate", "--images", str(tmp_path / "missing"), "--images", str(folder), "--speech", "none",
                 "--no-keyboard", "--quiet", "--log-json", str(log), "--provider", "cpu"])
    err = capsys.readouterr().err
    assert code == 0
    assert "source 1" in err and "missing" in err
    assert [e["kind"] for e in events(stream_log_path(log, "cam2"))].count("caption") == 1
    assert not stream_log_path(log, "cam1").exists()


def test_sources_are_split_in_order_and_voice_commands_go_to_one_narrator():
    import argparse

    args = argparse.Namespace(camera=[0, 2], video=None, images=None, rate=175)
    assert source_count(args) == 2
    assert [a.camera for a in split_sources(args)] == [0, 2]

    class Narrator:
        def __init__(self):
            self.words = []

        def command(self, word):
            self.words.append(word)

    narrators = [Narrator(), Narrator()]
    route = Router(narrators)
    for word in ("describe", "faster", "mute", "quit"):
        route(word)
    assert narrators[0].words == ["describe", "faster", "mute", "quit"]
    assert narrators[1].words == ["describe", "quit"]


def test_several_sources_check_that_speech_can_be_heard(tmp_path, photo_paths, monkeypatch, caplog):
    import edgecap.audio.speech_output as speech_output
    import edgecap.audio.voices as voices

    asked = []
    monkeypatch.setattr(voices, "pick_engine", lambda choice: "espeak")
    monkeypatch.setattr(speech_output, "check_output", lambda engine: asked.append(engine) or speech_output.OutputCheck(
        False, engine, "no audio output device"))
    folders = []
    for name in ("a", "b"):
        folders.append(tmp_path / name)
        folders[-1].mkdir()
        shutil.copy(photo_paths[0], folders[-1])
    log = tmp_path / "n.jsonl"
    code = main(["narrate", "--images", str(folders[0]), "--images", str(folders[1]), "--speech", "espeak",
                 "--no-keyboard", "--quiet", "--log-json", str(log), "--provider", "cpu"])
    assert code == 0 and asked == ["espeak"]
    assert "speech cannot be heard: no audio output device; printing only" in caplog.text


@pytest.mark.skipif(not (REAL_MODEL / "manifest.json").is_file(), reason="no shipped model")
def test_every_user_of_a_shared_captioner_gets_one_describer_and_the_same_sentence(monkeypatch):
    import threading

    from edgecap.vision.perception import Perceiver

    from edgecap.caption import describe_scene, describer_for
    from edgecap.core.image import read_image
    from edgecap.core.decoding import preset
    from edgecap.core.model import OnnxCaptioner
    from edgecap.core.shared_captioner import SharedCaptioner

    builds = []
    real_build = Perceiver.from_bundle.__func__
    monkeypatch.setattr(Perceiver, "from_bundle", classmethod(lambda cls, *a: builds.append(a) or real_build(cls, *a)))
    shared = SharedCaptioner(OnnxCaptioner.load(REAL_MODEL, provider="cpu"))
    rgb = read_image(REPO / "assets" / "chelsea.jpg")
    options = preset("brief")
    results = {}

    def narrate_one(name):  # as a narrator thread does: encode, then the decision on the features
        results[name] = describe_scene(shared, rgb, shared.encode([rgb]), options).caption

    threads = [threading.Thread(target=narrate_one, args=(f"stream{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    with shared.lock:  # as the app's describe job does
        results["app"] = describer_for(shared).describe([rgb], options)[0].caption
    for thread in threads:
        thread.join()
    assert len(builds) == 1  # one set of perception sessions for every thread
    assert len(set(results.values())) == 1 and len(results) == 4, results
