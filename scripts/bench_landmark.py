"""Landmark engine benchmark: real-time factor (generation seconds / audio seconds) for a 10 s clip at 256 and 512
crop and `full` on a 1024x1024 portrait, and peak memory for a 10 s and a 60 s clip (each in a fresh process).

Usage: python scripts/bench_landmark.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SadTalker"))

import numpy as np  # noqa: E402

logger = logging.getLogger("bench_landmark")

TEXT = ("The quick brown fox jumps over the lazy dog. Then it rests for a while. Talking heads need open vowels, "
        "like ah, oh, and ee. Good night and good luck. ")


def make_inputs(folder: Path) -> dict[str, Path]:
    """The astronaut at 512 and upscaled to 1024, speech (espeak-ng, looped) cut to exactly 10 s and 60 s."""
    import soundfile
    from PIL import Image
    from skimage import data

    from sadtalker.io.audio import load_audio

    portrait = folder / "astronaut.png"
    Image.fromarray(data.astronaut()).save(portrait)
    big = folder / "astronaut_1024.png"
    Image.fromarray(data.astronaut()).resize((1024, 1024), Image.LANCZOS).save(big)
    exe = shutil.which("espeak-ng")
    if exe:
        wav = folder / "speech_raw.wav"
        subprocess.run([exe, "-s", "150", "-w", str(wav), TEXT], check=True, capture_output=True)
        speech = load_audio(wav)
    else:  # a syllable-rate modulated buzz, when espeak-ng is not installed
        t = np.arange(16000 * 4) / 16000
        speech = (0.3 * np.sin(2 * np.pi * 140 * t) * np.clip(np.sin(2 * np.pi * 3 * t), 0, None)).astype(np.float32)
    out = {"portrait": portrait, "portrait_1024": big}
    for seconds in (10, 60):
        n = 16000 * seconds
        clip = np.tile(speech, n // len(speech) + 1)[:n]
        path = folder / f"speech_{seconds}s.wav"
        soundfile.write(str(path), clip, 16000)
        out[f"audio_{seconds}"] = path
    return out


def child(args: argparse.Namespace) -> None:
    """One measured run in this process; prints a JSON line."""
    from sadtalker.engines.landmark.engine import LandmarkEngine
    from sadtalker.io.inputs import read_inputs
    from sadtalker.options import GenerationOptions

    engine = LandmarkEngine()
    options = GenerationOptions(preprocess=args.preprocess, size=args.size)
    times, cpu, split = [], [], []
    result = None
    for i in range(args.repeat):
        before = _cpu_seconds()
        start = time.perf_counter()
        inputs = read_inputs(Path(args.image), Path(args.audio), options)   # decoding counts, as in the service
        result = engine.generate(inputs, options, Path(args.output))
        times.append(time.perf_counter() - start)
        after = _cpu_seconds()
        cpu.append(sum(after) - sum(before))
        split.append((after[0] - before[0], after[1] - before[1]))
    assert result is not None
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    best = int(np.argmin(cpu))
    print(json.dumps({"seconds": min(times), "all": times, "cpu_seconds": cpu[best], "cpu_split": split[best],
                      "audio_seconds": result.audio_seconds, "frames": result.num_frames,
                      "size": [result.width, result.height], "python_peak_mb": self_kb / 1024,
                      "timings": result.timings}))


def _cpu_seconds() -> tuple[float, float]:
    """CPU time of this process and of its finished children (ffmpeg): less sensitive to a busy machine than the
    wall clock."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def run_child(image: Path, audio: Path, preprocess: str, size: int, repeat: int, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", "--image", str(image), "--audio", str(audio), "--preprocess",
           preprocess, "--size", str(size), "--repeat", str(repeat), "--output", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration; the best is reported")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    parser.add_argument("--preprocess", default="crop", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="bench-landmark-") as tmp:
        folder = Path(tmp)
        inputs = make_inputs(folder)
        logger.info("real-time factor (generation seconds / audio seconds), 10 s clip, best of %d, incl. encoding:",
                    args.repeat)
        for label, image, preprocess, size in (("crop 256", inputs["portrait"], "crop", 256),
                                               ("crop 512", inputs["portrait"], "crop", 512),
                                               ("full 1024x1024", inputs["portrait_1024"], "full", 256)):
            r = run_child(image, inputs["audio_10"], preprocess, size, args.repeat, folder / "out.mp4")
            logger.info("  %-15s RTF %.3f  (%.2f s for %.1f s, %d frames %dx%d; runs %s); CPU-seconds per audio "
                        "second %.3f (python %.3f, ffmpeg %.3f)", label, r["seconds"] / r["audio_seconds"],
                        r["seconds"], r["audio_seconds"], r["frames"], r["size"][0], r["size"][1],
                        ", ".join(f"{t:.2f}" for t in r["all"]), r["cpu_seconds"] / r["audio_seconds"],
                        r["cpu_split"][0] / r["audio_seconds"], r["cpu_split"][1] / r["audio_seconds"])
        logger.info("peak memory (crop 512, one run per fresh process; max RSS of the python process; ffmpeg "
                    "streams and keeps a constant few tens of MB):")
        peaks = {}
        for seconds in (10, 60):
            r = run_child(inputs["portrait"], inputs[f"audio_{seconds}"], "crop", 512, 1, folder / "out.mp4")
            peaks[seconds] = r
            logger.info("  %2d s clip: %.1f MB (RTF %.3f)", seconds, r["python_peak_mb"],
                        r["seconds"] / r["audio_seconds"])
        ratio = peaks[60]["python_peak_mb"] / peaks[10]["python_peak_mb"]
        logger.info("  peak 60 s / 10 s = %.3f (target <= 1.10)", ratio)
        logger.info("load average now: %s", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
