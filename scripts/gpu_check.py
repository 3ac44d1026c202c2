"""The first thing to run on a GPU machine: does the SadTalker engine compute the same numbers there, how fast, in how
much memory, and does an out-of-memory leave it working?

    python scripts/gpu_check.py                      # on CUDA: the full check (a few minutes on one GPU)
    python scripts/gpu_check.py --device cpu --quick # the same code paths on the CPU, small (CI, under a minute)

Needs only torch, numpy and safetensors (no librosa, soundfile, gradio, ffmpeg or espeak: a bare accelerator
machine with a copy of the tree). It writes random-weight checkpoints in the official layouts (compute does not
depend on the values), then prints one table:
- renderer frames for one crop and 20 frames: CPU plain, CPU fast paths, CUDA fp32 / tf32 / fp16 / bf16, each
  against CPU plain (max and mean difference, uint8 levels and float), all finite;
- seconds per frame and peak GPU memory at 256 and 512 for batch sizes 1, 2, 8, 32 (synchronised);
- determinism (two CUDA runs equal) and the out-of-memory path (a capped memory fraction, an oversized batch
  refused cleanly, a normal batch working afterwards);
- the 3DMM regressor, the face detector and the audio-to-motion networks, CPU against the device;
- the Ditto engine: its renderer (warp + decoder, 512) per path and precision against CPU plain, seconds per frame
  and peak GPU memory for batches 1, 4, 16, one guided LMDM clip (80 frames, 50 DDIM steps) against the CPU and
  its seconds, and the real-time factor at 512 these give (motion + renderer per second of speech; HuBERT,
  stitching, paste-back and encoding not included).
With --json the measurements are also written to a file.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SadTalker"))

from sadtalker.accel import AccelConfig  # noqa: E402
from sadtalker.engines.sadtalker.random_weights import write_checkpoints  # noqa: E402
from sadtalker.engines.sadtalker.render import FaceRenderer, renderer_coefficients, to_uint8  # noqa: E402
from sadtalker.runtime.device import configure_precision  # noqa: E402
from sadtalker.weights import CheckpointLocations, load  # noqa: E402

logger = logging.getLogger("gpu_check")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")


def diff(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    d = (a - b).abs()
    return {"max": float(d.max()), "mean": float(d.mean()), "finite": bool(torch.isfinite(a).all())}


def frames_uint8(frames: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.stack([to_uint8(f) for f in frames.permute(0, 2, 3, 1).float().cpu().numpy()]))


class Check:
    """Collects table rows: (section, what, values) and prints them."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []
        self.data: dict[str, Any] = {}
        self.failures: list[str] = []

    def add(self, section: str, what: str, text: str, ok: bool = True, **data: Any) -> None:
        self.rows.append((section, what, text + ("" if ok else "  <-- FAIL")))
        self.data[f"{section}/{what}"] = data
        if not ok:
            self.failures.append(f"{section} {what}: {text}")
        logger.info("%-10s %-36s %s", section, what, text)

    def table(self) -> str:
        lines = ["| check | case | result |", "|---|---|---|"]
        lines += [f"| {s} | {w} | {t} |" for s, w, t in self.rows]
        return "\n".join(lines)


def synthetic_crop(size: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, S, S) in 0..1: smooth random shapes (a face-like test picture without skimage or files)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def coefficient_rows(frames: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    coeffs = (rng.normal(size=(frames, 70)) * 0.1).astype(np.float32)
    source = (rng.normal(size=73) * 0.1).astype(np.float32)
    return renderer_coefficients(coeffs, source, "crop")


def render_frames(renderer: FaceRenderer, image: torch.Tensor, target: np.ndarray, source: np.ndarray,
                  batch: int) -> torch.Tensor:
    state = renderer.prepare_source(image, source, "crop")
    return torch.cat([b.frames.cpu() for b in renderer.render_batches(state, target, "crop", batch_size=batch)])


def check_renderer(check: Check, locations: CheckpointLocations, device: torch.device, quick: bool) -> None:
    """Frames of every precision and path against CPU plain fp32."""
    frames, size = (2, 128) if quick else (20, 256)
    image = synthetic_crop(size)
    target, source = coefficient_rows(frames)
    cpu = torch.device("cpu")
    configure_precision(cpu, "fp32")
    reference = render_frames(FaceRenderer.from_checkpoint(locations, 256, cpu, accel=None), image, target, source, 2)
    ref8 = frames_uint8(reference)
    variants: list[tuple[str, Callable[[], torch.Tensor]]] = [
        ("cpu fast paths", lambda: render_frames(FaceRenderer.from_checkpoint(locations, 256, cpu), image, target,
                                                 source, 2))]
    for precision in PRECISIONS:
        if device.type == "cpu" and precision in ("fp16", "bf16"):
            # reduced precisions are meant for CUDA; on the CPU they are slow enough to stall the quick check
            check.add("frames", f"cpu {precision}", "checked on CUDA only (CPU half convolutions take minutes)")
            continue

        def run(p: str = precision) -> torch.Tensor:
            configure_precision(device, p)
            renderer = FaceRenderer.from_checkpoint(locations, 256, device, precision="fp32" if p == "tf32" else p)
            try:
                return render_frames(renderer, image, target, source, 2)
            finally:
                configure_precision(device, "fp32")
        variants.append((f"{device.type} {precision}", run))
    for name, run in variants:
        try:
            got = run()
        except (RuntimeError, NotImplementedError) as exc:  # e.g. fp16 convolutions without a kernel on this CPU
            check.add("frames", name, f"not run here ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})")
            continue
        f = diff(got, reference)
        u = diff(frames_uint8(got).float(), ref8.float())
        exact = name in ("cpu fast paths", f"{device.type} fp32")
        tolerance = 2e-3 if exact else 0.05   # fp32 paths: the parity tolerance; reduced precisions: visually equal
        ok = f["finite"] and f["max"] <= tolerance
        check.add("frames", name, f"max {f['max']:.2e} mean {f['mean']:.2e} (float); max {u['max']:.0f} mean "
                  f"{u['mean']:.3f} (uint8 levels); finite {f['finite']}", ok, float=f, uint8=u)


def timed(device: torch.device, run: Callable[[], Any]) -> tuple[float, float, Any] | None:
    """(seconds, peak GPU MB or NaN, result) of `run()`, synchronised on CUDA; None when it ran out of device memory
    (the cache is emptied so the next case starts clean)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        result = run()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return seconds, torch.cuda.max_memory_allocated(device) / 2**20 if cuda else float("nan"), result


def check_speed(check: Check, locations: CheckpointLocations, device: torch.device, quick: bool) -> None:
    sizes = (256,) if quick else (256, 512)
    batches = (1, 2) if quick else (1, 2, 8, 32)
    cuda = device.type == "cuda"
    for size in sizes:
        renderer = FaceRenderer.from_checkpoint(locations, size, device)
        pixels = 128 if quick else size
        for batch in batches:
            frames = max(batch, 2) if quick else max(2 * batch, 8)
            target, source = coefficient_rows(frames)
            image = synthetic_crop(pixels)
            render_frames(renderer, image, target[:batch], source, batch)   # warm-up (kernels, caches)
            result = timed(device, lambda: render_frames(renderer, image, target, source, batch))
            if result is None:
                check.add("speed", f"{size} batch {batch}", "out of memory")
                continue
            per_frame, peak = result[0] / frames, result[1]
            label = f"{size} batch {batch}" + (f" ({pixels}px input)" if quick else "")
            check.add("speed", label, f"{per_frame:.4f} s/frame, peak GPU {peak:.0f} MB" if cuda else
                      f"{per_frame:.4f} s/frame", seconds_per_frame=per_frame, peak_gpu_mb=peak)


def check_determinism_and_oom(check: Check, locations: CheckpointLocations, device: torch.device,
                              quick: bool) -> None:
    renderer = FaceRenderer.from_checkpoint(locations, 256, device)
    pixels = 128 if quick else 256
    image = synthetic_crop(pixels)
    target, source = coefficient_rows(4)
    a = render_frames(renderer, image, target, source, 2)
    b = render_frames(renderer, image, target, source, 2)
    check.add("determinism", f"two {device.type} runs", f"max difference {float((a - b).abs().max()):.1e}",
              torch.equal(a, b))
    if device.type != "cuda":
        check.add("oom", "capped memory", "CUDA only: the refusal is unit-tested on the CPU with a stand-in")
        return
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(4 * 2**30 / total, device)   # about 4 GB for this process
    try:
        big, big_source = coefficient_rows(64)
        try:
            render_frames(renderer, image, big, big_source, 64)
            check.add("oom", "batch 64 under a 4 GB cap", "did not run out of memory (the cap was not reached)")
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            check.add("oom", "batch 64 under a 4 GB cap", f"refused cleanly ({str(exc).splitlines()[0][:60]}...)")
        after = render_frames(renderer, image, target, source, 2)
        check.add("oom", "batch 2 afterwards", f"max difference to before {float((after - a).abs().max()):.1e}",
                  torch.equal(after, a))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)


def check_other_networks(check: Check, locations: CheckpointLocations, device: torch.device) -> None:
    """3DMM regressor, RetinaFace, audio2exp / audio2pose: the same inputs on the CPU and the device."""
    from sadtalker.engines.sadtalker.motion import draw_pose_noise, predict_expression, predict_pose
    from sadtalker.nets.audio2exp import Audio2Exp
    from sadtalker.nets.audio2pose import Audio2Pose
    from sadtalker.nets.face_recon import FaceReconNet
    from sadtalker.nets.retinaface import RetinaFace

    g = torch.Generator().manual_seed(3)
    cases: list[tuple[str, torch.nn.Module, Callable[[torch.nn.Module, torch.device], Any]]] = []
    face_input = torch.rand(2, 3, 224, 224, generator=g)
    cases.append(("3DMM (face_3drecon)", load(FaceReconNet(), "face_3drecon", locations),
                  lambda net, dev: net(face_input.to(dev))))
    detector_input = torch.rand(1, 3, 320, 320, generator=g) * 255 - 117
    cases.append(("RetinaFace", RetinaFace().eval(), lambda net, dev: torch.cat(
        [t.flatten(1) for t in net(detector_input.to(dev))], 1)))
    windows = torch.randn(40, 80, 16, generator=g) * 2
    ref_exp = torch.randn(40, 64, generator=g) * 0.1
    blink = torch.zeros(40, 1)
    cases.append(("audio2exp", load(Audio2Exp(), "audio2exp", locations), lambda net, dev: predict_expression(
        net, windows.to(dev), ref_exp.to(dev), blink.to(dev))))
    noise = draw_pose_noise(40, torch.Generator().manual_seed(0))
    cases.append(("audio2pose", load(Audio2Pose(), "audio2pose", locations), lambda net, dev: predict_pose(
        net, windows.to(dev), torch.zeros(6, device=dev), 3, noise.to(dev))))
    configure_precision(device, "fp32")
    for name, net, run in cases:
        with torch.inference_mode():
            on_cpu = run(net.cpu().eval(), torch.device("cpu"))
            on_device = run(net.to(device).eval(), device)
        d = diff(on_device, on_cpu)
        scale = float(on_cpu.abs().max()) or 1.0
        check.add("networks", name, f"max {d['max']:.2e} (relative {d['max'] / scale:.1e}), finite {d['finite']}",
                  d["finite"] and d["max"] <= 1e-3 * max(scale, 1.0), **d)


def check_ditto(check: Check, folder: Path, device: torch.device, quick: bool) -> None:
    """Ditto's renderer and LMDM: the device against CPU plain fp32, speed, and the real-time factor at 512."""
    from sadtalker.engines.ditto.random_motion_weights import write_random_lmdm
    from sadtalker.engines.ditto.random_weights import write_random_checkpoints
    from sadtalker.engines.ditto.render import FrameRenderer
    from sadtalker.engines.ditto.sampler import DDIMSampler, draw_initial_noise, draw_step_noise
    from sadtalker.engines.ditto.weights import load_lmdm, load_network, remap_spectral_norm
    from sadtalker.nets.ditto.spade_decoder import build_decoder
    from sadtalker.nets.ditto.warping_network import WarpingNetwork

    checkpoints = write_random_checkpoints(folder / "ditto", seed=0, names=("warp_network", "decoder"))
    lmdm_file = write_random_lmdm(checkpoints.network_file("lmdm"))
    cpu, cuda = torch.device("cpu"), device.type == "cuda"

    def renderer(dev: torch.device, precision: str = "fp32", fast: bool = False) -> FrameRenderer:
        warp = load_network(WarpingNetwork(), "warp_network", checkpoints).to(dev)
        decoder = load_network(build_decoder(), "decoder", checkpoints, remap=remap_spectral_norm).to(dev)
        return FrameRenderer(warp, decoder, precision=precision, accel=AccelConfig() if fast else None)

    g = torch.Generator().manual_seed(5)
    f_s = torch.randn(1, 32, 16, 64, 64, generator=g)
    x_s = (torch.rand(1, 21, 3, generator=g) - 0.5) * 0.6
    frames = 1 if quick else 4
    x_d = x_s + 0.02 * torch.randn(frames, 21, 3, generator=g)
    configure_precision(cpu, "fp32")
    reference = renderer(cpu).render(f_s, x_s, x_d)
    # (row, device, precision): the fast paths on the CPU, then every precision on CUDA
    variants = [("cpu fast paths", cpu, "fp32")] + [(f"cuda {p}", device, p) for p in PRECISIONS if cuda]
    for name, dev, precision in variants:
        configure_precision(dev, precision)
        try:
            got = renderer(dev, "fp32" if precision == "tf32" else precision, fast=True).render(f_s, x_s, x_d)
        finally:
            configure_precision(dev, "fp32")
        d = diff(got, reference)
        tolerance = 2e-3 if precision == "fp32" else 0.05
        check.add("ditto frames", name, f"max {d['max']:.2e} mean {d['mean']:.2e} (0..1); finite {d['finite']}",
                  d["finite"] and d["max"] <= tolerance, **d)
    # speed at 512 on the device
    per_frame: dict[str, float] = {}
    for precision in ("fp32", "fp16") if cuda else ("fp32",):
        configure_precision(device, precision)
        model = renderer(device, precision, fast=True)
        for batch in (1,) if quick else (1, 4, 16):
            n = batch if quick else max(2 * batch, 8)
            drive = x_s + 0.02 * torch.randn(n, 21, 3, generator=g)
            list(model.frames(f_s, x_s, drive[:batch], batch))   # warm-up (kernels, derived weights)
            result = timed(device, lambda: list(model.frames(f_s, x_s, drive, batch)))
            if result is None:
                check.add("ditto speed", f"512 {precision} batch {batch}", "out of memory")
                continue
            seconds, peak = result[0] / n, result[1]
            per_frame[precision] = min(seconds, per_frame.get(precision, float("inf")))
            check.add("ditto speed", f"512 {precision} batch {batch}",
                      f"{seconds:.4f} s/frame" + (f", peak GPU {peak:.0f} MB" if cuda else ""),
                      seconds_per_frame=seconds, peak_gpu_mb=peak)
        configure_precision(device, "fp32")
        del model
    # one LMDM clip: the device against the CPU, and its time
    steps = 10 if quick else 50
    shape = (1, 80, 265)
    cond_frame, aud = torch.randn(1, 265, generator=g) * 0.05, torch.randn(1, 80, 1103, generator=g)
    step_noise, x_T = draw_step_noise(steps, shape, g), draw_initial_noise(shape, g)
    clips: dict[str, torch.Tensor] = {}
    clip_seconds = float("nan")
    for name, dev in (("cpu", cpu), (device.type, device)) if cuda else (("cpu", cpu),):
        sampler = DDIMSampler(load_lmdm(lmdm_file, device=dev), steps)
        with torch.inference_mode():
            sampler.sample(cond_frame, aud, x_T, step_noise)   # warm-up
            result = timed(dev, lambda: sampler.sample(cond_frame, aud, x_T, step_noise))
        if result is None:
            check.add("ditto motion", f"LMDM clip, {steps} steps, {name}", "out of memory", ok=False)
            return
        clip_seconds, clips[name] = result[0], result[2].cpu()
        check.add("ditto motion", f"LMDM clip, {steps} steps, {name}", f"{clip_seconds:.3f} s per 80-frame clip",
                  seconds=clip_seconds)
    if cuda:
        d = diff(clips["cuda"], clips["cpu"])
        check.add("ditto motion", "LMDM clip cuda vs cpu", f"max {d['max']:.2e}, finite {d['finite']}",
                  d["finite"] and d["max"] <= 1e-3, **d)
    # real-time factor at 512: a clip advances 70 frames (80 minus the 10 fused), 25 frames per second of speech
    for precision, seconds in per_frame.items():
        rtf = 25 * (clip_seconds * 50 / steps / 70 + seconds)
        check.add("ditto RTF", f"512 {precision}" + (" (quick: steps scaled to 50)" if quick else ""),
                  f"{rtf:.3f} (goal < 0.3 on one H100/H200-class GPU)", rtf=rtf)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    ap.add_argument("--quick", action="store_true", help="small inputs and few frames (CI)")
    ap.add_argument("--json", help="also write the measurements to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --device cpu for the CPU-only check", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    started = time.perf_counter()
    check = Check()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        folder = Path(tmp) / "checkpoints"
        write_checkpoints(folder, None, (256,) if args.quick else (256, 512))
        locations = CheckpointLocations(checkpoint_dir=folder, gfpgan_dir=folder)
        check_renderer(check, locations, device, args.quick)
        check_speed(check, locations, device, args.quick)
        check_determinism_and_oom(check, locations, device, args.quick)
        check_other_networks(check, locations, device)
        check_ditto(check, Path(tmp), device, args.quick)
    header = (f"gpu_check on {name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}, "
              f"{'quick' if args.quick else 'full'}, {time.perf_counter() - started:.0f} s")
    print(header)
    print(check.table())
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "results": check.data}, indent=1))
    if check.failures:
        print("FAILED:\n  " + "\n  ".join(check.failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
