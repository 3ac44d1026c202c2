"""Speed and memory benchmark of our SadTalker engine (or, with --engine ditto, our Ditto engine), optionally side
by side with the original.

    python scripts/bench.py [--configs 256-crop,256-full,512-crop] [--enhancer off|on|both] [--frames N]
    python scripts/bench.py --engine ditto [--seconds 10,60] [--render-frames 3] [--warm]   # scripts/bench_ditto.py

Inputs are fixed: skimage's astronaut portrait and an espeak-ng spoken clip (~10 s; `--frames N` cuts it to N
video frames). Weights are random, in the official layouts (compute does not depend on the values): $PARITY_DIR's
checkpoints when set, else files written once (sadtalker.engines.sadtalker.random_weights) under artifacts/bench/.
Each configuration runs in a fresh subprocess, so loading is cold and the peak memory is its own. Ours is the
product's own pipeline (SadTalkerPipeline.generate, whose per-stage timings are printed), with the glibc malloc
tunables the model service uses (sadtalker/runtime/malloc_tuning.py; SADTALKER_MALLOC_TUNING=0 measures without
them); the original runs as it ships.

Printed per configuration: seconds per stage (loading split per component; inputs; face; motion; renderer
network; compose + encode; enhancer), renderer seconds per frame, frames per second and real-time factor (RTF =
generation seconds / audio seconds) cold (with model loading) and warm (models loaded), peak RSS, and peak GPU
memory on CUDA.

With UPSTREAM_PYTHON and UPSTREAM_ROOT set (the original's interpreter and extracted sources, as for
../shared/tools/parity/), each configuration is also timed with the original (scripts/bench_upstream.py, in a
subprocess, same inputs and weights) and the ratio original/ours is printed per stage and for the comparable
totals (the stages both sides ran).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "SadTalker")]

from sadtalker.runtime.malloc_tuning import child_environment  # noqa: E402
from sadtalker.service.settings import ServiceSettings  # noqa: E402

CONFIGS = {"256-crop": (256, "crop"), "256-full": (256, "full"), "512-crop": (512, "crop")}
SPEECH_TEXT = ("The quick brown fox jumps over the lazy dog. Then it rests for a while, and talks about "
               "open vowels, like ah, oh and ee. Good night, and good luck to everyone.")
FACE_BOX = (180, 85, 290, 200)  # where the astronaut's face is; the original's fixed landmarks go there too
SAMPLES_PER_FRAME = 640
UPSTREAM_MIN_FRAMES = 4  # the original's pose smoothing fails below 4 frames
ROWS = [  # (key, label)
    ("load_face", "load: face"), ("load_motion", "load: motion"), ("load_render", "load: renderer"),
    ("load_enhancer", "load: enhancer"), ("inputs", "inputs"), ("face", "face (crop + 3DMM)"),
    ("motion", "motion (audio -> coeffs)"), ("render_net", "renderer network"),
    ("compose_encode", "compose + encode"), ("enhancer", "enhancer"),
]


# ------------------------------------------------------------------------------------------------ inputs
def make_inputs(folder: Path, frames: int | None) -> tuple[Path, Path, int]:
    """The astronaut PNG and a 16 kHz PCM16 espeak-ng clip (cut to `frames` video frames when given)."""
    import shutil

    import soundfile
    from PIL import Image
    from skimage import data

    from sadtalker.io.audio import load_audio

    folder.mkdir(parents=True, exist_ok=True)
    image = folder / "portrait.png"
    Image.fromarray(data.astronaut()).save(image)
    raw = folder / "speech_raw.wav"
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng is needed for the benchmark's spoken clip (apt-get install espeak-ng)")
    subprocess.run([exe, "-s", "140", "-w", str(raw), SPEECH_TEXT], check=True, capture_output=True)
    wav = load_audio(raw)
    if frames is not None:
        wav = np.pad(wav, (0, max(0, frames * SAMPLES_PER_FRAME - len(wav))))[: frames * SAMPLES_PER_FRAME]
    audio = folder / "speech.wav"
    soundfile.write(str(audio), wav, 16000, subtype="PCM_16")
    return image, audio, len(wav) // SAMPLES_PER_FRAME


def checkpoint_folders(args: argparse.Namespace, sizes: set[int], enhancer: bool) -> tuple[Path, Path]:
    """(checkpoint dir, gfpgan weights dir) holding every file the run needs, in the official layouts."""
    if args.checkpoints:
        ck = Path(args.checkpoints)
        return ck, Path(args.gfpgan_weights or ck.parent / "gfpgan" / "weights")
    parity = os.environ.get("PARITY_DIR")
    if parity and (Path(parity) / "checkpoints").is_dir():
        return Path(parity) / "checkpoints", Path(parity) / "gfpgan" / "weights"
    from sadtalker.engines.sadtalker.random_weights import write_checkpoints

    ck = Path(args.cache) / "checkpoints"
    gw = Path(args.cache) / "gfpgan" / "weights"
    print(f"random-weight files (official layouts) under {args.cache}", file=sys.stderr)
    write_checkpoints(ck, gw if (enhancer or args.upstream) else None, tuple(sorted(sizes | {256})))
    return ck, gw


# ------------------------------------------------------------------------------------------------ measuring
class PeakMemory:
    """Samples this process's resident set every 20 ms (peak RSS since start, in MB)."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(0.02)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def bench_settings(args: argparse.Namespace) -> ServiceSettings:
    """The service's settings from the environment, with this run's device: they decide the malloc tunables."""
    from dataclasses import replace

    return replace(ServiceSettings.from_env(), device=args.device)


class FixedFivePoints:
    """Landmark source for the enhancer on random-weight frames (no face to detect): the FFHQ five points scaled
    into the face's region of each frame (the enhancer's networks and paste-back still run)."""

    def __init__(self, frame_box: tuple[float, float, float, float]) -> None:
        self.box = frame_box  # fraction of the frame (x0, y0, x1, y1)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        from sadtalker.engines.sadtalker.enhance import FFHQ_TEMPLATE_512

        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = self.box
        pts = FFHQ_TEMPLATE_512 / 512.0
        return np.stack([(x0 + pts[:, 0] * (x1 - x0)) * w, (y0 + pts[:, 1] * (y1 - y0)) * h], 1)[None]


# ------------------------------------------------------------------------------------------------ ours
def run_ours(size: int, preprocess: str, enhance: bool, image: Path, audio: Path, ck: Path, gw: Path,
             args: argparse.Namespace) -> dict[str, Any]:
    """One cold request of our engine: its stages loaded (timed one by one), the inputs read as the service reads
    them, then the pipeline's own generate(), whose per-stage timings are reported."""
    import torch

    from sadtalker.accel import AccelConfig
    from sadtalker.engines.sadtalker.motion import AudioToMotion
    from sadtalker.engines.sadtalker.pipeline import SadTalkerPipeline
    from sadtalker.engines.sadtalker.render import FaceRenderer
    from sadtalker.engines.sadtalker.source_face import SourceFaceExtractor
    from sadtalker.io.inputs import read_inputs
    from sadtalker.options import GenerationOptions
    from sadtalker.runtime.device import configure_precision, resolve_device
    from sadtalker.weights import CheckpointLocations

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precision = args.precision or "fp32"
    configure_precision(device, precision)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    locations = CheckpointLocations(checkpoint_dir=ck, gfpgan_dir=gw)
    accel = AccelConfig(cpu_kernels=not args.no_fast_paths)
    secs: dict[str, float] = {}
    notes = ["face landmarks from the face mesh (random-weight detector files find no face)"]
    out: dict[str, Any] = {"stages": secs, "notes": notes, "device": str(device), "torch": torch.__version__,
                           "threads": torch.get_num_threads(), "precision": precision}
    with PeakMemory() as memory:
        # Loading (cold): every network this request needs, each stage timed.
        t = time.perf_counter()
        face_stage = SourceFaceExtractor.from_checkpoint(locations, device=device, detector="facemesh")
        secs["load_face"] = time.perf_counter() - t
        t = time.perf_counter()
        motion_stage = AudioToMotion.from_checkpoint(locations, device=device)
        secs["load_motion"] = time.perf_counter() - t
        t = time.perf_counter()
        renderer = FaceRenderer.from_checkpoint(locations, size=size, device=device, accel=accel,
                                                precision="fp32" if precision == "tf32" else precision,
                                                compile=args.compile)
        renderer.mapping(preprocess)
        secs["load_render"] = time.perf_counter() - t
        enhancer = None
        if enhance:
            from sadtalker.engines.sadtalker.enhance import FaceEnhancer

            # Frames rendered from random weights show no face for a detector to find, so the enhancer gets the
            # template's five points in the face region of each frame (its networks and paste-back run in full).
            notes.append("enhancer landmarks: fixed five points per frame (random-weight frames have no face)")
            t = time.perf_counter()
            enhancer = FaceEnhancer.from_checkpoint(locations, device=device,
                                                    landmarks=FixedFivePoints((0.3, 0.25, 0.7, 0.75)))
            secs["load_enhancer"] = time.perf_counter() - t
        pipeline = SadTalkerPipeline(face_stage, motion_stage, {size: renderer}, device, locations,
                                     enhancer=enhancer, accel=accel, precision=precision)

        # The request, as the service runs it.
        options = GenerationOptions(preprocess=preprocess, size=size, enhancer=enhance, batch_size=args.batch_size)
        video = Path(tempfile.mkdtemp(prefix="bench-ours-")) / "out.mp4"
        request_start = time.perf_counter()
        inputs = read_inputs(image, audio, options)
        secs["inputs"] = time.perf_counter() - request_start
        result = pipeline.generate(inputs, options, video)
        secs["request_total"] = time.perf_counter() - request_start
        stages = result.timings
        secs.update(face=stages["face"], motion=stages["motion"], render_net=stages["render"],
                    compose_encode=stages.get("compose", 0.0) + stages.get("encode", 0.0))
        if "enhancer" in stages:
            secs["enhancer"] = stages["enhancer"]
        video.unlink(missing_ok=True)
        video.parent.rmdir()
    out["frames"] = result.num_frames
    out["peak_rss_mb"] = memory.peak
    if cuda:
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# ------------------------------------------------------------------------------------------------ the original
def run_upstream(size: int, preprocess: str, enhance: bool, image: Path, audio: Path, ck: Path, gw: Path,
                 args: argparse.Namespace) -> dict[str, Any] | None:
    python, root = os.environ.get("UPSTREAM_PYTHON"), os.environ.get("UPSTREAM_ROOT")
    if not (python and root):
        return None
    harness = Path(os.environ.get("PARITY_TOOLS", REPO.parent / "shared" / "tools" / "parity"))
    if not (harness / "upstream.py").is_file():
        harness = Path("/work/shared/tools/parity")
    cmd = [python, str(REPO / "scripts" / "bench_upstream.py"), "--root", root, "--harness", str(harness),
           "--checkpoints", str(ck), "--gfpgan-weights", str(gw), "--image", str(image), "--audio", str(audio),
           "--preprocess", preprocess, "--size", str(size), "--box", ",".join(map(str, FACE_BOX))]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if enhance:
        cmd.append("--enhancer")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
        return {"error": f"the original failed (exit {proc.returncode}): {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ report
def summarize(run: dict[str, Any], audio_seconds: float) -> dict[str, float]:
    s = run["stages"]
    load = sum(v for k, v in s.items() if k.startswith("load_"))
    warm = s["request_total"] if "request_total" in s else sum(v for k, v in s.items() if not k.startswith("load_"))
    frames = run.get("frames", 0)
    return {"load": load, "warm": warm, "cold": load + warm, "frames": frames,
            "render_per_frame": s.get("render_net", float("nan")) / max(frames, 1),
            "fps_warm": frames / warm if warm else float("nan"), "fps_cold": frames / (load + warm),
            "rtf_warm": warm / audio_seconds, "rtf_cold": (load + warm) / audio_seconds}


def _fmt(v: float | None, unit: str = "") -> str:
    return "not available" if v is None else f"{v:.2f}{unit}"


def format_table(name: str, ours: dict[str, Any], orig: dict[str, Any] | None, audio_seconds: float) -> str:
    so = ours["stages"]
    su = orig["stages"] if orig and "stages" in orig else None
    lines = [f"== {name} | frames {ours['frames']} | audio {audio_seconds:.2f} s | device {ours['device']} | "
             f"torch {ours['torch']} | threads {ours['threads']}"]
    head = f"{'stage':28s} {'ours s':>14s}" + (f" {'original s':>14s} {'orig/ours':>10s}" if su else "")
    lines += [head, "-" * len(head)]
    for key, label in ROWS:
        if key == "load_enhancer" and "load_enhancer" not in so and not (su and "enhancer" in su):
            continue
        if key == "enhancer" and "enhancer" not in so:
            continue
        mine = so.get(key)
        row = f"{label:28s} {_fmt(mine):>14s}"
        if su:
            theirs = su.get(key)
            if key == "load_enhancer" and theirs is None and "enhancer" in su:
                theirs_txt = "in enhancer"
            else:
                theirs_txt = _fmt(theirs) if key != "inputs" else "in face/motion"
            ratio = f"{theirs / mine:.2f}x" if (mine and theirs) else "-"
            row += f" {theirs_txt:>14s} {ratio:>10s}"
        lines.append(row)
    mo = summarize(ours, audio_seconds)
    extra = []
    if su:
        mu = summarize(orig, audio_seconds * orig.get("frames", mo["frames"]) / max(mo["frames"], 1))
        # Comparable totals: only the stages both sides ran (ours lacks a stage while it is not in the package).
        shared = [k for k, _ in ROWS if k in so and k in su]
        ours_cold = sum(so[k] for k in shared) + so.get("inputs", 0.0)
        orig_cold = sum(su[k] for k in shared)
        ours_warm = ours_cold - sum(so[k] for k in shared if k.startswith("load_"))
        orig_warm = orig_cold - sum(su[k] for k in shared if k.startswith("load_"))
        fr_o, fr_u = max(mo["frames"], 1), max(orig.get("frames", 1), 1)
        extra = [
            f"{'renderer s/frame':28s} {mo['render_per_frame']:>14.2f} {mu['render_per_frame']:>14.2f} "
            f"{mu['render_per_frame'] / mo['render_per_frame']:>9.2f}x",
            f"{'comparable cold s/frame':28s} {ours_cold / fr_o:>14.2f} {orig_cold / fr_u:>14.2f} "
            f"{(orig_cold / fr_u) / (ours_cold / fr_o):>9.2f}x",
            f"{'comparable warm s/frame':28s} {ours_warm / fr_o:>14.2f} {orig_warm / fr_u:>14.2f} "
            f"{(orig_warm / fr_u) / (ours_warm / fr_o):>9.2f}x",
            f"  (comparable = stages both ran: {', '.join(shared)}; the original always reloads, so its warm "
            f"figure is its request minus loading)",
        ]
    else:
        extra = [f"{'renderer s/frame':28s} {mo['render_per_frame']:>14.2f}"]
    lines.append("-" * len(head))
    lines.append(f"{'total cold (with loading)':28s} {mo['cold']:>14.2f}"
                 + (f" {summarize(orig, audio_seconds)['cold']:>14.2f}" if su else ""))
    lines.append(f"{'total warm (models loaded)':28s} {mo['warm']:>14.2f}"
                 + (f" {summarize(orig, audio_seconds)['warm']:>14.2f}" if su else ""))
    lines += extra
    if "enhancer" in so:
        lines.append(f"{'enhancer s/frame (ours)':28s} {so['enhancer'] / max(ours.get('frames', 1), 1):>14.2f}")
    lines.append(f"fps: cold {mo['fps_cold']:.3f}  warm {mo['fps_warm']:.3f} | RTF: cold {mo['rtf_cold']:.2f}  "
                 f"warm {mo['rtf_warm']:.2f} | peak RAM ours {ours['peak_rss_mb']:.0f} MB"
                 + (f", original {orig['peak_rss_mb']:.0f} MB" if su and "peak_rss_mb" in orig else "")
                 + (f" | peak GPU {ours['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in ours else ""))
    for note in ours.get("notes", []):
        lines.append(f"note: {note}")
    if orig and "error" in orig:
        lines.append(f"note: {orig['error']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    ap.add_argument("--enhancer", choices=("off", "on", "both"), default="both")
    ap.add_argument("--frames", type=int, help="cut the clip to N video frames (25 fps) for a short run")
    ap.add_argument("--batch-size", type=int, default=2, help="renderer frames per forward pass")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's, all cores)")
    ap.add_argument("--precision", choices=("fp32", "tf32", "fp16", "bf16"), default=None,
                    help="fp32 (exact, default), tf32 (CUDA), fp16 or bf16 (the renderer under autocast)")
    ap.add_argument("--no-fast-paths", action="store_true",
                    help="our renderer on torch's own CPU convolutions (no Winograd / FFT): the speed-memory trade")
    ap.add_argument("--compile", action="store_true", help="torch.compile the renderer networks")
    ap.add_argument("--checkpoints", help="checkpoint folder (default: $PARITY_DIR/checkpoints or random files)")
    ap.add_argument("--gfpgan-weights", help="GFPGAN/facexlib weights folder")
    ap.add_argument("--cache", default=str(REPO / "artifacts" / "bench"), help="where random files are written")
    ap.add_argument("--no-upstream", dest="upstream", action="store_false",
                    help="do not time the original even when UPSTREAM_PYTHON/UPSTREAM_ROOT are set")
    ap.add_argument("--json", help="also write all measurements to this JSON file")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = ap.parse_args(argv)
    if args.upstream and not (os.environ.get("UPSTREAM_PYTHON") and os.environ.get("UPSTREAM_ROOT")):
        args.upstream = False
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    engine = argparse.ArgumentParser(add_help=False)
    engine.add_argument("--engine", choices=("sadtalker", "ditto"), default="sadtalker")
    chosen, rest = engine.parse_known_args(argv)
    if chosen.engine == "ditto":   # its own stages, options and original (bench_ditto.py's --help)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_ditto
        return bench_ditto.main(rest)
    args = parse_args(rest)
    if args.one:  # child: one configuration of ours, cold
        spec = json.loads(args.one)
        result = run_ours(spec["size"], spec["preprocess"], spec["enhance"], Path(spec["image"]),
                          Path(spec["audio"]), Path(spec["ck"]), Path(spec["gw"]), args)
        sys.stdout.write("BENCH-JSON " + json.dumps(result) + "\n")
        return 0
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    enhance_modes = {"off": [False], "on": [True], "both": [False, True]}[args.enhancer]
    frames = args.frames
    if frames is not None and args.upstream and frames < UPSTREAM_MIN_FRAMES:
        print(f"--frames {frames} raised to {UPSTREAM_MIN_FRAMES}: the original cannot smooth fewer frames",
              file=sys.stderr)
        frames = UPSTREAM_MIN_FRAMES
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    image, audio, num_frames = make_inputs(work, frames)
    audio_seconds = num_frames / 25.0
    ck, gw = checkpoint_folders(args, {CONFIGS[c][0] for c in names}, True in enhance_modes)
    print(f"benchmark: {num_frames} frames ({audio_seconds:.2f} s of audio), checkpoints {ck}, "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    results = []
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    for name in names:
        size, preprocess = CONFIGS[name]
        for enhance in enhance_modes:
            label = f"{name}{' + enhancer' if enhance else ''}"
            spec = {"size": size, "preprocess": preprocess, "enhance": enhance, "image": str(image),
                    "audio": str(audio), "ck": str(ck), "gw": str(gw)}
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *passthrough, "--one",
                                   json.dumps(spec)], capture_output=True, text=True,
                                  env=child_environment(bench_settings(args)))
            line = [x for x in proc.stdout.splitlines() if x.startswith("BENCH-JSON ")]
            if proc.returncode != 0 or not line:
                print(f"== {label}: ours failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}", flush=True)
                continue
            ours = json.loads(line[-1][len("BENCH-JSON "):])
            orig = run_upstream(size, preprocess, enhance, image, audio, ck, gw, args) if args.upstream else None
            print(format_table(label, ours, orig, audio_seconds), flush=True)
            print(f"load average now {os.getloadavg()[0]:.2f}", flush=True)
            results.append({"config": label, "ours": ours, "original": orig, "audio_seconds": audio_seconds})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
