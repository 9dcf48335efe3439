"""Offline means offline: a narration long enough to trigger onnxruntime's telemetry (~9.5 s, run >= 16 s)
opens no AF_INET/AF_INET6 socket and writes nothing under ~/.cache/Microsoft, and 2,000 idle
control-socket clients do not stop it."""
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgecap.narration.controls import send_command
from socket_flood import idle_clients

REPO = Path(__file__).resolve().parents[1]
HAS_MODEL = (REPO / "models" / "edgecap-base" / "manifest.json").is_file()

# Loaded by the child through PYTHONPATH: records every Internet socket Python code creates.
SOCKET_GUARD = '''
import os, socket
_real = socket.socket
class _Guarded(_real):
    def __init__(self, family=-1, *args, **kwargs):
        if family in (socket.AF_INET, socket.AF_INET6):
            with open(os.environ["EDGECAP_SOCKET_GUARD"], "a") as f:
                f.write(f"python socket family {family}\\n")
        super().__init__(family, *args, **kwargs)
socket.socket = _Guarded
'''


def strace_works() -> bool:
    if not shutil.which("strace"):
        return False
    return subprocess.run(["strace", "-f", "-e", "trace=socket", "-o", os.devnull, "true"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not HAS_MODEL, reason="models/edgecap-base not built")
def test_a_long_narration_opens_no_network_socket_and_outlives_a_client_flood(tmp_path):
    slides = tmp_path / "slides"
    slides.mkdir()
    for photo in sorted((REPO / "assets").glob("*.jpg")):
        shutil.copyfile(photo, slides / photo.name)
    home, guard_dir = tmp_path / "home", tmp_path / "guard"
    home.mkdir()
    guard_dir.mkdir()
    (guard_dir / "sitecustomize.py").write_text(SOCKET_GUARD)
    guard_log, trace, log, sock = tmp_path / "guard.txt", tmp_path / "strace.txt", tmp_path / "log.jsonl", \
        tmp_path / "ctl.sock"
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}  # edgecap must set it itself
    env.update(HOME=str(home), PYTHONPATH=os.pathsep.join([str(guard_dir), str(REPO)]),
               EDGECAP_SOCKET_GUARD=str(guard_log))
    cmd = [sys.executable, "-m", "edgecap", "narrate", "--images", str(slides), "--loop", "--realtime",
           "--seconds-per-image", "2", "--duration", "300", "--speech", "none", "--quiet", "--no-keyboard",
           "--log-json", str(log), "--control-socket", str(sock)]
    traced = strace_works()
    if traced:
        cmd = ["strace", "-f", "-qq", "-e", "trace=socket", "-o", str(trace), *cmd]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    flood = min(2000, (hard if hard != resource.RLIM_INFINITY else 4096) - 200)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, flood + 200), hard))
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    idle = []

    def wait_for(condition):
        deadline = time.monotonic() + 150
        while not condition():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
            time.sleep(0.2)

    try:
        wait_for(lambda: log.exists() and "caption" in log.read_text())
        idle += idle_clients(sock, flood, lambda: proc.poll() is None)
        flooded_at = time.time()
        assert send_command(sock, "describe", timeout=5) == "ok"
        # Captions go on after the flood, for at least 16 s in all: onnxruntime looks up its
        # telemetry host ~9.5 s into a run.
        wait_for(lambda: time.monotonic() - started >= 16 and any(
            json.loads(line)["kind"] == "caption" and json.loads(line)["wall"] > flooded_at
            for line in log.read_text().splitlines()))
        assert send_command(sock, "quit", timeout=5) == "ok"
        assert proc.wait(60) == 0, proc.stderr.read().decode()
    finally:
        for s in idle:
            s.close()
        proc.kill()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[-1]["kind"] == "end" and time.monotonic() - started >= 16
    assert not [r for r in records if r["kind"] == "cue" and r.get("cue") == "camera_lost"]
    assert [r for r in records if r["kind"] == "control" and r["text"] == "describe"]
    assert [r for r in records if r["kind"] == "caption" and r["wall"] > flooded_at], "narration stopped"
    assert flood == 2000 or hard < 2200
    assert not guard_log.exists(), guard_log.read_text()
    if traced:
        inet = [line for line in trace.read_text().splitlines() if "AF_INET" in line]
        assert not inet, inet[:3]
    assert not (home / ".cache" / "Microsoft").exists()
