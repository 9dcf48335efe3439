"""Narrate for a minute under strace with 2,000 idle clients on the control socket.

    python bench/offline.py                  # 60 s of narration of the example photos
    python bench/offline.py --seconds 600    # the issue's 10-minute soak

Prints the issue's figures: Internet (AF_INET/AF_INET6) sockets opened (target 0), whether
onnxruntime wrote under ~/.cache/Microsoft, idle clients held open, whether "describe" still
answered and captions kept coming after the flood, false "Camera lost." cues, and the exit
status. ORT_DISABLE_TELEMETRY is removed from the environment: edgecap must set it itself.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # tests/socket_flood.py: the same flood the test uses

from edgecap.narration.controls import send_command  # noqa: E402
from socket_flood import idle_clients  # noqa: E402  (tests/)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--clients", type=int, default=2000)
    p.add_argument("--model", default=None)
    args = p.parse_args(argv)
    if not shutil.which("strace"):
        print("strace is not installed (apt-get install strace)")
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.clients + 500)), hard))
    with tempfile.TemporaryDirectory(prefix="edgecap-offline-") as tmp:
        tmp = Path(tmp)
        slides, home = tmp / "slides", tmp / "home"
        slides.mkdir()
        home.mkdir()
        for photo in sorted((REPO / "assets").glob("*.jpg")):
            shutil.copyfile(photo, slides / photo.name)
        trace, log, sock = tmp / "strace.txt", tmp / "log.jsonl", tmp / "ctl.sock"
        env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
        env.update(HOME=str(home), PYTHONPATH=str(REPO))
        cmd = ["strace", "-f", "-qq", "-e", "trace=socket", "-o", str(trace), sys.executable, "-m", "edgecap",
               "narrate", "--images", str(slides), "--loop", "--realtime", "--seconds-per-image", "3",
               "--duration", str(args.seconds), "--speech", "none", "--quiet", "--no-keyboard",
               "--log-json", str(log), "--control-socket", str(sock)]
        if args.model:
            cmd += ["--model", args.model]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        idle: list[socket.socket] = []
        answered = None
        try:
            while not (log.exists() and "caption" in log.read_text()) and proc.poll() is None:
                time.sleep(0.2)
            idle = idle_clients(sock, args.clients, lambda: proc.poll() is None)
            flooded_at = time.time()
            answered = send_command(sock, "describe", timeout=10)
            rc = proc.wait(args.seconds + 300)
        finally:
            for s in idle:
                s.close()
            proc.kill()
        wall = time.monotonic() - start
        records = [json.loads(line) for line in log.read_text().splitlines()]
        inet = [line for line in trace.read_text().splitlines() if "AF_INET" in line]
        report = {
            "narration_s": records[-1]["t"] if records else 0, "wall_s": round(wall, 1), "exit_status": rc,
            "inet_sockets": len(inet), "all_sockets": len(trace.read_text().splitlines()),
            "ms_telemetry_dir_written": (home / ".cache" / "Microsoft").exists(),
            "idle_clients_held": len(idle), "describe_answer": answered,
            "captions_after_flood": sum(1 for r in records if r["kind"] == "caption" and r["wall"] > flooded_at),
            "camera_lost_cues": sum(1 for r in records if r["kind"] == "cue" and r.get("cue") == "camera_lost"),
            "stderr": proc.stderr.read().decode(errors="replace")[-500:],
        }
    print(json.dumps(report, indent=2))
    met = (report["inet_sockets"] == 0 and not report["ms_telemetry_dir_written"] and rc == 0
           and answered == "ok" and report["captions_after_flood"] > 0 and report["camera_lost_cues"] == 0)
    print("targets met" if met else "targets MISSED")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
