"""Frame sources, their fault wrappers, and the scene detector on synthetic views."""
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edgecap.audio.tones import brightness_to_pitch
from edgecap.narration.colours import colour_name
from edgecap.narration.frames import (CameraSource, FrameSourceError, ImageFolderSource, Looping, MemorySource, Paced,
                            VideoSource, parse_size, usable)
from edgecap.narration.scene import (ExposureChange, SameScene, SceneChange, SceneDetector, SceneOptions, cosine_distance,
                           hash_distance, measure)

from camera_faults import Faults, FaultySource  # tests/camera_faults.py

FPS = 10


def textured(seed: int, size=(240, 320)) -> np.ndarray:
    """A photo-like view with edges: smooth colour fields under sharp-edged blocks, different per seed."""
    rng = np.random.default_rng(seed)
    h, w = size
    smooth = cv2.resize(rng.uniform(0, 255, (4, 4, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    blocks = cv2.resize(rng.uniform(0, 255, (12, 16, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
    return np.clip(0.5 * smooth + 0.5 * blocks, 0, 255).astype(np.uint8)


def write_video(path, frames, fps=FPS):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()


# --- sources -------------------------------------------------------------------------------
def test_video_source_stamps_frames_with_video_time(tmp_path):
    write_video(tmp_path / "v.avi", [textured(i % 3) for i in range(25)])
    with VideoSource(tmp_path / "v.avi") as source:
        frames = []
        while (frame := source.read()) is not None:
            frames.append(frame)
    assert len(frames) == 25 and source.fps == FPS
    assert [f.t for f in frames] == pytest.approx([i / FPS for i in range(25)])
    assert all(usable(f.rgb) and f.rgb.shape == (240, 320, 3) for f in frames)
    with pytest.raises(FrameSourceError):
        VideoSource(tmp_path / "absent.avi")
    (tmp_path / "junk.avi").write_bytes(b"not a video at all" * 10)
    with pytest.raises(FrameSourceError):
        VideoSource(tmp_path / "junk.avi")


def test_slideshow_shows_each_photo_for_its_time_and_skips_broken_ones(tmp_path, photo_paths):
    for i, p in enumerate(photo_paths[:2]):
        (tmp_path / f"{i}.jpg").write_bytes(p.read_bytes())
    (tmp_path / "0b-broken.jpg").write_bytes(photo_paths[0].read_bytes()[:300])
    (tmp_path / "notes.txt").write_text("ignored")
    source = ImageFolderSource(tmp_path, seconds=1.0, fps=4)
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    assert [f.problem for f in frames].count("corrupt") == 1
    good = [f for f in frames if f.rgb is not None]
    assert len(good) == 8 and frames[4].t == 1.0 and good[4].t == 2.0 and frames[-1].t == pytest.approx(11 / 4)
    assert np.array_equal(good[0].rgb, good[3].rgb) and not np.array_equal(good[3].rgb, good[4].rgb)
    with pytest.raises(FrameSourceError):
        ImageFolderSource(tmp_path / "none")


def test_paced_source_keeps_to_the_timeline():
    source = Paced(MemorySource([textured(0)] * 6, fps=20))
    start = time.monotonic()
    frames = [source.read() for _ in range(6)]
    assert source.live and source.read() is None
    assert time.monotonic() - start == pytest.approx(5 / 20, abs=0.08)
    assert frames[-1].wall - frames[0].wall == pytest.approx(0.25, abs=0.05)
    late = Paced(MemorySource([textured(0)] * 40, fps=20))
    assert late.read().t == 0.0
    time.sleep(0.5)  # a slow reader: like a camera, the source moves on without it
    assert late.read().t == pytest.approx(0.5, abs=0.1) and late.skipped >= 8


def test_looping_source_timeline_keeps_counting():
    source = Looping(lambda: MemorySource([textured(0)] * 5))
    ts = [source.read().t for _ in range(12)]
    assert ts == sorted(ts) and len(set(ts)) == 12 and source.loops == 2


def test_faulty_source_drops_darkens_and_corrupts_stretches():
    frames = [textured(0)] * 40
    source = FaultySource(MemorySource(frames), Faults(drops=((1.0, 1.5),), dark=((2.0, 2.5),), corrupt=((3.0, 3.2),)))
    out = [source.read() for _ in range(40)]
    missing = [f.t for f in out if f.problem == "missing"]
    assert missing == pytest.approx([1.0, 1.1, 1.2, 1.3, 1.4])
    assert all(measure(f.rgb).exposure == "dark" for f in out[20:25])
    assert [usable(f.rgb) for f in out[30:33]] == [False, False, True]
    periodic = FaultySource(MemorySource(frames), Faults(drops=((0.0, 0.25),), period=1.0))
    assert [periodic.read().problem for _ in range(13)].count("missing") == 6


def test_absent_camera_reports_missing_frames_and_reopen_fails():
    camera = CameraSource(987)
    frame = camera.read()
    assert frame.rgb is None and frame.problem == "missing" and camera.live and not camera.opened
    assert camera.reopen() is False
    camera.close()


def test_parse_size():
    assert parse_size("1280x720") == (1280, 720)
    for bad in ("1280", "ax2", "0x10"):
        with pytest.raises(ValueError):
            parse_size(bad)


# --- measures and the detector ---------------------------------------------------------------
def test_frame_measures_separate_scenes_and_blur():
    a, b = measure(textured(1)), measure(textured(2))
    noisy = measure(np.clip(textured(1) + np.random.default_rng(0).normal(0, 3, (240, 320, 3)), 0, 255)
                    .astype(np.uint8))
    assert hash_distance(a.hash_bits, noisy.hash_bits) < 0.1 < 0.3 < hash_distance(a.hash_bits, b.hash_bits)
    assert measure(cv2.GaussianBlur(textured(1), (0, 0), 4)).sharpness < SceneOptions.blur_threshold < a.sharpness
    assert cosine_distance(np.array([1.0, 0]), np.array([0.0, 1])) == pytest.approx(1.0)


def mean_colour_encoder():
    """A stand-in encoder whose 'scene embedding' is the mean colour, centred: shifting or
    zooming a view keeps it, a different view changes it."""
    calls = []

    def embed(rgb):
        calls.append(rgb)
        return SimpleNamespace(pooled=(rgb.reshape(-1, 3).mean(0) - 110.0)[None])
    return embed, calls


def run_detector(frames, options=SceneOptions(semantic_threshold=0.05), embed=None):
    embed, calls = embed or mean_colour_encoder()
    detector = SceneDetector(embed, options)
    events = [(i / FPS, e) for i, rgb in enumerate(frames) if (e := detector.observe(rgb, i / FPS))]
    return events, calls, detector


def changes(events):
    return [(t, e) for t, e in events if isinstance(e, SceneChange)]


def test_a_steady_scene_is_announced_once_after_it_holds_still():
    events, calls, _ = run_detector([textured(1)] * 40)
    assert [round(t, 1) for t, _ in changes(events)] == [1.0] and len(calls) == 1


def test_cut_to_a_new_scene_and_cross_fade_announce_the_new_scene_once():
    a, b, c = textured(1), textured(2), textured(3)
    fade = [cv2.addWeighted(b, 1 - k / 10, c, k / 10, 0) for k in range(1, 10)]
    events, _, _ = run_detector([a] * 20 + [b] * 20 + fade + [c] * 20)
    found = changes(events)
    assert len(found) == 3
    assert hash_distance(measure(found[2][1].rgb).hash_bits, measure(c).hash_bits) < 0.05  # not a mid-fade frame


def test_someone_walking_through_the_picture_is_not_announced():
    a = textured(1)
    walker = []
    for x in range(-120, 330, 40):
        frame = a.copy()
        cv2.ellipse(frame, (x, 130), (60, 110), 0, 0, 360, (40, 35, 30), -1)
        walker.append(frame)
    events, _, _ = run_detector([a] * 20 + walker + [a] * 20)
    assert len(changes(events)) == 1


def test_same_content_from_a_moved_camera_passes_the_pixel_gate_but_not_the_semantic_gate():
    a = textured(1)
    moved = cv2.resize(a[20:220, 25:295], (320, 240))  # a zoom: most hash bits change
    assert hash_distance(measure(a).hash_bits, measure(moved).hash_bits) > SceneOptions.hash_threshold
    events, calls, _ = run_detector([a] * 20 + [moved] * 20)
    assert len(changes(events)) == 1 and [type(e) for _, e in events][1:] == [SameScene]
    assert len(calls) == 2  # the second view was encoded once, then followed by its pixels


def test_blurred_frames_are_passed_over_for_a_sharp_one():
    a, b = textured(1), textured(2)
    blurred = cv2.GaussianBlur(b, (0, 0), 4)
    events, _, _ = run_detector([a] * 20 + [blurred] * 15 + [b] * 15)
    (_, first), (t, second) = changes(events)
    assert measure(second.rgb).sharpness >= SceneOptions.blur_threshold and t >= 3.5
    # a view that is never sharp (a plain wall) is still described, after the patience runs out
    events, _, _ = run_detector([a] * 20 + [blurred] * 50)
    # the first blurred frame differs too much from the one before to count as steady: 2.1 s
    expected = [1.0, 2.1 + SceneOptions.stable_seconds + SceneOptions.blur_patience]
    assert [t for t, _ in changes(events)] == pytest.approx(expected, abs=0.11)


def test_a_dark_view_is_announced_once_and_recovery_is_reported():
    a = textured(1)
    dark = (a * 0.03).astype(np.uint8)
    events, _, detector = run_detector([a] * 20 + [dark] * 20 + [a] * 20)
    exposure = [(round(t, 1), e.problem) for t, e in events if isinstance(e, ExposureChange)]
    assert exposure == [(2.5, "dark"), (4.0, None)]
    assert len(changes(events)) == 1  # the same scene came back: nothing new to say


def test_describe_now_forces_a_caption_of_an_unchanged_scene():
    embed, calls = mean_colour_encoder()
    detector = SceneDetector(embed, SceneOptions(semantic_threshold=0.05))
    a = textured(1)
    assert [detector.observe(a, i / FPS) for i in range(15)][-1] is None
    detector.force()
    event = detector.observe(a, 1.5)
    assert isinstance(event, SceneChange) and event.forced and event.distance == pytest.approx(0, abs=1e-9)


def test_colour_names():
    def patch(h, s, v):
        hsv = np.full((60, 80, 3), (h, s, v), np.uint8)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    assert colour_name(patch(0, 230, 220)) == "red"
    assert colour_name(patch(115, 230, 70)) == "dark blue"
    assert colour_name(patch(60, 200, 200)) == "green"
    assert colour_name(patch(28, 230, 230)) == "yellow"
    assert colour_name(patch(15, 200, 90)) == "brown"
    assert colour_name(np.full((60, 80, 3), 250, np.uint8)) == "white"
    assert colour_name(np.full((60, 80, 3), 128, np.uint8)) == "gray"
    assert colour_name(np.full((60, 80, 3), 5, np.uint8)) == "black"
    framed = np.full((100, 100, 3), 250, np.uint8)
    framed[40:60, 40:60] = patch(0, 230, 220)[:20, :20]
    assert colour_name(framed) == "red"  # only the centre counts


def test_pitch_rises_with_brightness():
    pitches = [brightness_to_pitch(b) for b in (0, 64, 128, 255)]
    assert pitches == sorted(pitches) and pitches[0] == pytest.approx(200) and pitches[-1] == pytest.approx(1600)
