"""Dense motion network of face-vid2vid (the original's DenseMotionNetwork, keys `generator.dense_motion_network.*`;
with `DenseMotionConfig.liveportrait()`, the one inside LivePortrait's warping module that Ditto loads).

From source and driving keypoints it builds K+1 candidate warps (identity plus one translation per keypoint),
warps a compressed source feature volume with each, and lets a 3D hourglass choose per voxel (softmax mask);
it also predicts the occlusion map that gates the warped features.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.nets.render_blocks import Hourglass3d, coordinate_grid_3d


@dataclass(frozen=True)
class DenseMotionConfig:
    """facerender.yaml `generator_params.dense_motion_params` (+ num_kp, feature_channel from `common_params`)."""

    num_kp: int = 15
    feature_channel: int = 32
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_depth: int = 16
    compress: int = 4
    kp_variance: float = 0.01
    mask_floor: float | None = 1e-3   # SadTalker zeroes mask weights below this before blending; LivePortrait: None

    @classmethod
    def liveportrait(cls) -> DenseMotionConfig:
        """LivePortrait's warping module (Ditto's `warp_network.pth`): 21 keypoints, no mask floor."""
        return cls(num_kp=21, mask_floor=None)


class DenseMotion(NamedTuple):
    mask: torch.Tensor           # (B, K+1, D, H, W) softmax over the K+1 warps
    deformation: torch.Tensor    # (B, D, H, W, 3) sampling grid into the source volume
    occlusion_map: torch.Tensor  # (B, 1, H, W) in 0..1


def keypoint_gaussians(kp: torch.Tensor, grid: torch.Tensor, variance: float) -> torch.Tensor:
    """(B, K, 3) keypoints on a (D, H, W, 3) grid -> (B, K, D, H, W) unnormalized Gaussians."""
    diff = grid[None, None] - kp[:, :, None, None, None, :]        # (B, K, D, H, W, 3)
    return torch.exp(-0.5 * (diff**2).sum(-1) / variance)


class DenseMotionNetwork(nn.Module):
    def __init__(self, cfg: DenseMotionConfig = DenseMotionConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        k1 = cfg.num_kp + 1
        self.hourglass = Hourglass3d(cfg.block_expansion, k1 * (cfg.compress + 1), cfg.num_blocks, cfg.max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, k1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(cfg.feature_channel, cfg.compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(cfg.compress)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters * cfg.reshape_depth, 1, kernel_size=7, padding=3)

    def compress_feature(self, feature: torch.Tensor) -> torch.Tensor:
        """(B, 32, D, H, W) source volume -> (B, 4, D, H, W); depends on the source only, so callers may cache it."""
        return F.relu(self.norm(self.compress(feature)))

    def forward(self, compressed: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> DenseMotion:
        """compressed (1 or B, 4, D, H, W) from `compress_feature`; keypoints (B, K, 3)."""
        b, k = kp_driving.shape[:2]
        _, c, d, h, w = compressed.shape
        grid = coordinate_grid_3d(d, h, w, kp_driving.dtype, kp_driving.device)       # (D, H, W, 3)

        # K warps: driving-space point p samples the source at p - kp_driving + kp_source; plus the identity.
        per_kp = grid[None, None] - kp_driving[:, :, None, None, None, :] + kp_source[:, :, None, None, None, :]
        sparse_motion = torch.cat([grid[None, None].expand(b, 1, d, h, w, 3), per_kp], dim=1)  # (B, K+1, D, H, W, 3)

        volume = compressed.expand(b, c, d, h, w).unsqueeze(1).expand(b, k + 1, c, d, h, w)
        warped = F.grid_sample(volume.reshape(b * (k + 1), c, d, h, w),
                               sparse_motion.reshape(b * (k + 1), d, h, w, 3), align_corners=False)
        warped = warped.view(b, k + 1, c, d, h, w)                                # (B, K+1, 4, D, H, W)

        var = self.cfg.kp_variance
        heat = keypoint_gaussians(kp_driving, grid, var) - keypoint_gaussians(kp_source, grid, var)   # (B, K, D, H, W)
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1).unsqueeze(2)          # (B, K+1, 1, D, H, W)

        features = torch.cat([heat, warped], dim=2).view(b, -1, d, h, w)          # (B, (K+1)*5, D, H, W)
        prediction = self.hourglass(features)                                     # (B, 112, D, H, W)

        mask = F.softmax(self.mask(prediction), dim=1)              # (B, K+1, D, H, W)
        floor = self.cfg.mask_floor
        weights = (mask if floor is None else torch.where(mask < floor, torch.zeros_like(mask), mask)).unsqueeze(2)
        deformation = (sparse_motion.permute(0, 1, 5, 2, 3, 4) * weights).sum(dim=1)  # (B, 3, D, H, W)
        deformation = deformation.permute(0, 2, 3, 4, 1)                         # (B, D, H, W, 3)

        occlusion = torch.sigmoid(self.occlusion(prediction.reshape(b, -1, h, w)))  # (B, 1, H, W)
        return DenseMotion(mask=mask, deformation=deformation, occlusion_map=occlusion)
