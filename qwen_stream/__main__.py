"""Command line: `python -m qwen_stream say "TEXT" --model-path DIR --out out.wav`.

`say` runs the same engine and streaming decoder as the server, so the WAV holds exactly the bytes a
stream would carry."""

from __future__ import annotations

import argparse
import logging
import sys
import wave
from pathlib import Path

from .config import ServerSettings, add_options, options
from .settings import SAMPLE_RATE, EngineSettings, ModelSettings

# The server's options that `say` shares: taken from the settings table, so flag, type, default and help
# are declared once. `say` reads no environment, so the rows' variables are not shown.
SHARED_OPTIONS = ("chunk_size", "first_chunk_size", "decode", "left_context", "device", "dtype")


def _say_parser(sub) -> None:
    p = sub.add_parser(
        "say", help="speak TEXT into a WAV file through the streaming engine, or a script or segments into a file"
    )
    p.add_argument("text", nargs="?", help="what to say (or give --script or --segments)")
    long_form = p.add_argument_group("long form (run as a job; the format follows --out's extension)")
    long_form.add_argument("--script", help="a dialogue file: one [Speaker] line per line")
    long_form.add_argument("--segments", help="a JSON file: [{text, voice?, language?, instruct?}, ...]")
    long_form.add_argument("--voices", help="script speakers to voices: Host=Ryan,Guest=Vivian")
    long_form.add_argument("--pause-ms", type=int, default=300, help="silence between segments (default 300)")
    p.add_argument("--model-path", required=True, help="checkpoint directory or hub id")
    p.add_argument("--out", required=True, help="output path (.wav for TEXT; .wav .mp3 .flac .opus... for a script)")
    p.add_argument("--language", default="Auto")
    voice = p.add_mutually_exclusive_group()
    voice.add_argument("--speaker", help="built-in speaker (CustomVoice models)")
    voice.add_argument("--ref-audio", help="reference audio file to clone (Base models)")
    p.add_argument("--ref-text", help="transcript of --ref-audio (ICL mode); without it, x-vector mode")
    p.add_argument("--instruct", help="voice description (VoiceDesign) or style instruction (CustomVoice 1.7B)")
    p.add_argument("--seed", type=int)
    add_options(p, [row for row in options() if row.name in SHARED_OPTIONS], show_env=False)
    p.add_argument("--max-frames", type=int, help="stop after this many frames (default: by text length)")
    p.add_argument("--codes-out", help="also save the generated frames as an int array (frames, 16) .npy")


def say_settings(args) -> ServerSettings:
    """The shared options given on the command line over the table's defaults, validated as the server's are."""
    given = {name: getattr(args, name) for name in SHARED_OPTIONS if getattr(args, name) is not None}
    return ServerSettings(**given)


def _say(args, settings: ServerSettings) -> int:
    import numpy as np

    from .cloning import clone_prompt, read_audio
    from .engine import Engine, collect
    from .generation import SynthesisRequest, Voice
    from .model import load_model

    model_settings = ModelSettings(path=args.model_path, device=settings.device, dtype=settings.dtype)
    model = load_model(model_settings)
    if args.ref_audio:
        samples, rate = read_audio(Path(args.ref_audio).read_bytes())
        voice = Voice(clone=clone_prompt(model, samples, rate, args.ref_text))
    else:
        speaker = args.speaker
        if speaker is None and model.family == "custom_voice":
            speaker = model.speakers[0]
        voice = Voice(speaker=speaker, instruct=args.instruct)
    request = SynthesisRequest(
        text=args.text, language=args.language, voice=voice, seed=args.seed, max_frames=args.max_frames
    )
    engine = Engine(model, EngineSettings(model=model_settings, streaming=settings.streaming()))
    try:
        pcm, end = collect(engine.stream(request, keep_codes=bool(args.codes_out)))
        with wave.open(args.out, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(SAMPLE_RATE)
            wav.writeframes(pcm)
        if args.codes_out:
            assert end.codes is not None  # kept: keep_codes was set
            np.save(args.codes_out, end.codes.numpy().astype(np.int64))
        stats = end.stats
        print(
            f"{args.out}: {stats.frames} frames, {stats.audio_seconds:.2f} s audio, first chunk "
            f"{(stats.engine_ttfb or 0) * 1000:.0f} ms, RTF {stats.rtf or 0:.2f} ({end.outcome})"
        )
    finally:
        engine.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qwen_stream", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _say_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    given = [name for name in ("text", "script", "segments") if getattr(args, name)]
    if len(given) != 1:
        print("error: give exactly one of TEXT, --script or --segments", file=sys.stderr)
        return 2
    try:
        # Checked before the model loads, and reported as the server reports a bad flag.
        settings = say_settings(args)
        if args.text is None:
            from .say_long import job_input

            job_input(args)  # the files and flags, read and checked before anything loads
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from .cloning import VoiceError
    from .generation import SynthesisError
    from .model import ModelLoadError
    from .speech.errors import InvalidRequest

    try:
        if args.text is None:
            from .say_long import say_long

            return say_long(args, settings)
        return _say(args, settings)
    except (ModelLoadError, SynthesisError, VoiceError, OSError, InvalidRequest, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
