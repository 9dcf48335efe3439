"""`edgecap narrate` controlled from outside: the control socket, the keyboard, and no torch needed."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from edgecap.narration.controls import send_command

REPO = Path(__file__).resolve().parents[1]


def read_log(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_cli_takes_commands_over_a_socket(tiny_bundle, tmp_path, photo_paths):
    slides = tmp_path / "slides"
    slides.mkdir()
    for p in photo_paths[:2]:
        (slides / p.name).write_bytes(p.read_bytes())
    sock, log = tmp_path / "ctl.sock", tmp_path / "log.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "edgecap", "narrate", "--images", slides, "--loop", "--realtime",
                             "--model", tiny_bundle, "--speech", "none", "--log-json", log, "--control-socket", sock],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and any(r["kind"] == "caption" for r in read_log(log))):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.1)
        assert send_command(sock, "describe") == "ok"
        assert send_command(sock, "repeat") == "ok"
        assert send_command(sock, "dance").startswith("error")
        time.sleep(1.0)
        assert send_command(sock, "quit") == "ok"
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    records = read_log(log)
    controls = [r["text"] for r in records if r["kind"] == "control"]
    assert controls == ["describe", "repeat", "quit"]
    assert any(r.get("forced") for r in records if r["kind"] == "caption")
    assert not sock.exists()


def test_cli_quits_on_q_from_the_keyboard(tiny_bundle, tmp_path, photo_paths):
    import pty

    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / "a.jpg").write_bytes(photo_paths[0].read_bytes())
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "edgecap", "narrate", "--images", slides, "--loop", "--realtime",
                             "--model", tiny_bundle, "--speech", "none"], stdin=slave, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    os.close(slave)
    try:
        time.sleep(3)
        os.write(master, b"q")
        assert proc.wait(10) == 0
        assert "keys: space describe" in proc.stderr.read()
    finally:
        proc.kill()
        os.close(master)


def test_runtime_modules_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import edgecap.narration.narrate, edgecap.narration.frames, edgecap.narration.scene, edgecap.audio.speech, edgecap.narration.controls\n"
            "from edgecap.cli import build_parser\n"
            "assert 'narrate' in build_parser().format_help()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
