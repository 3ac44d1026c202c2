"""Command line for the engines: one portrait and one voice clip in, one talking-head mp4 out.

    python SadTalker/inference.py --source_image face.png --driven_audio speech.wav [--preprocess full --still]
    python SadTalker/inference.py --engine ditto --source_image face.png --driven_audio speech.wav

The original SadTalker's options (its inference.py), plus --seed, --idle_seconds, --engine and --ditto_dir. Prints
the video's path.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":  # first, before threads and large imports: glibc reads malloc tunables at start-up
    from dataclasses import replace as _replace

    from sadtalker.runtime.malloc_tuning import reexec_with_tunables
    from sadtalker.service.settings import ServiceSettings

    _settings = ServiceSettings.from_env()
    reexec_with_tunables(_replace(_settings, device="cpu") if "--cpu" in sys.argv[1:] else _settings)

logger = logging.getLogger("sadtalker.inference")

PREPROCESS_CHOICES = ("crop", "extcrop", "resize", "full", "extfull")
PRECISION_CHOICES = ("fp32", "tf32", "fp16", "bf16")
ENGINE_CHOICES = ("sadtalker", "ditto", "landmark", "auto")
EXIT_USAGE = 2   # bad options or input files (argparse uses 2 as well)
EXIT_FAILURE = 1  # missing checkpoints, no face, ffmpeg failure


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inference.py", description="Make a talking-head video from one portrait and a voice clip (SadTalker).")
    p.add_argument("--source_image", required=True, help="portrait picture (png, jpg, ...)")
    p.add_argument("--driven_audio", help="voice clip (wav, mp3, m4a, ...); not needed with --idle_seconds")
    p.add_argument("--ref_eyeblink", help="reference video whose eye blinks are copied")
    p.add_argument("--ref_pose", help="reference video whose head pose is copied")
    p.add_argument("--checkpoint_dir", help="folder of the SadTalker weights (default: $SADTALKER_CHECKPOINTS, else "
                                            "checkpoints/ of the repo)")
    p.add_argument("--ditto_dir", help="folder of the Ditto release (ditto_pytorch/, ditto_cfg/; default: "
                                       "$SADTALKER_DITTO_CHECKPOINTS, else checkpoints/ditto/ of the repo)")
    p.add_argument("--result_dir", default="./results", help="folder for the video (default ./results)")
    p.add_argument("--pose_style", type=int, default=0, help="head motion style, 0..45")
    p.add_argument("--batch_size", type=int, default=2, help="frames per renderer forward pass")
    p.add_argument("--size", type=int, default=256, choices=(256, 512), help="face renderer resolution")
    p.add_argument("--expression_scale", type=float, default=1.0, help="strength of the expressions, 0..3")
    p.add_argument("--input_yaw", nargs="+", type=float, help="fixed head yaw in degrees; several are visited in turn")
    p.add_argument("--input_pitch", nargs="+", type=float, help="fixed head pitch in degrees")
    p.add_argument("--input_roll", nargs="+", type=float, help="fixed head roll in degrees")
    p.add_argument("--enhancer", choices=("gfpgan",), help="face enhancer (gfpgan; RestoreFormer is not provided)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when CUDA is available")
    p.add_argument("--precision", choices=PRECISION_CHOICES, help="fp32 (exact, default; $SADTALKER_PRECISION), tf32, "
                                                                  "fp16 or bf16 (CUDA)")
    p.add_argument("--engine", choices=ENGINE_CHOICES, default="sadtalker",
                   help="sadtalker (default), ditto, landmark (no weights needed), or auto (the best installed: "
                        "ditto, sadtalker, landmark)")
    p.add_argument("--no_fast_paths", action="store_true",
                   help="torch's own convolutions in the renderer on the CPU: ~1 GB less memory, slower")
    p.add_argument("--still", action="store_true", help="keep the head still (less head motion; good with full)")
    p.add_argument("--preprocess", default="crop", choices=PREPROCESS_CHOICES, help="how the picture is used")
    p.add_argument("--seed", type=int, default=0, help="random seed (blinks, pose noise): same seed, same video")
    p.add_argument("--idle_seconds", type=float, help="no audio: the face idles (breathes, blinks) this long")
    p.add_argument("--verbose", action="store_true", help="log each stage")
    return p


def options_from_args(args: argparse.Namespace):
    """The CLI's flags as (GenerationOptions, reference video, blink reference video), the reference flags mapped as
    the original maps them."""
    from sadtalker.options import GenerationOptions

    ref_video, ref_info, blink_video = None, "pose", None
    if args.ref_pose:
        ref_video = args.ref_pose
        if args.ref_eyeblink == args.ref_pose:
            ref_info = "pose+blink"
        elif args.ref_eyeblink:
            blink_video = args.ref_eyeblink
    elif args.ref_eyeblink:
        ref_video, ref_info = args.ref_eyeblink, "blink"
    options = GenerationOptions(
        preprocess=args.preprocess, still_mode=args.still, enhancer=args.enhancer is not None,
        batch_size=args.batch_size, size=args.size, pose_style=args.pose_style,
        expression_scale=args.expression_scale, seed=args.seed, engine=args.engine,
        input_yaw=tuple(args.input_yaw or ()), input_pitch=tuple(args.input_pitch or ()),
        input_roll=tuple(args.input_roll or ()), ref_info=ref_info, idle_mode=args.idle_seconds is not None,
        idle_seconds=args.idle_seconds if args.idle_seconds is not None else 5.0)
    return (options, None if ref_video is None else Path(ref_video),
            None if blink_video is None else Path(blink_video))


def read_args_inputs(args: argparse.Namespace, options, ref_video: Path | None, blink_video: Path | None, limits):
    """Read and check the inputs before any network is loaded (the service's reader, the service's limits)."""
    from sadtalker.errors import InvalidInputError
    from sadtalker.io.inputs import read_inputs

    if args.idle_seconds is None and not args.driven_audio and not (ref_video and options.ref_info == "all"):
        raise InvalidInputError("--driven_audio is required (or --idle_seconds for a clip without speech)")
    audio = Path(args.driven_audio) if args.driven_audio and args.idle_seconds is None else None
    return read_inputs(Path(args.source_image), audio, options, limits, ref_video=ref_video,
                       ref_eyeblink_video=blink_video)


def check_checkpoints(locations, size: int, enhancer: bool) -> None:
    """One message naming every missing weight file and the download command."""
    from sadtalker.errors import CheckpointError
    from sadtalker.weights import GFPGAN_FILE

    missing = list(locations.missing_sadtalker_files())
    if size == 512 and not locations.sadtalker_file(512).is_file():
        missing.append(locations.sadtalker_file(512))
    if enhancer and not locations.gfpgan_file(GFPGAN_FILE).is_file():
        missing.append(locations.gfpgan_file(GFPGAN_FILE))
    if missing:
        raise CheckpointError("checkpoint file(s) not found: " + ", ".join(str(p) for p in missing)
                              + f". Get the official weights with: {locations.download_hint}")


def output_path(result_dir: Path) -> Path:
    """results/YYYY_MM_DD_HH.MM.SS.mp4, as the original names it (a suffix if that name is taken)."""
    stem = time.strftime("%Y_%m_%d_%H.%M.%S")
    path, n = result_dir / f"{stem}.mp4", 1
    while path.exists():
        path, n = result_dir / f"{stem}_{n}.mp4", n + 1
    return path


def load_pipeline(settings, size: int, enhancer: bool, engine: str = "sadtalker"):
    """The engine with every network this run needs loaded now (so a bad file fails before rendering)."""
    from sadtalker.engines.registry import default_engine_name, load_engine

    name = default_engine_name(settings.locations) if engine == "auto" else engine
    pipeline = load_engine(name, settings.locations, settings.device, accel=settings.accel,
                           precision=settings.precision)
    if name == "sadtalker":
        pipeline.renderer(size)
        if enhancer:
            pipeline.enhancer()
    return pipeline


class TqdmProgress:
    """progress(fraction, stage) -> one tqdm bar in percent on stderr."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=100, unit="%", file=sys.stderr, mininterval=0.5,
                        bar_format="{desc:<26}{percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")

    def __call__(self, fraction: float, stage: str) -> None:
        self.bar.set_description_str(stage[:25], refresh=False)
        self.bar.update(max(0, round(fraction * 100) - self.bar.n))

    def close(self) -> None:
        self.bar.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from dataclasses import replace

    from sadtalker.errors import InvalidInputError, TalkingHeadError
    from sadtalker.service.settings import ServiceSettings
    from sadtalker.weights import CheckpointLocations

    try:
        settings = ServiceSettings.from_env()
        changes: dict = {}
        if args.cpu:
            changes["device"] = "cpu"
        if args.precision:
            changes["precision"] = args.precision
        if args.no_fast_paths:
            changes["cpu_fast_paths"] = False
        if args.checkpoint_dir or args.ditto_dir:
            changes["locations"] = CheckpointLocations(
                checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else settings.locations.checkpoint_dir,
                gfpgan_dir=settings.locations.gfpgan_dir,
                ditto_dir=Path(args.ditto_dir) if args.ditto_dir else settings.locations.ditto_dir)
        settings = replace(settings, **changes)
        options, ref_video, blink_video = options_from_args(args)
        inputs = read_args_inputs(args, options, ref_video, blink_video, settings.limits)
    except InvalidInputError as exc:
        print(f"inference.py: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    progress = None
    try:
        if args.engine == "sadtalker":
            check_checkpoints(settings.locations, options.size, options.enhancer)
        elif args.engine == "ditto":
            from sadtalker.engines.ditto.weights import DittoCheckpoints

            DittoCheckpoints.from_locations(settings.locations).require_all()
        pipeline = load_pipeline(settings, options.size, options.enhancer, args.engine)
        out = output_path(Path(args.result_dir))
        progress = TqdmProgress()
        result = pipeline.generate(inputs, options, out, progress=progress)
    except TalkingHeadError as exc:
        if progress is not None:
            progress.close()
        print(f"inference.py: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, InvalidInputError) else EXIT_FAILURE
    except KeyboardInterrupt:
        print("inference.py: interrupted", file=sys.stderr)
        return 130
    progress.close()
    logger.info("%d frames %dx%d in %.1f s", result.num_frames, result.width, result.height,
                sum(result.timings.values()))
    print(result.video_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
