"""A tiny LMDM (real 265/1103/80 interface, small width) for fast CPU tests of Ditto's motion half."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sadtalker.engines.ditto.conditions import SourceConditions
from sadtalker.engines.ditto.random_motion_weights import random_lmdm, write_random_lmdm
from sadtalker.nets.ditto.lmdm import LMDM, LMDMConfig

TINY = LMDMConfig(latent_dim=32, ff_size=64, num_layers=2, num_heads=4)


def tiny_lmdm(seed: int = 0) -> LMDM:
    return random_lmdm(TINY, seed)


def write_tiny_lmdm(path: Path, seed: int = 0) -> Path:
    return write_random_lmdm(path, TINY, seed)


def source_inputs(seed: int = 0) -> tuple[dict[str, np.ndarray], SourceConditions]:
    """A plausible source motion dict and eye/keypoint conditions."""
    rs = np.random.RandomState(seed)
    motion = {"scale": np.full((1, 1), 1.02, np.float32), "pitch": rs.randn(1, 66).astype(np.float32),
              "yaw": rs.randn(1, 66).astype(np.float32), "roll": rs.randn(1, 66).astype(np.float32),
              "t": rs.randn(1, 3).astype(np.float32) * 0.05, "exp": rs.randn(1, 21, 3).astype(np.float32) * 0.02,
              "kp": rs.randn(1, 21, 3).astype(np.float32) * 0.3}
    source = SourceConditions(eye_open=rs.rand(1, 2).astype(np.float32), eye_ball=rs.randn(1, 6).astype(np.float32),
                              keypoints=motion["kp"].reshape(63))
    return motion, source
