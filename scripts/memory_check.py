"""Peak memory of an engine for a short and a long clip: frames stream into the encoder, so the peak resident set
must not grow with the clip's length (the target: 60 s within 15% of 10 s).

    python scripts/memory_check.py                                        # the landmark engine (no weights)
    python scripts/memory_check.py --engine sadtalker --checkpoints DIR   # the SadTalker engine from a folder

Each length runs in its own process, through the service's input reader and the engine's generate(); the peak RSS
(getrusage ru_maxrss) of each is printed. The SadTalker engine on random-weight files takes ~6 s a frame on two
CPU cores: give it short lengths (e.g. --lengths 2,12).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SadTalker"))

from sadtalker.runtime.malloc_tuning import child_environment  # noqa: E402
from sadtalker.service.settings import ServiceSettings  # noqa: E402


def one_run(seconds: float, preprocess: str, engine_name: str, checkpoints: str | None, image: Path) -> dict:
    """Generate one clip in this process and report its peak RSS."""
    import numpy as np
    import soundfile

    from sadtalker.engines.registry import load_engine
    from sadtalker.io.inputs import read_inputs
    from sadtalker.options import GenerationOptions
    from sadtalker.weights import CheckpointLocations

    locations = CheckpointLocations(checkpoint_dir=Path(checkpoints)) if checkpoints else CheckpointLocations()
    engine = load_engine(engine_name, locations, "auto")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        t = np.arange(int(seconds * 16000)) / 16000
        soundfile.write(str(wav), (0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(3 * t))).astype(np.float32),
                        16000)
        started = time.perf_counter()
        options = GenerationOptions(preprocess=preprocess, batch_size=4, engine=engine_name)
        result = engine.generate(read_inputs(image, wav, options), options, Path(tmp) / "out.mp4")
        elapsed = time.perf_counter() - started
    return {"seconds": seconds, "frames": result.num_frames, "size": [result.width, result.height],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "wall_s": round(elapsed, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="landmark", help="landmark (default), sadtalker")
    parser.add_argument("--checkpoints", help="checkpoint folder (engines with weights)")
    parser.add_argument("--preprocess", default="full", help="crop, resize, full, ... (default full: big frames)")
    parser.add_argument("--lengths", default="10,60", help="clip lengths in seconds, comma separated")
    parser.add_argument("--image", help="portrait (default: skimage's astronaut)")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.image is None:
        from PIL import Image
        from skimage import data

        args.image = str(Path(tempfile.gettempdir()) / "memory_check_astronaut.png")
        Image.fromarray(data.astronaut()).save(args.image)
    if args.child is not None:
        print(json.dumps(one_run(args.child, args.preprocess, args.engine, args.checkpoints, Path(args.image))))
        return 0
    rows = []
    for seconds in (float(s) for s in args.lengths.split(",")):
        cmd = [sys.executable, __file__, "--child", str(seconds), "--preprocess", args.preprocess, "--image",
               args.image, "--engine", args.engine] + (["--checkpoints", args.checkpoints] if args.checkpoints else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True,
                              env=child_environment(ServiceSettings.from_env()))
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{rows[-1]['seconds']:6.1f} s clip: {rows[-1]['frames']} frames {rows[-1]['size']}, "
              f"peak RSS {rows[-1]['peak_rss_mb']:.0f} MB, {rows[-1]['wall_s']} s", flush=True)
    base, longest = rows[0]["peak_rss_mb"], rows[-1]["peak_rss_mb"]
    growth = (longest - base) / base
    print(f"peak RSS growth from {rows[0]['seconds']:g} s to {rows[-1]['seconds']:g} s: {growth * 100:+.1f}% "
          f"({'within' if growth <= 0.15 else 'OVER'} the 15% budget)")
    return 0 if growth <= 0.15 else 1


if __name__ == "__main__":
    sys.exit(main())
