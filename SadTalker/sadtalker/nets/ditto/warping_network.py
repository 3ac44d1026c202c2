"""Warping module W of LivePortrait (Ditto's `warp_network.pth`): deforms the source feature volume f_s from the
source keypoints to the driving ones (5-D grid sampling), folds depth into channels and masks occluded parts.

Its dense motion network is face-vid2vid's (`nets/dense_motion.py`) with LivePortrait's settings."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.nets.dense_motion import DenseMotion, DenseMotionConfig, DenseMotionNetwork
from sadtalker.nets.render_blocks import SameBlock2d


@dataclass(frozen=True)
class WarpingConfig:
    """Released values (the original's constructor defaults and its fixed dense-motion parameters)."""

    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig.liveportrait)


class WarpingNetwork(nn.Module):
    def __init__(self, config: WarpingConfig = WarpingConfig()) -> None:
        super().__init__()
        c = config
        self.config = c
        self.dense_motion_network = DenseMotionNetwork(c.dense_motion)
        width = c.block_expansion * 2 ** c.num_down_blocks
        self.third = SameBlock2d(c.max_features, width, leaky=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)

    def compress(self, feature_3d: torch.Tensor) -> torch.Tensor:
        """The dense motion network's input volume; it depends on the source only, so a clip computes it once."""
        return self.dense_motion_network.compress_feature(feature_3d)

    def forward(self, feature_3d: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
                motion: DenseMotion | None = None, compressed: torch.Tensor | None = None) -> torch.Tensor:
        """f_s (1 or B, 32, 16, 64, 64), keypoints (B, 21, 3) -> warped features (B, 256, 64, 64).

        `compressed`: `compress(f_s)` when the caller kept it; `motion`: the dense motion network's result when the
        caller already ran it (to inspect it).
        """
        if motion is None:
            motion = self.dense_motion_network(self.compress(feature_3d) if compressed is None else compressed,
                                               kp_driving, kp_source)
        b = kp_driving.shape[0]
        volume = feature_3d.expand(b, *feature_3d.shape[1:])
        out = F.grid_sample(volume, motion.deformation, align_corners=False)   # (B, 32, 16, 64, 64)
        _, c, d, h, w = out.shape
        out = self.fourth(self.third(out.reshape(b, c * d, h, w)))             # (B, 256, 64, 64)
        return out * motion.occlusion_map
