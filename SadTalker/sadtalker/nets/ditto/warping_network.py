"""Warping module W of LivePortrait (Ditto's `warp_network.pth`): deforms the source feature volume f_s from the
source keypoints to the driving ones (5-D grid sampling), folds depth into channels and masks occluded parts."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.nets.ditto.dense_motion import DenseMotion, DenseMotionNetwork
from sadtalker.nets.ditto.layers import SameBlock2d


@dataclass(frozen=True)
class WarpingConfig:
    """Released values (the original's constructor defaults and its fixed dense-motion parameters)."""

    num_kp: int = 21
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channel: int = 32
    reshape_depth: int = 16
    dense_block_expansion: int = 32
    dense_max_features: int = 1024
    dense_num_blocks: int = 5
    compress: int = 4
    kp_variance: float = 0.01


class WarpingNetwork(nn.Module):
    def __init__(self, config: WarpingConfig = WarpingConfig()) -> None:
        super().__init__()
        c = config
        self.config = c
        self.dense_motion_network = DenseMotionNetwork(
            block_expansion=c.dense_block_expansion, num_blocks=c.dense_num_blocks, max_features=c.dense_max_features,
            num_kp=c.num_kp, feature_channel=c.reshape_channel, reshape_depth=c.reshape_depth, compress=c.compress,
            kp_variance=c.kp_variance)
        width = c.block_expansion * 2 ** c.num_down_blocks
        self.third = SameBlock2d(c.max_features, width, leaky=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)

    def forward(self, feature_3d: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
                motion: DenseMotion | None = None) -> torch.Tensor:
        """f_s (B, 32, 16, 64, 64), keypoints (B, 21, 3) -> warped features (B, 256, 64, 64).

        `motion` lets a caller that already ran the dense-motion network (to inspect it) reuse its result.
        """
        if motion is None:
            motion = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        out = F.grid_sample(feature_3d, motion.deformation, align_corners=False)   # (B, 32, 16, 64, 64)
        b, c, d, h, w = out.shape
        out = self.fourth(self.third(out.view(b, c * d, h, w)))           # (B, 256, 64, 64)
        return out * motion.occlusion_map
