"""Benchmark: mel windows of a 60 s clip (issue 4 asks for under 1 s on the CPU). Prints, asserts nothing.

Usage: .venv/bin/python scripts/bench_mel.py [seconds]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SadTalker"))

from sadtalker.engines.sadtalker.mel import audio_windows  # noqa: E402


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    wav = (0.1 * np.random.default_rng(0).standard_normal(int(seconds * 16000))).astype(np.float32)
    audio_windows(wav[:16000])  # warm-up: mel basis, imports
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        windows = audio_windows(wav)
        runs.append(time.perf_counter() - start)
    print(f"{seconds:.0f} s clip -> windows {windows.shape}: best {min(runs):.3f} s, runs {[round(r, 3) for r in runs]}")


if __name__ == "__main__":
    main()
