"""Speed and memory of our Ditto engine's stages on random weights in the official layout, one fresh subprocess per
clip length (cold loading, its own peak memory).

    python scripts/bench_ditto.py [--seconds 10,60] [--render-frames 3] [--device cpu] [--json out.json]

Per clip: seconds to load, HuBERT features, source registration, LMDM motion for the WHOLE clip (clips of 80 frames
x the config's DDIM steps), and the renderer (stitching + warp + decoder + paste-back + encoder) for the first
`--render-frames` frames (all frames with 0), seconds per rendered frame, and the process's peak RSS. The speech is an
espeak-ng clip repeated to the length. Weights: $DITTO_PARITY_DIR/checkpoints (the golden run's random files) plus a
HuBERT stand-in, else files written once under artifacts/bench/ditto/.

Memory: the clip-length dependent state (features (N, 1024), motion (N, 265), keypoints (N, 21, 3)) is what a
longer clip adds; frames stream a batch at a time, so rendering more frames does not add memory (the comparison of
two lengths with the same number of rendered frames shows the former; scripts/memory_check.py the service's).
The original's per-frame renderer is compared in scripts/bench_ditto_render.py (interleaved, same files).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "SadTalker")]


def release_folder(cache: Path) -> Path:
    """The golden run's random checkpoints (symlinked) with a HuBERT stand-in, or a random release written once."""
    from sadtalker.engines.ditto.random_weights import write_random_hubert, write_random_release
    from sadtalker.engines.ditto.weights import DittoCheckpoints

    golden = os.environ.get("DITTO_PARITY_DIR")
    if golden and (Path(golden) / "checkpoints" / "ditto_pytorch").is_dir():
        root = cache / "golden-release"
        for sub in ("ditto_pytorch/models", "ditto_cfg"):
            (root / sub).parent.mkdir(parents=True, exist_ok=True)
            if not (root / sub).exists():
                (root / sub).symlink_to(Path(golden) / "checkpoints" / sub)
        if not DittoCheckpoints(root).hubert_file.is_file():
            write_random_hubert(DittoCheckpoints(root).hubert_file)
        return root
    root = cache / "random-release"
    if DittoCheckpoints(root).missing_files():
        write_random_release(root, seed=0)
    return root


def speech(seconds: float, cache: Path) -> np.ndarray:
    """espeak-ng speech repeated to `seconds` (16 kHz float32)."""
    from sadtalker.io.audio import load_audio

    wav = cache / "speech.wav"
    if not wav.is_file():
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), "The quick brown fox jumps over the lazy dog. "
                        "Then it rests for a while and talks about open vowels."], check=True, capture_output=True)
    one = load_audio(wav)
    n = int(seconds * 16000)
    return np.resize(one, n).astype(np.float32)


def run_one(args: argparse.Namespace, seconds: float) -> dict:
    """In this process: load, then every stage once; returns seconds per stage and the peak RSS."""
    import torch
    from skimage import data

    from sadtalker.engines.ditto.audio_features import hubert_features
    from sadtalker.engines.ditto.engine import DittoEngine
    from sadtalker.engines.ditto.motion import MOTION_LAYOUT
    from sadtalker.engines.ditto.weights import DittoCheckpoints
    from sadtalker.io.video import VideoWriter

    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    out: dict = {"seconds": seconds}
    t = time.perf_counter()
    engine = DittoEngine.from_checkpoint(DittoCheckpoints(release_folder(cache)), device=args.device)
    out["load"] = time.perf_counter() - t
    audio = speech(seconds, cache)
    with torch.inference_mode():
        t = time.perf_counter()
        features = hubert_features(audio, engine.hubert)
        out["audio"] = time.perf_counter() - t
        out["frames"] = len(features)
        t = time.perf_counter()
        source = engine.renderer.register(data.astronaut(), engine.config.max_size)
        out["source"] = time.perf_counter() - t
        t = time.perf_counter()
        driving = engine.predict_motion(features, source, 0, lambda f, s: None)
        out["motion"] = time.perf_counter() - t
        k = len(driving) if args.render_frames <= 0 else min(args.render_frames, len(driving))
        motion = {key: getattr(driving, key)[:k] for key, _ in MOTION_LAYOUT}
        t = time.perf_counter()
        h, w = source.frame.shape[:2]
        with VideoWriter(cache / f"bench_{seconds:g}s.mp4", w, h) as writer:
            for frame in engine.renderer.frames(source, motion, batch_size=args.batch_size):
                writer.write(frame)
        out["render"] = time.perf_counter() - t
        out["rendered_frames"] = k
    out["render_per_frame"] = out["render"] / max(k, 1)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", default="10,60", help="comma list of clip lengths in seconds")
    ap.add_argument("--render-frames", type=int, default=3, help="frames rendered per clip (0: all)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--cache", default=str(REPO / "artifacts" / "bench" / "ditto"))
    ap.add_argument("--json", help="also write the measurements here")
    ap.add_argument("--one", type=float, help=argparse.SUPPRESS)  # internal: one clip length, print JSON
    args = ap.parse_args(argv)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    if args.one is not None:
        print(json.dumps(run_one(args, args.one)))
        return 0
    if shutil.which("espeak-ng") is None:
        ap.error("espeak-ng is needed for the speech clip")
    results = []
    for seconds in (float(s) for s in args.seconds.split(",")):
        cmd = [sys.executable, __file__, "--one", str(seconds), "--render-frames", str(args.render_frames),
               "--batch-size", str(args.batch_size), "--device", args.device, "--threads", str(args.threads),
               "--cache", args.cache]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{'clip':>6} {'frames':>6} {'load':>6} {'audio':>6} {'source':>7} {'motion':>7} {'motion/fr':>9} "
          f"{'render/fr':>9} {'peak RSS':>9}")
    for r in results:
        print(f"{r['seconds']:>5g}s {r['frames']:>6} {r['load']:>6.1f} {r['audio']:>6.2f} {r['source']:>7.2f} "
              f"{r['motion']:>7.1f} {r['motion'] / r['frames']:>9.3f} {r['render_per_frame']:>9.2f} "
              f"{r['peak_rss_mb']:>7.0f}MB")
    if len(results) > 1:
        lo, hi = results[0]["peak_rss_mb"], results[-1]["peak_rss_mb"]
        print(f"peak RSS {results[-1]['seconds']:g} s vs {results[0]['seconds']:g} s: {100 * (hi - lo) / lo:+.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
