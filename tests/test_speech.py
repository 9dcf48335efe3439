"""Speech: repeat detection, the one-at-a-time worker, real engines writing WAV files, tones."""
import io
import sys
import threading
import time
import wave

import numpy as np
import pytest

from edgecap.audio.repeats import REPEAT_THRESHOLD, content_words, near_duplicate, text_similarity
from edgecap.audio.speech import SpeechWorker
from edgecap.audio.tones import TonePlayer, sine_tone, wav_bytes
from edgecap.audio.voices import (ProcessVoice, SpeechError, TextVoice, espeak_binary, pick_engine, pyttsx3_available, speak,
                            speech_command)


def read_wav(path):
    with wave.open(str(path)) as w:
        rate, frames = w.getframerate(), w.readframes(w.getnframes())
        assert w.getsampwidth() == 2
    samples = np.frombuffer(frames, "<i2").astype(np.float64)
    return len(samples) / rate, float(np.sqrt(np.mean(samples ** 2))) if len(samples) else 0.0


# --- what counts as a repeat -----------------------------------------------------------------
def test_content_words_are_lemmatised_ish():
    assert content_words("Two dogs are sitting on the couch.") == {"two", "dog", "sit", "sofa"}
    assert content_words("A man rides a bicycle") == content_words("a man riding a bike")


@pytest.mark.parametrize("a, b, repeat", [
    ("A dog sitting on a couch.", "A dog sits on the sofa.", True),
    ("A man riding a bike on a street.", "a man rides a bicycle on the street", True),
    ("A cat lying on a bed.", "A black cat lying on a bed.", True),  # 3 of 4 words: 0.75
    ("A man riding a bike down a street.", "A man riding a horse down a street.", False),  # 4/6
    ("A dog on a sofa.", "A brown dog on a sofa.", False),  # 2/3: too short to call it a repeat
    ("A cat on a table.", "Two children playing in a park.", False),
])
def test_near_duplicates(a, b, repeat):
    assert near_duplicate(a, b) is repeat
    assert text_similarity(a, b) == text_similarity(b, a)
    assert REPEAT_THRESHOLD == 0.7


# --- the worker ---------------------------------------------------------------------------------
class _Timed:
    def __init__(self, voice, seconds, status):
        self.voice, self.end, self.status = voice, time.monotonic() + seconds, status

    def poll(self):
        return self.status if time.monotonic() >= self.end else None

    def kill(self):
        self.voice.killed += 1
        self.end = 0


class SlowVoice:
    """Takes `seconds` per utterance; records what it was asked to say."""
    name = "slow"
    writes_wav = False

    def __init__(self, seconds=0.3, status=0):
        self.seconds, self.status = seconds, status
        self.said, self.killed = [], 0

    def start(self, text, rate, wav=None):
        self.said.append((text, rate))
        return _Timed(self, self.seconds, self.status)


def worker(voice, **kw):
    events = []
    w = SpeechWorker(voice, on_event=lambda kind, text, t, **f: events.append((kind, text, f)), **kw)
    return w, events


def test_say_returns_what_happened_and_suppresses_repeats():
    voice = SlowVoice(0.0)
    w, _ = worker(voice, replace_pending=False)
    assert w.say("A dog sitting on a couch.") == "queued"
    assert w.say("A dog sits on the sofa.") == "suppressed"
    assert w.say("A dog sits on the sofa.", force=True) == "queued"
    assert w.say("  ") == "empty"
    assert w.drain(5)
    w.mute()
    assert w.say("A red car.") == "muted"
    w.unmute()
    assert w.say("A red car.") == "queued"
    assert w.drain(5)
    assert [t for t, _ in voice.said] == ["A dog sitting on a couch.", "A dog sits on the sofa.", "A red car."]
    w.close()


def test_newest_caption_replaces_queued_ones_but_cues_wait_their_turn():
    voice = SlowVoice(0.4)
    w, events = worker(voice, replace_pending=True)
    w.say("A cat on a table.")
    time.sleep(0.1)  # speaking now
    w.say("Two dogs in a park.")
    w.say("Camera lost.", "cue")
    w.say("A red bus on a street.")
    assert w.drain(5)
    assert [t for t, _ in voice.said] == ["A cat on a table.", "Camera lost.", "A red bus on a street."]
    assert [t for k, t, f in events if f.get("state") == "replaced"] == ["Two dogs in a park."]
    w.close()
    voice = SlowVoice(0.05)
    keep_all, _ = worker(voice, replace_pending=False)
    for text in ("A cat on a table.", "Two dogs in a park.", "A red bus on a street."):
        keep_all.say(text)
    assert keep_all.drain(5) and len(voice.said) == 3
    keep_all.close()


def test_say_never_blocks_while_speaking():
    w, _ = worker(SlowVoice(2.0))
    start = time.monotonic()
    for i in range(20):
        w.say(f"caption number {i} about a different thing {i}", force=True)
    assert time.monotonic() - start < 0.1
    w.close()


def test_stop_cuts_off_speech_and_drops_the_queue():
    voice = SlowVoice(5.0)
    w, events = worker(voice)
    w.say("A long description of a kitchen.")
    w.say("Camera lost.", "cue")
    time.sleep(0.1)
    start = time.monotonic()
    w.stop()
    assert w.drain(2) and time.monotonic() - start < 0.5
    assert voice.killed == 1 and len(voice.said) == 1
    assert [f["state"] for k, t, f in events if k == "speech"] == ["start", "stopped"]
    w.close()


def test_repeat_rate_and_mute():
    voice = SlowVoice(0.0)
    w, _ = worker(voice, rate=175, replace_pending=False)
    assert w.repeat() == "queued"  # nothing yet: says so
    w.say("A bowl of fruit.")
    w.drain(2)
    assert w.repeat() == "queued"
    w.drain(2)
    assert [t for t, _ in voice.said] == ["Nothing described yet.", "A bowl of fruit.", "A bowl of fruit."]
    assert w.faster() == 200 and w.slower() == 175
    for _ in range(30):
        w.faster()
    assert w.rate == SpeechWorker.MAX_RATE
    w.say("A green apple.")
    w.drain(2)
    assert voice.said[-1] == ("A green apple.", SpeechWorker.MAX_RATE)
    w.mute()
    assert w.say("Another thing entirely.") == "muted" and not w.busy
    w.close()


def test_a_failing_engine_falls_back_to_text_and_a_hung_one_is_killed():
    w, events = worker(SlowVoice(0.0, status=1), replace_pending=False)
    for i in range(4):
        w.say(f"sentence {i} about thing {i}", force=True)
    assert w.drain(5)
    assert isinstance(w.voice, TextVoice)
    assert sum(1 for k, *_ in events if k == "fault") == SpeechWorker.MAX_FAILURES + 1
    w.close()
    hung = SlowVoice(60.0)
    w, events = worker(hung, timeout=0.3)
    w.say("This never ends.")
    assert w.drain(3) and hung.killed == 1
    assert [f["state"] for k, t, f in events if k == "speech"][-1] == "timeout"
    w.close()


def test_echo_prints_what_is_said_in_text_only_mode():
    lines = []
    w = SpeechWorker(TextVoice(), echo=lambda u: lines.append(u.text))
    w.say("A cup of coffee.")
    w.say("Too dark.", "cue")
    assert w.drain(2) and lines == ["A cup of coffee.", "Too dark."]
    w.close()


# --- real engines -------------------------------------------------------------------------------
def test_legacy_api_still_works():
    assert speak("hello", "none") is False
    with pytest.raises(SpeechError):
        pick_engine("klingon")
    assert speech_command("hi", "pyttsx3", 150)[0] == sys.executable


@pytest.mark.parametrize("engine", ["espeak", "pyttsx3"])
def test_engines_write_one_audible_wav_per_utterance(engine, tmp_path):
    if engine == "espeak" and not espeak_binary():
        pytest.skip("espeak-ng is not installed")
    if engine == "pyttsx3" and not pyttsx3_available():
        pytest.skip("pyttsx3 has no engine here")
    events = []
    w = SpeechWorker(ProcessVoice(engine), wav_dir=tmp_path, replace_pending=False,
                     on_event=lambda kind, text, t, **f: events.append(f))
    w.say("A dog is sleeping on a sofa.")
    w.say("Camera lost.", "cue")
    assert w.drain(60)
    w.close()
    wavs = sorted(tmp_path.glob("*.wav"))
    assert [p.name for p in wavs] == ["0001-caption.wav", "0002-cue.wav"]
    for path in wavs:
        seconds, rms = read_wav(path)
        assert 0.3 < seconds < 10 and rms > 300, (path, seconds, rms)
    assert [e["wav"] for e in events if e.get("state") == "start"] == [str(p) for p in wavs]


# --- tones -----------------------------------------------------------------------------------------
def test_sine_tones_have_the_asked_pitch():
    samples = sine_tone(880.0, 0.2)
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.argmax(spectrum) * 22050 / len(samples) == pytest.approx(880, abs=10)
    with wave.open(io.BytesIO(wav_bytes(samples))) as w:
        assert w.getnframes() == len(samples) and w.getframerate() == 22050
    assert abs(int(samples[0])) < 50 and abs(int(samples[-1])) < 50  # faded, no click


def test_tone_player_writes_or_plays_and_cuts_the_old_tone_off(tmp_path):
    player = TonePlayer(wav_dir=tmp_path)
    path = player.play(440.0)
    seconds, rms = read_wav(path)
    assert player.mode == "wav" and seconds == pytest.approx(0.15, abs=0.01) and rms > 1000
    slow_player = [sys.executable, "-c", "import time; time.sleep(30)"]
    player = TonePlayer(player=slow_player)
    player.play(440.0)
    first = player._current
    player.play(660.0)
    assert first.poll() is not None and player._current.poll() is None
    player.close()
    assert player._current is None


def test_say_is_thread_safe():
    voice = SlowVoice(0.0)
    w, _ = worker(voice, replace_pending=False)
    each = w.MAX_PENDING // 4  # no more than the queue holds: none dropped, however late the speaker starts
    threads = [threading.Thread(target=lambda n=n: [w.say(f"thread {n} item {i} word{n}x{i}", force=True)
                                                     for i in range(each)]) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert w.drain(10) and len(voice.said) == 4 * each
    w.close()
