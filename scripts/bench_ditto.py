"""Speed and memory of our Ditto engine's stages on random weights in the official layout, one fresh subprocess per
clip length (cold loading, its own peak memory), side by side with the original Ditto PyTorch path when its
interpreter is known. `scripts/bench.py --engine ditto` runs this.

    python scripts/bench.py --engine ditto [--seconds 10,60] [--render-frames 3] [--warm] [--threads 2] [--json out]

Per clip: seconds to load, HuBERT features, source registration, LMDM motion for the WHOLE clip (clips of 80 frames
x the config's DDIM steps, fused and smoothed), the renderer (stitching + warp + decoder + paste-back) for the first
`--render-frames` frames (all frames with 0) and the encoder, seconds per rendered frame, and the process's peak
RSS; "cold" is the first pass in a fresh process, "warm" (--warm) a second pass with the models loaded. The speech
is an espeak-ng clip repeated to the length. Weights: $DITTO_PARITY_DIR/checkpoints (the golden run's random files)
plus a HuBERT stand-in, else files written once under artifacts/bench/ditto/.

With DITTO_UPSTREAM_PYTHON and DITTO_UPSTREAM_ROOT set (what `scripts/parity_data.py` exports), each clip also runs
through the original's classes in its own interpreter on the same files (scripts/bench_ditto_upstream.py) and
original / ours is printed per stage. Not compared: HuBERT (the original's ONNX session is stood in for there), the
encoder (the original writes with imageio in another thread); the original's source stage has its aux models stood
in (free), ours runs its face mesh, so that row is pessimistic for ours.

Memory: the clip-length dependent state (features (N, 1024), motion (N, 265), keypoints (N, 21, 3)) is what a
longer clip adds; frames stream a batch at a time, so rendering more frames does not add memory (the comparison of
two lengths with the same number of rendered frames shows the former; scripts/memory_check.py the service's).
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


def one_pass(engine, audio: np.ndarray, render_frames: int, batch_size: int, video: Path) -> dict:
    """Every stage once on loaded models: seconds per stage."""
    import torch
    from skimage import data

    from sadtalker.engines.ditto.audio_features import hubert_features
    from sadtalker.engines.ditto.motion import MOTION_LAYOUT
    from sadtalker.io.video import VideoWriter

    out: dict = {}
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
        k = len(driving) if render_frames <= 0 else min(render_frames, len(driving))
        motion = {key: getattr(driving, key)[:k] for key, _ in MOTION_LAYOUT}
        h, w = source.frame.shape[:2]
        encode = 0.0
        t = time.perf_counter()
        with VideoWriter(video, w, h) as writer:
            for frame in engine.renderer.frames(source, motion, batch_size=batch_size):
                e = time.perf_counter()
                writer.write(frame)
                encode += time.perf_counter() - e
            e = time.perf_counter()
        encode += time.perf_counter() - e   # the writer's flush on close
        out["render"] = time.perf_counter() - t - encode
        out["encode"] = encode
        out["rendered_frames"] = k
    out["render_per_frame"] = out["render"] / max(k, 1)
    return out


def run_one(args: argparse.Namespace, seconds: float) -> dict:
    """In this process: load, then every stage once (twice with --warm); seconds per stage and the peak RSS."""
    import torch

    from sadtalker.accel import AccelConfig
    from sadtalker.engines.ditto.engine import DittoEngine
    from sadtalker.engines.ditto.weights import DittoCheckpoints

    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    out: dict = {"seconds": seconds, "threads": torch.get_num_threads()}
    t = time.perf_counter()
    engine = DittoEngine.from_checkpoint(DittoCheckpoints(release_folder(cache)), device=args.device,
                                         steps=args.steps, accel=AccelConfig(cpu_kernels=not args.no_fast_paths))
    out["load"] = time.perf_counter() - t
    out["steps"] = engine.config.steps
    audio = speech(seconds, cache)
    out["cold"] = one_pass(engine, audio, args.render_frames, args.batch_size, cache / f"bench_{seconds:g}s.mp4")
    out["frames"] = out["cold"]["frames"]
    if args.warm:
        out["warm"] = one_pass(engine, audio, args.render_frames, args.batch_size, cache / f"bench_{seconds:g}s.mp4")
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_original(args: argparse.Namespace, seconds: float) -> dict | None:
    """The original's stages in its own interpreter (scripts/bench_ditto_upstream.py), same files and clip length."""
    python, root = os.environ.get("DITTO_UPSTREAM_PYTHON"), os.environ.get("DITTO_UPSTREAM_ROOT")
    if not (args.upstream and python and root):
        return None
    cmd = [python, str(REPO / "scripts" / "bench_ditto_upstream.py"), "--upstream", root,
           "--checkpoints", str(release_folder(Path(args.cache))), "--seconds", str(seconds),
           "--render-frames", str(args.render_frames), "--steps", str(args.steps), "--threads", str(args.threads)]
    if args.warm:
        cmd.append("--warm")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"the original's run failed ({' '.join(cmd)})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stage_rows(ours: dict, orig: dict | None) -> list[tuple[str, float | None, float | None]]:
    """(label, ours, original) per stage; None where a side does not run it."""
    def get(run: dict | None, phase: str, key: str) -> float | None:
        return None if run is None or phase not in run else run[phase].get(key)

    rows: list[tuple[str, float | None, float | None]] = []
    orig_load = None if orig is None else sum(orig["cold"][k] for k in ("load_source_nets", "load_lmdm",
                                                                          "load_render_nets"))
    rows.append(("load (all networks)", ours["load"], orig_load))
    for phase in ("cold", "warm"):
        if phase not in ours:
            continue
        rows += [(f"{phase}: HuBERT features", get(ours, phase, "audio"), None),
                 (f"{phase}: source registration", get(ours, phase, "source"), get(orig, phase, "source")),
                 (f"{phase}: motion, whole clip", get(ours, phase, "motion"), get(orig, phase, "motion")),
                 (f"{phase}: motion per frame", get(ours, phase, "motion") / ours["frames"],
                  None if get(orig, phase, "motion") is None else get(orig, phase, "motion") / orig["frames"]),
                 (f"{phase}: render per frame", get(ours, phase, "render_per_frame"),
                  get(orig, phase, "render_per_frame")),
                 (f"{phase}: encode per frame", get(ours, phase, "encode") / ours[phase]["rendered_frames"], None)]
        comparable = ("source", "motion", "render")
        ours_total = sum(ours[phase][k] for k in comparable)
        orig_total = None if get(orig, phase, "render") is None else sum(orig[phase][k] for k in comparable)
        if phase == "cold":
            ours_total += ours["load"]
            orig_total = None if orig_total is None else orig_total + orig_load
        rows.append((f"{phase}: comparable total" + (" (with loading)" if phase == "cold" else ""),
                     ours_total, orig_total))
    return rows


def format_table(ours: dict, orig: dict | None) -> str:
    k = ours["cold"]["rendered_frames"]
    lines = [f"--- {ours['seconds']:g} s of speech: {ours['frames']} frames, {ours['steps']} DDIM steps, "
             f"{k} frames rendered at 512, {ours['threads']} threads ---",
             f"{'stage (seconds)':<38} {'ours':>9} {'original':>9} {'orig/ours':>9}"]
    for label, a, b in stage_rows(ours, orig):
        ratio = f"{b / a:>8.2f}x" if a and b else f"{'-':>9}"
        fa = f"{a:>9.3f}" if a is not None else f"{'-':>9}"
        fb = f"{b:>9.3f}" if b is not None else f"{'-':>9}"
        lines.append(f"{label:<38} {fa} {fb} {ratio}")
    orig_rss = f"{orig['peak_rss_mb']:>7.0f}MB" if orig else f"{'-':>9}"
    lines.append(f"{'peak RSS':<38} {ours['peak_rss_mb']:>7.0f}MB {orig_rss}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", default="10,60", help="comma list of clip lengths in seconds")
    ap.add_argument("--render-frames", type=int, default=3, help="frames rendered per clip (0: all)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps (the release config's default: 50)")
    ap.add_argument("--warm", action="store_true", help="also time a second pass with the models loaded")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-fast-paths", action="store_true",
                    help="our renderer on torch's own CPU convolutions (less memory, slower; SADTALKER_CPU_FAST_PATHS=0)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads, both sides (default: torch's)")
    ap.add_argument("--no-upstream", dest="upstream", action="store_false",
                    help="do not run the original even when DITTO_UPSTREAM_PYTHON/DITTO_UPSTREAM_ROOT are set")
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
    if args.upstream and not (os.environ.get("DITTO_UPSTREAM_PYTHON") and os.environ.get("DITTO_UPSTREAM_ROOT")):
        print("note: DITTO_UPSTREAM_PYTHON/DITTO_UPSTREAM_ROOT not set: ours only (scripts/parity_data.py exports "
              "them)", file=sys.stderr)
    results = []
    for seconds in (float(s) for s in args.seconds.split(",")):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(seconds), "--render-frames",
               str(args.render_frames), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
               "--device", args.device, "--threads", str(args.threads), "--cache", args.cache]
        cmd += ["--warm"] * args.warm + ["--no-fast-paths"] * args.no_fast_paths
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        ours = json.loads(proc.stdout.strip().splitlines()[-1])
        orig = run_original(args, seconds)
        results.append({"ours": ours, "original": orig})
        print(format_table(ours, orig), flush=True)
    if len(results) > 1:
        for side in ("ours", "original"):
            if results[0][side] is None:
                continue
            lo, hi = results[0][side]["peak_rss_mb"], results[-1][side]["peak_rss_mb"]
            print(f"{side}: peak RSS {results[-1][side]['seconds']:g} s vs {results[0][side]['seconds']:g} s: "
                  f"{100 * (hi - lo) / lo:+.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
