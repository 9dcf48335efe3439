"""The caption command, the control socket, video sources and speech under hostile or broken input."""
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecap.audio.speech import SpeechWorker
from edgecap.audio.speech_output import OutputCheck, check_output
from edgecap.audio.voices import ProcessVoice, SpeechError, espeak_binary, returned_too_soon, speak
from edgecap.core.image import INCOMPLETE_MESSAGE
from edgecap.narration.controls import SocketControl, send_command
from edgecap.narration.frames import VideoSource

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
HAS_MODEL = (REPO / "models" / "edgecap-base" / "manifest.json").is_file()


def edgecap(*args, **kw):
    return subprocess.run([sys.executable, "-m", "edgecap", *args], capture_output=True, timeout=300, cwd=REPO, **kw)


# --- caption: every file on its own -------------------------------------------------------------
@pytest.mark.skipif(not HAS_MODEL, reason="models/edgecap-base not built")
def test_caption_reports_every_file_and_survives_the_worst_of_them(tmp_path):
    good = ASSETS / "coffee.jpg"
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    tricky = tmp_path / "line\nbreak.jpg"  # a newline must not fake an output line
    tricky.write_bytes(b"junk")
    latin1 = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")  # not UTF-8
    shutil.copyfile(ASSETS / "chelsea.jpg", latin1)
    flipped = bytearray(good.read_bytes())
    flipped[5000] ^= 0xFF
    (tmp_path / "flipped.jpg").write_bytes(bytes(flipped))
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:
        f.write(good.read_bytes())
        f.truncate(4 << 30)
    args = [str(good), str(fifo), str(tricky), os.fsdecode(latin1), str(tmp_path / "flipped.jpg"), str(huge),
            str(ASSETS / "rocket.jpg"), "--json"]
    wav = tmp_path / "said.wav"
    if espeak_binary():
        args += ["--speak-to", str(wav), "--speech", "espeak"]
    start = time.monotonic()
    proc = edgecap("caption", *args)
    assert time.monotonic() - start < 120
    assert proc.returncode == 1
    records = json.loads(proc.stdout)
    assert [r["status"] for r in records] == ["ok", "error", "error", "ok", "incomplete", "error", "ok"]
    assert records[2]["path"] == str(tricky).replace("\n", "\\n")
    assert records[3]["path"].endswith("caf\\xe9.jpg")
    assert records[4]["caption"] == INCOMPLETE_MESSAGE
    assert "not a regular file" in records[1]["message"] and "64 MB limit" in records[5]["message"]
    assert all(r["caption"] for r in records if r["status"] == "ok")
    assert len({r["ms"] for r in records if r["status"] == "ok"}) == 3  # each photo timed on its own
    errors = proc.stderr.decode().strip().splitlines()
    assert "Traceback" not in proc.stderr.decode()
    assert len(errors) == 4 and all(e.startswith("edgecap: error: ") for e in errors)
    for record, error in zip([r for r in records if r["status"] != "ok"], errors):
        assert record["path"] in error  # every error names its file
    if espeak_binary():
        with wave.open(str(wav)) as w:
            assert w.getnframes() / w.getframerate() > 3.0  # three captions, one unreadable notice each


@pytest.mark.skipif(not HAS_MODEL, reason="models/edgecap-base not built")
def test_caption_piped_into_head_ends_quietly():
    photos = [str(p) for p in sorted(ASSETS.glob("*.jpg"))]
    proc = subprocess.Popen([sys.executable, "-m", "edgecap", "caption", *photos],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    first = proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(120) != 0 and first
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_speech_options_that_cannot_work_exit_2_before_anything_is_loaded():
    proc = edgecap("caption", str(ASSETS / "coffee.jpg"), "--speech", "bogus")
    assert proc.returncode == 2 and b"invalid choice: 'bogus'" in proc.stderr
    proc = edgecap("caption", str(ASSETS / "coffee.jpg"), "--speak", "--speech", "none")
    assert proc.returncode == 2 and proc.stderr.decode().strip() == (
        "edgecap: error: --speak needs a voice, but --speech none turns speech off")
    check = check_output("auto", synthesize=False)
    if not check.ok:  # this machine cannot be heard: --speak must say so, not succeed in silence
        proc = edgecap("caption", str(ASSETS / "coffee.jpg"), "--speak")
        assert proc.returncode == 2 and proc.stdout == b""
        assert proc.stderr.decode().strip() == (f"edgecap: error: cannot speak: {check.reason} "
                                                "(--speak-to FILE.wav writes the speech to a file instead)")


# --- speech: heard or said to be unheard -------------------------------------------------------
def test_output_check_looks_for_a_device_that_can_play(tmp_path):
    asound = tmp_path / "asound"
    asound.mkdir()
    (asound / "pcm").write_text("00-00: HDMI 0 : HDMI 0 : capture 1\n")
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    if not sys.platform.startswith("linux"):
        pytest.skip("the device check reads Linux /proc/asound")
    from edgecap.audio.speech_output import audio_output_device
    assert audio_output_device(asound, env=env) is None  # capture only: nothing can play
    (asound / "pcm").write_text("00-00: ALC892 Analog : ALC892 Analog : playback 1 : capture 1\n")
    assert "ALSA device 00-00" in audio_output_device(asound, env=env)
    assert check_output("none") == OutputCheck(False, "none", "speech is turned off (--speech none)")
    assert not check_output("klingon").ok and "unknown speech engine" in check_output("klingon").reason
    if espeak_binary():
        found = check_output("espeak", asound=asound, env=env)
        assert found.ok and found.engine == "espeak" and "ALSA device 00-00" in found.reason
        (asound / "pcm").write_text("")
        lost = check_output("espeak", asound=asound, env=env)
        assert not lost.ok and "no audio output device" in lost.reason


def test_an_utterance_that_ends_at_once_was_not_heard():
    assert returned_too_soon("A dog is sleeping on a sofa next to the window.", 175, 0.02)
    assert returned_too_soon("A dog is sleeping on a sofa next to the window.", 175, 2.5) is None
    assert returned_too_soon("Ok.", 175, 0.01) is None  # too short to judge


@pytest.mark.skipif(not espeak_binary(), reason="espeak-ng is not installed")
def test_espeak_without_a_sound_card_is_a_failure_not_a_success(tmp_path):
    if check_output("espeak", synthesize=False).ok:
        pytest.skip("this machine has an audio output")
    with pytest.raises(SpeechError, match="no audio was played"):
        speak("A dog is sleeping on a sofa next to the window.", "espeak")
    events = []
    worker = SpeechWorker(ProcessVoice("espeak"), replace_pending=False,
                          on_event=lambda kind, text, t, **f: events.append((kind, text)))
    for text in ("A dog is sleeping on a sofa by the window.", "Two people ride bicycles down a busy street.",
                 "A plate of food with broccoli and rice on it."):
        worker.say(text)
    assert worker.drain(30)
    worker.close()
    faults = [text for kind, text in events if kind == "fault"]
    assert any("no audio was played" in f for f in faults)
    assert faults[-1] == "speech engine keeps failing; text only from now on"


# --- the control socket ---------------------------------------------------------------------------
def test_two_thousand_idle_clients_do_not_stop_commands(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2300:
        pytest.skip(f"file descriptor limit {hard} is below 2,300")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2300), hard))
    got = []
    control = SocketControl(tmp_path / "ctl.sock", got.append, max_clients=16, idle_timeout=5.0)
    control.start()
    idle = []
    try:
        while len(idle) < 2000:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(tmp_path / "ctl.sock"))
            except BlockingIOError:  # the listen backlog is full for a moment: come back, as a flood does
                s.close()
                time.sleep(0.01)
                continue
            idle.append(s)
        assert send_command(tmp_path / "ctl.sock", "describe") == "ok"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(tmp_path / "ctl.sock"))
            s.settimeout(2)
            s.sendall(b"x" * 5000)  # no newline: not a command channel
            assert s.recv(100).startswith(b"error: line too long")
        assert send_command(tmp_path / "ctl.sock", "repeat") == "ok"
        assert got == ["describe", "repeat"]
        assert control.clients <= 16 and control.stats["evicted"] >= 1900
        assert control._thread.is_alive()
    finally:
        for s in idle:
            s.close()
        control.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_idle_clients_are_hung_up_on(tmp_path):
    control = SocketControl(tmp_path / "ctl.sock", lambda word: None, idle_timeout=0.3)
    control.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(tmp_path / "ctl.sock"))
            s.settimeout(3)
            assert s.recv(10) == b""  # closed by the server
        assert control.stats["timed_out"] == 1
    finally:
        control.close()


# --- video -----------------------------------------------------------------------------------------
def test_the_good_frame_after_a_corrupt_one_is_kept_with_its_own_time(tmp_path):
    frames = []
    for i in range(10):
        im = np.zeros((120, 160, 3), np.uint8)
        im[..., 1] = 20 * i
        cv2.putText(im, str(i), (40, 90), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 5)
        frames.append(im)
    writer = cv2.VideoWriter(str(tmp_path / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for im in frames:
        writer.write(im)
    writer.release()
    data = bytearray((tmp_path / "v.avi").read_bytes())
    starts = [i for i in range(len(data) - 3) if data[i:i + 3] == b"\xff\xd8\xff"]
    data[starts[4]:starts[4] + 400] = bytes(400)  # frame 4 cannot be decoded
    (tmp_path / "bad.avi").write_bytes(bytes(data))
    with VideoSource(tmp_path / "bad.avi") as source:
        read = []
        while (frame := source.read()) is not None:
            read.append(frame)
    assert [f.index for f in read] == list(range(10))
    assert [f.problem for f in read] == [None] * 4 + ["corrupt"] + [None] * 5
    for f in read:
        if f.rgb is not None:
            assert abs(int(f.rgb[:20, :20, 1].mean()) - 20 * f.index) <= 3, f.index  # the picture of that instant
            assert f.t == pytest.approx(f.index / 10)
