"""Narration's light and colour channels: a tone that follows brightness, a colour named when it changes."""
import json
from pathlib import Path

import cv2
import numpy as np

from edgecap.audio.speech import SpeechWorker
from edgecap.audio.tones import TonePlayer
from edgecap.audio.voices import TextVoice
from edgecap.narration.frames import MemorySource
from edgecap.narration.narrate import EventLog, NarrateOptions, Narrator


def read_log(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_light_channel_tone_follows_brightness(tmp_path):
    frames = [np.full((120, 160, 3), v, np.uint8) for v in (10, 10, 80, 80, 200, 200, 250)]
    source = MemorySource(frames, fps=2)
    speech = SpeechWorker(TextVoice())
    tones = TonePlayer(wav_dir=tmp_path / "tones")
    events = EventLog(tmp_path / "log.jsonl")
    Narrator(source, None, None, speech, events, options=NarrateOptions(channel="light"), tones=tones).run()
    events.close()
    tone_events = [r for r in read_log(tmp_path / "log.jsonl") if r["kind"] == "tone"]
    hz = [r["hz"] for r in tone_events]
    assert len(hz) == 7 and hz == sorted(hz) and hz[0] < 300 < 1200 < hz[-1]
    assert len(list((tmp_path / "tones").glob("*.wav"))) == 7


def test_colour_channel_names_the_colour_in_the_middle_when_it_changes(tmp_path):
    def colour(h, s, v):
        return cv2.cvtColor(np.full((120, 160, 3), (h, s, v), np.uint8), cv2.COLOR_HSV2RGB)
    frames = [colour(0, 230, 220)] * 6 + [colour(115, 230, 70)] * 1 + [colour(0, 230, 220)] * 3 + \
        [colour(115, 230, 70)] * 6 + [np.full((120, 160, 3), 250, np.uint8)] * 6
    lines = []
    speech = SpeechWorker(TextVoice(), echo=lambda u: lines.append(u.text), replace_pending=False)
    Narrator(MemorySource(frames, fps=5), None, None, speech, options=NarrateOptions(channel="colour")).run()
    speech.drain(2)
    assert lines[1:] == ["red", "dark blue", "white"]  # the single blue frame is not named


