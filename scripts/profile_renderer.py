"""Where the face renderer's per-frame time goes: seconds per module of one forward pass on CPU.

    python scripts/profile_renderer.py [--size 256] [--batch-size 2] [--repeats 2] [--no-fast-paths] [--ops]

Weights are random in the official layout ($PARITY_DIR/checkpoints when set, else written by
sadtalker.engines.sadtalker.random_weights under artifacts/bench/); compute does not depend on the values. Times are inclusive per module (forward hooks),
the best of `--repeats` passes after one warm-up; `--ops` also prints torch.profiler's top operators.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "SadTalker")]

if __name__ == "__main__":  # as the service runs (see sadtalker/runtime/malloc_tuning.py)
    from sadtalker.runtime.malloc_tuning import reexec_with_tunables
    from sadtalker.service.settings import ServiceSettings

    reexec_with_tunables(ServiceSettings.from_env())

logger = logging.getLogger("profile_renderer")


def _checkpoints(size: int) -> Path:
    if os.environ.get("PARITY_DIR"):
        return Path(os.environ["PARITY_DIR"]) / "checkpoints"
    from sadtalker.engines.sadtalker.random_weights import write_official_file

    folder = ROOT / "artifacts" / "bench" / "checkpoints"
    write_official_file(f"SadTalker_V0.0.2_{size}.safetensors", folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-fast-paths", action="store_true", help="the renderer's CPU kernels off (sadtalker.accel)")
    ap.add_argument("--ops", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    from sadtalker.accel import AccelConfig
    from sadtalker.engines.sadtalker.render import FaceRenderer
    from sadtalker.weights import CheckpointLocations

    ck = _checkpoints(args.size)
    renderer = FaceRenderer.from_checkpoint(CheckpointLocations(checkpoint_dir=ck, gfpgan_dir=ck), size=args.size,
                                            accel=AccelConfig(cpu_kernels=not args.no_fast_paths))
    gen = renderer.generator
    b = args.batch_size
    torch.manual_seed(0)
    with torch.inference_mode():
        appearance = gen.extract_appearance(torch.rand(1, 3, args.size, args.size))
        kp_source = torch.rand(1, 15, 3).sub(0.5).expand(b, -1, -1)
        kp_driving = (kp_source + 0.02 * torch.randn(b, 15, 3))

        totals: dict[str, float] = defaultdict(float)
        starts: dict[str, float] = {}
        tracked = {name: m for name, m in gen.named_modules() if name and name.count(".") <= 2}
        handles = []
        for name, module in tracked.items():
            handles.append(module.register_forward_pre_hook(lambda m, i, n=name: starts.__setitem__(n, time.perf_counter())))
            handles.append(module.register_forward_hook(
                lambda m, i, o, n=name: totals.__setitem__(n, totals[n] + time.perf_counter() - starts[n])))

        renderer._render(appearance, kp_source, kp_driving)   # warm-up (and one-time caches)
        best: dict[str, float] | None = None
        best_total = float("inf")
        for _ in range(args.repeats):
            totals.clear()
            t = time.perf_counter()
            renderer._render(appearance, kp_source, kp_driving)
            total = time.perf_counter() - t
            if total < best_total:
                best_total, best = total, dict(totals)
        for h in handles:
            h.remove()
        assert best is not None
        logger.info("render pass, batch %d, %d threads: %.2f s (%.2f s per frame)", b, torch.get_num_threads(),
                    best_total, best_total / b)
        for name, secs in sorted(best.items(), key=lambda kv: -kv[1]):
            if secs >= 0.01 * best_total:
                logger.info("  %-45s %7.3f s  %5.1f %%", name, secs, 100 * secs / best_total)
        if args.ops:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
                renderer._render(appearance, kp_source, kp_driving)
            logger.info("%s", prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total",
                                                                                  row_limit=30))


if __name__ == "__main__":
    main()
