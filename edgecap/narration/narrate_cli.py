"""The `edgecap narrate` command: open the source, load the model, start speech and controls
around a `Narrator` (edgecap.narration.narrate); several sources go to edgecap.narration.streams."""
from __future__ import annotations

import logging
import signal
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

from edgecap.audio.repeats import REPEAT_THRESHOLD
from edgecap.audio.speech import SpeechWorker
from edgecap.audio.speech_output import narration_engine
from edgecap.audio.tones import TonePlayer
from edgecap.audio.voices import make_voice
from edgecap.cli_args import add_decoding_args, add_model_args, decoding_options, load_captioner
from edgecap.narration.frames import FrameSourceError, open_source, parse_size
from edgecap.narration.narrate import CHANNELS, EventLog, NarrateOptions, Narrator
from edgecap.narration.scene import SceneOptions

log = logging.getLogger("edgecap")


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("narrate", help="describe the camera view out loud whenever it changes",
                              description="Describe what is in front of the camera, only when it changes.")
    where = p.add_mutually_exclusive_group(required=True)
    # Each may be repeated: several sources share one loaded model (edgecap.narration.streams).
    where.add_argument("--camera", type=int, metavar="N", action="append", help="OpenCV camera index")
    where.add_argument("--video", type=Path, metavar="FILE", action="append", help="a video file")
    where.add_argument("--images", type=Path, metavar="DIR", action="append",
                       help="a slideshow of the photos in a folder")
    p.add_argument("--camera-size", type=parse_size, metavar="WxH", help="ask the camera for this resolution")
    p.add_argument("--camera-fps", type=float, help="ask the camera for this frame rate")
    p.add_argument("--seconds-per-image", type=float, default=3.0, help="slideshow: seconds per photo")
    p.add_argument("--slideshow-fps", type=float, default=5.0)
    p.add_argument("--loop", action="store_true", help="play the video or slideshow again and again")
    p.add_argument("--realtime", action="store_true",
                   help="play files at their own speed (default: as fast as captioning allows)")
    p.add_argument("--duration", type=float, help="stop after this many seconds of source time")
    p.add_argument("--channel", choices=[*CHANNELS, "color"], default="scene",
                   help="scene: captions; light: a tone that rises with brightness; colour: the colour at the centre; "
                        "text: reads new text aloud when it comes into view")
    p.add_argument("--speech", choices=["auto", "pyttsx3", "espeak", "none"], default="auto",
                   help="speech engine (none: print only)")
    p.add_argument("--rate", type=int, default=175, help="words per minute")
    p.add_argument("--speech-wav-dir", type=Path, metavar="DIR",
                   help="write every utterance (and tone) to a WAV file here instead of playing it")
    p.add_argument("--log-json", type=Path, metavar="FILE", help="append one JSON object per event")
    p.add_argument("--control-socket", type=Path, metavar="PATH",
                   help="accept commands (describe, repeat, read, stop, faster, slower, mute, unmute, quit) here")
    p.add_argument("--no-keyboard", action="store_true", help="ignore key presses in the terminal")
    p.add_argument("--quiet", action="store_true", help="do not print what is said")
    p.add_argument("--scene-threshold", type=float, default=SceneOptions.semantic_threshold,
                   help="cosine distance of encoder features that counts as a new scene")
    p.add_argument("--stable-seconds", type=float, default=SceneOptions.stable_seconds,
                   help="a new view must hold still this long before it is described")
    p.add_argument("--repeat-threshold", type=float, default=REPEAT_THRESHOLD,
                   help="word overlap (0-1) at which a caption counts as a repeat and is not said")
    add_model_args(p)
    add_decoding_args(p)
    p.set_defaults(func=cmd_narrate)


def cmd_narrate(args) -> int:
    from edgecap.narration.streams import narrate_streams, single_source, source_count

    if source_count(args) > 1:
        return narrate_streams(args)
    args = single_source(args)
    channel = "colour" if args.channel == "color" else args.channel
    engine = narration_engine(args.speech, args.speech_wav_dir)
    with ExitStack() as cleanup:
        try:
            # The source first: a wrong path or camera number should not wait for the model.
            source = open_source(args)
            cleanup.callback(source.close)
            captioner = decoding = None
            if channel == "scene":
                captioner = load_captioner(args)
                decoding = decoding_options(args, captioner)
            narrator, speech = _start_narrator(args, channel, engine, source, captioner, decoding, cleanup)
        except (FrameSourceError, OSError) as exc:
            print(f"edgecap: error: {exc}", file=sys.stderr)
            return 2
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: narrator.quit())
        try:
            narrator.run()
        except KeyboardInterrupt:
            narrator.quit()
        if not narrator.quit_requested:
            speech.drain()  # every utterance has its own time limit, so this ends
    return 0


def _start_narrator(args, channel, engine, source, captioner, decoding, cleanup: ExitStack):
    """The event log, speech, tones and controls around a Narrator; `cleanup` closes them
    in reverse order (controls first, the log last)."""
    from edgecap.narration.controls import KEY_HELP, KeyboardControl, SocketControl

    events = EventLog(args.log_json)
    cleanup.callback(events.close)
    echo = None if args.quiet else (lambda u: print(u.text, flush=True))
    speech = SpeechWorker(make_voice(engine), rate=args.rate, replace_pending=source.live,
                          repeat_threshold=args.repeat_threshold, wav_dir=args.speech_wav_dir, on_event=events,
                          echo=echo)
    cleanup.callback(speech.close)
    tones = None
    if channel == "light":
        tones = TonePlayer(args.speech_wav_dir)
        cleanup.callback(tones.close)
    narrator = Narrator(source, captioner, decoding, speech, events,
                        SceneOptions(semantic_threshold=args.scene_threshold, stable_seconds=args.stable_seconds),
                        NarrateOptions(channel=channel, duration=args.duration), tones)
    if args.control_socket:
        sock = SocketControl(args.control_socket, narrator.command)
        sock.start()
        cleanup.callback(sock.close)
    if not args.no_keyboard:
        keys = KeyboardControl(narrator.command)
        if keys.start():
            cleanup.callback(keys.close)
            print(KEY_HELP, file=sys.stderr)
    return narrator, speech
