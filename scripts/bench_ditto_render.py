"""Time Ditto's per-frame renderer (warp + decoder at 512) of ours against the original's modules, interleaved, on
the same random-weight files in the official layouts.

    python scripts/bench_ditto_render.py [--upstream ../shared/upstream] [--frames 3] [--device cpu]

The original's modules are imported from the upstream snapshot (ROOT/ditto/core/models/modules, plain PyTorch) and
run in float32 like ours (its wrappers would enter fp16 autocast, also on CPU).
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SadTalker"))

from sadtalker.engines.ditto.random_weights import write_random_checkpoints
from sadtalker.engines.ditto.render import FrameRenderer
from sadtalker.engines.ditto.weights import load_network, remap_spectral_norm
from sadtalker.nets.ditto.spade_decoder import build_decoder
from sadtalker.nets.ditto.warping_network import WarpingNetwork

logger = logging.getLogger("bench_ditto_render")


def original_modules(upstream: Path):
    """The original WarpingNetwork and SPADEDecoder classes, imported without the package's __init__ side effects."""
    base = upstream / "ditto"
    for name in ("core", "core.models", "core.models.modules"):
        module = types.ModuleType(name)
        module.__path__ = [str(base / name.replace(".", "/"))]
        sys.modules.setdefault(name, module)
    from core.models.modules.spade_generator import SPADEDecoder
    from core.models.modules.warping_network import WarpingNetwork
    return WarpingNetwork, SPADEDecoder


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", type=Path, default=ROOT.parent / "shared" / "upstream")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = write_random_checkpoints(Path(tmp), seed=0, names=("warp_network", "decoder"))
        ours = {"warp_network": load_network(WarpingNetwork(), "warp_network", checkpoints).to(device),
                "decoder": load_network(build_decoder(), "decoder", checkpoints, remap=remap_spectral_norm).to(device)}
        OrigWarp, OrigDecoder = original_modules(args.upstream)
        orig_warp = OrigWarp().load_model(str(checkpoints.network_file("warp_network"))).to(device)
        orig_dec = OrigDecoder().load_model(str(checkpoints.network_file("decoder"))).to(device)
    renderer = FrameRenderer(ours["warp_network"], ours["decoder"])
    g = torch.Generator().manual_seed(0)
    f_s = torch.randn(1, 32, 16, 64, 64, generator=g).to(device)
    x_s = (torch.rand(1, 21, 3, generator=g) - 0.5).to(device)
    x_d = x_s + 0.02 * torch.randn(1, 21, 3, generator=g).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {"ours": [], "original": []}
    with torch.inference_mode():
        for i in range(args.frames + 1):   # the first round warms up
            for name in ("original", "ours"):
                sync()
                t0 = time.perf_counter()
                if name == "ours":
                    renderer.render(f_s, x_s, x_d)
                else:
                    orig_dec(orig_warp(f_s, x_s, x_d))
                sync()
                if i:
                    times[name].append(time.perf_counter() - t0)
    for name, values in times.items():
        logger.info("%-8s median %.3f s per frame (%s)", name, statistics.median(values),
                    ", ".join(f"{v:.3f}" for v in values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
