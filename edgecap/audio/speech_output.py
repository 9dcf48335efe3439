"""Can speech be heard here? An engine, audio from it, and a device to play it on.

espeak-ng and pyttsx3 exit with status 0 and say nothing when there is no sound card, so
a blind user would get silence that looks like success. `check_output` is asked first:
`edgecap caption --speak` refuses to start without a voice that can be heard, narration
prints a warning, and `edgecap doctor` reports it.
"""
from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OutputCheck:
    ok: bool
    engine: str  # the engine that would speak ("none" when there is none)
    reason: str  # one line: what was found, or why nothing will be heard


def audio_output_device(asound: Path = Path("/proc/asound"), runtime_dir: str | None = None,
                        env: dict | None = None) -> str | None:
    """Where sound would go on this machine, or None when nothing can play it.

    Linux: a PulseAudio/PipeWire server (what espeak-ng tries first), else an ALSA card
    with a playback device. Other systems always have a default output as far as edgecap
    can tell.
    """
    if not sys.platform.startswith("linux"):
        return "the system's default output"
    env = os.environ if env is None else env
    if env.get("PULSE_SERVER"):
        return f"the sound server at {env['PULSE_SERVER']}"
    runtime = Path(runtime_dir or env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}")
    for name in ("pulse/native", "pipewire-0"):
        if (runtime / name).is_socket():
            return f"the sound server at {runtime / name}"
    try:
        pcm = (asound / "pcm").read_text(errors="replace")
    except OSError:
        pcm = ""
    for line in pcm.splitlines():
        if "playback" in line:
            return f"ALSA device {line.split(':')[0].strip()} ({line.split(':')[1].strip() if ':' in line else ''})"
    return None


def check_output(engine: str = "auto", *, synthesize: bool = True, asound: Path = Path("/proc/asound"),
                 runtime_dir: str | None = None, env: dict | None = None) -> OutputCheck:
    """Can `engine` be heard here? An engine must exist, must turn a word into audio (a
    short WAV is written and checked when `synthesize`), and an output device must exist."""
    from edgecap.audio.voices import SpeechError, pick_engine, speak

    try:
        name = pick_engine(engine)
    except SpeechError as exc:
        return OutputCheck(False, engine, str(exc))
    if name == "none":
        if engine == "none":
            return OutputCheck(False, "none", "speech is turned off (--speech none)")
        return OutputCheck(False, "none", "no speech engine is installed (install espeak-ng)")
    device = audio_output_device(asound, runtime_dir, env)
    if device is None:
        return OutputCheck(False, name, "no audio output device: no sound card that can play in "
                                        f"{asound}, no PulseAudio/PipeWire server")
    if synthesize:
        with tempfile.TemporaryDirectory(prefix="edgecap-speech-") as tmp:
            try:
                speak("Ready.", name, wav=Path(tmp) / "check.wav", timeout=20.0)
            except SpeechError as exc:
                return OutputCheck(False, name, f"{name} cannot make audio: {exc}")
    return OutputCheck(True, name, f"{name} speaks through {device}")


def narration_engine(choice: str, wav_dir) -> str:
    """The engine narration speaks with: "none", with a warning, when none is found or what it
    says could not be heard (a WAV folder is a place that hears everything)."""
    import logging

    from edgecap.audio.voices import pick_engine

    log = logging.getLogger("edgecap")
    engine = pick_engine(choice)
    if engine == "none" and choice == "auto":
        log.warning("no speech engine found (install espeak-ng); printing only")
    elif engine != "none" and wav_dir is None:
        heard = check_output(engine)  # never silence that looks like success
        if not heard.ok:
            log.warning("speech cannot be heard: %s; printing only", heard.reason)
            engine = "none"
    return engine
