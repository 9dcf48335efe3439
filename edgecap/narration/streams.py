"""Several cameras (or videos, or slideshows) narrated by one process with one loaded model.

`edgecap narrate --camera 0 --camera 2` runs one Narrator per source, each on its own thread
with its own capture, scene gate and event log (`--log-json x.jsonl` becomes x.cam1.jsonl,
x.cam2.jsonl ...), all calling one shared captioner. One voice says everything, one sentence
at a time, each prefixed with the camera it is about ("Camera 2: a man riding a bike.").
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

from edgecap.audio.speech import SpeechWorker
from edgecap.audio.speech_output import narration_engine
from edgecap.audio.voices import make_voice
from edgecap.cli_args import decoding_options, load_captioner
from edgecap.core.shared_captioner import SharedCaptioner
from edgecap.narration.controls import KEY_HELP, KeyboardControl, SocketControl
from edgecap.narration.frames import FrameSourceError, open_source
from edgecap.narration.narrate import EventLog, NarrateOptions, Narrator
from edgecap.narration.scene import SceneOptions

log = logging.getLogger("edgecap")

SOURCE_KINDS = ("camera", "video", "images")
# Commands every narrator gets; the rest act on the one shared voice and are sent once.
BROADCAST = ("describe", "quit")


class LabelledSpeech:
    """A narrator's handle on the shared voice: everything it says starts with its label."""

    def __init__(self, worker, label: str):
        self._worker = worker
        self.label = label

    def say(self, text: str, kind: str = "caption", t: float = 0.0, force: bool = False) -> str:
        return self._worker.say(f"{self.label}: {text}", kind, t, force)

    def __getattr__(self, name):
        return getattr(self._worker, name)


def _given(args, kind) -> list:
    value = getattr(args, kind, None)
    return [] if value is None else value if isinstance(value, list) else [value]


def source_count(args) -> int:
    return sum(len(_given(args, kind)) for kind in SOURCE_KINDS)


def single_source(args) -> argparse.Namespace:
    """The arguments with the one source as a plain value (as open_source expects)."""
    values = dict(vars(args))
    for kind in SOURCE_KINDS:
        given = _given(args, kind)
        values[kind] = given[0] if given else None
    return argparse.Namespace(**values)


def split_sources(args) -> list[argparse.Namespace]:
    """One set of arguments per source, in the order given on the command line."""
    out = []
    for kind in SOURCE_KINDS:
        for value in _given(args, kind):
            values = {**vars(args), **{k: None for k in SOURCE_KINDS}}
            values[kind] = value
            out.append(argparse.Namespace(**values))
    return out


def stream_log_path(path: Path | None, label: str) -> Path | None:
    """x.jsonl -> x.cam1.jsonl for stream "cam1"."""
    return None if path is None else path.with_name(f"{path.stem}.{label}{path.suffix or '.jsonl'}")


class Router:
    """Hands command words to the narrators: describe and quit to all, voice commands once."""

    def __init__(self, narrators):
        self.narrators = narrators

    def __call__(self, word: str) -> None:
        targets = self.narrators if word in BROADCAST else self.narrators[:1]
        for narrator in targets:
            narrator.command(word)


def narrate_streams(args) -> int:
    """`edgecap narrate` with several sources: one model, one voice, a narrator per source."""
    channel = "colour" if args.channel == "color" else args.channel
    if channel != "scene":
        print("edgecap: error: several sources work with --channel scene only", file=sys.stderr)
        return 2
    engine = narration_engine(args.speech, args.speech_wav_dir)
    per_source = split_sources(args)
    with ExitStack() as cleanup:
        sources = []
        for i, one in enumerate(per_source, 1):
            try:
                source = open_source(one)
            except (FrameSourceError, OSError) as exc:
                # The other cameras are still narrated; this one is reported and left out.
                print(f"edgecap: error: source {i}: {exc}", file=sys.stderr)
                continue
            cleanup.callback(source.close)
            sources.append((i, source))
        if not sources:
            return 2
        captioner = SharedCaptioner(load_captioner(args))
        decoding = decoding_options(args, captioner)
        speech_log = EventLog(stream_log_path(args.log_json, "speech"))
        cleanup.callback(speech_log.close)
        echo = None if args.quiet else (lambda u: print(u.text, flush=True))
        # Nothing pending is dropped: with several streams a newer sentence may be about
        # another camera, not a newer view of the same one.
        voice = SpeechWorker(make_voice(engine), rate=args.rate, replace_pending=False,
                             repeat_threshold=args.repeat_threshold, wav_dir=args.speech_wav_dir,
                             on_event=speech_log, echo=echo)
        cleanup.callback(voice.close)
        narrators = []
        for i, source in sources:
            events = EventLog(stream_log_path(args.log_json, f"cam{i}"))
            cleanup.callback(events.close)
            narrators.append(Narrator(source, captioner, decoding, LabelledSpeech(voice, f"Camera {i}"), events,
                                      SceneOptions(semantic_threshold=args.scene_threshold,
                                                   stable_seconds=args.stable_seconds),
                                      NarrateOptions(channel=channel, duration=args.duration)))
        router = Router(narrators)
        if args.control_socket:
            sock = SocketControl(args.control_socket, router)
            sock.start()
            cleanup.callback(sock.close)
        if not args.no_keyboard:
            keys = KeyboardControl(router)
            if keys.start():
                cleanup.callback(keys.close)
                print(KEY_HELP, file=sys.stderr)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: router("quit"))
        run_all(narrators)
        if not any(n.quit_requested for n in narrators):
            voice.drain()
    return 0


def run_all(narrators) -> None:
    """Run every narrator on its own thread until all have ended (Ctrl-C quits them all)."""
    failures = []

    def run(narrator):
        try:
            narrator.run()
        except Exception as exc:  # noqa: BLE001 - one stream giving up must not end the others
            failures.append(exc)
            log.error("narration of %s ended: %s", narrator.source.name, exc)

    threads = [threading.Thread(target=run, args=(n,), name=f"edgecap-stream-{i}", daemon=True)
               for i, n in enumerate(narrators, 1)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.2)
    except KeyboardInterrupt:
        for narrator in narrators:
            narrator.quit()
        for thread in threads:
            thread.join(timeout=5)
