"""Time one LMDM clip (80 frames, guided DDIM) of ours against the original's LMDM module in its own interpreter,
alternating, on the same random-weight file in the official layout and the same inputs.

    python scripts/bench_ditto_motion.py [--steps 50] [--rounds 3] [--threads 2]

Needs DITTO_UPSTREAM_PYTHON and DITTO_UPSTREAM_ROOT (what `scripts/parity_data.py --only ditto` exports: the
original's virtual environment and the extracted sources); the LMDM file is $DITTO_PARITY_DIR's, else written here.
The original's module (core/models/modules/LMDM.py) is imported at run time in its interpreter, never copied; it
runs float32 on the CPU (its wrapper's default device is CUDA).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "SadTalker")]

# Runs in the original's interpreter: argv = upstream root, lmdm file, steps, threads; prints one JSON line per clip.
ORIGINAL = r"""
import json, sys, time, types
import torch
root, path, steps, threads, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
base = root + "/ditto"
for name in ("core", "core.models", "core.models.modules"):   # skip the package __init__ (it compiles Cython)
    module = types.ModuleType(name)
    module.__path__ = [base + "/" + name.replace(".", "/")]
    sys.modules.setdefault(name, module)
from core.models.modules.LMDM import LMDM
model = LMDM(audio_feat_dim=1103, device="cpu").load_model(path)   # the release cfg's sizes
g = torch.Generator().manual_seed(0)
kp, aud = torch.randn(1, 265, generator=g) * 0.05, torch.randn(1, 80, 1103, generator=g)
for _ in range(rounds):
    line = sys.stdin.readline()   # wait for our turn
    if not line:
        break
    t = time.perf_counter()
    model.ddim_sample(kp, aud, steps)
    print(json.dumps({"seconds": time.perf_counter() - t}), flush=True)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3, help="clips timed per side (after one warm-up each)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    python, upstream = os.environ.get("DITTO_UPSTREAM_PYTHON"), os.environ.get("DITTO_UPSTREAM_ROOT")
    if not python or not upstream:
        ap.error("set DITTO_UPSTREAM_PYTHON and DITTO_UPSTREAM_ROOT (eval \"$(python3 scripts/parity_data.py "
                 "--only ditto)\")")
    import torch

    from sadtalker.engines.ditto.random_motion_weights import write_random_lmdm
    from sadtalker.engines.ditto.sampler import DDIMSampler, draw_initial_noise, draw_step_noise
    from sadtalker.engines.ditto.weights import DittoCheckpoints, load_lmdm

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        golden = os.environ.get("DITTO_PARITY_DIR")
        path = DittoCheckpoints(root=Path(golden) / "checkpoints").network_file("lmdm") if golden else None
        if path is None or not path.is_file():
            path = write_random_lmdm(Path(tmp) / "lmdm_v0.4_hubert.pth")
        sampler = DDIMSampler(load_lmdm(path), args.steps)
        g = torch.Generator().manual_seed(0)
        kp, aud = torch.randn(1, 265, generator=g) * 0.05, torch.randn(1, 80, 1103, generator=g)
        noise = draw_step_noise(args.steps, (1, 80, 265), g)
        x_T = draw_initial_noise((1, 80, 265), g)
        orig = subprocess.Popen([python, "-c", ORIGINAL, upstream, str(path), str(args.steps), str(args.threads),
                                 str(args.rounds + 1)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        times: dict[str, list[float]] = {"ours": [], "original": []}
        try:
            for i in range(args.rounds + 1):   # round 0 warms both up
                orig.stdin.write("go\n")
                orig.stdin.flush()
                line = orig.stdout.readline()
                if not line:
                    raise SystemExit(f"the original's interpreter stopped (exit {orig.wait()})")
                t = time.perf_counter()
                with torch.inference_mode():
                    sampler.sample(kp, aud, x_T, noise)
                ours = time.perf_counter() - t
                if i:
                    times["original"].append(json.loads(line)["seconds"])
                    times["ours"].append(ours)
        finally:
            orig.stdin.close()
            orig.wait()
    o, u = statistics.median(times["original"]), statistics.median(times["ours"])
    print(f"one LMDM clip, {args.steps} steps, {args.threads} threads: original {o:.2f} s, ours {u:.2f} s "
          f"(median of {args.rounds}); original / ours = {o / u:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
