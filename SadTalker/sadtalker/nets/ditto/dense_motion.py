"""Dense motion network of LivePortrait's warping module: from source and driving keypoints, a softmax mix of
per-keypoint 3-D flows (deformation) and a 2-D occlusion map, predicted by a 3-D hourglass."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.nets.ditto.layers import Hourglass, coordinate_grid, keypoint_gaussians


class DenseMotion(NamedTuple):
    mask: torch.Tensor            # (B, K+1, D, H, W) softmax weights: background + one per keypoint
    deformation: torch.Tensor     # (B, D, H, W, 3) sampling grid into the source volume
    occlusion_map: torch.Tensor   # (B, 1, H, W)


class DenseMotionNetwork(nn.Module):
    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_kp: int, feature_channel: int,
                 reshape_depth: int, compress: int, kp_variance: float = 0.01) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.kp_variance = kp_variance
        self.hourglass = Hourglass(block_expansion, (num_kp + 1) * (compress + 1), num_blocks, max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters * reshape_depth, 1, kernel_size=7, padding=3)

    def forward(self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> DenseMotion:
        """feature (B, C, D, H, W) source volume; keypoints (B, K, 3)."""
        feature = F.relu(self.norm(self.compress(feature)))               # (B, 4, D, H, W)
        b, c, d, h, w = feature.shape
        k = self.num_kp
        grid = coordinate_grid(d, h, w, kp_source)                        # (D, H, W, 3)

        # 1. sparse motions: identity for the background, a keypoint-relative shift for each keypoint
        shifted = grid[None, None] - kp_driving.view(b, k, 1, 1, 1, 3) + kp_source.view(b, k, 1, 1, 1, 3)
        sparse = torch.cat([grid.expand(b, 1, d, h, w, 3), shifted], dim=1)   # (B, K+1, D, H, W, 3)

        # 2. the compressed source volume deformed by each of them
        volumes = feature.unsqueeze(1).expand(b, k + 1, c, d, h, w).reshape(b * (k + 1), c, d, h, w)
        deformed = F.grid_sample(volumes, sparse.reshape(b * (k + 1), d, h, w, 3), align_corners=False)
        deformed = deformed.view(b, k + 1, c, d, h, w)

        # 3. keypoint heatmaps (driving minus source), zero for the background
        heat = keypoint_gaussians(kp_driving, grid, self.kp_variance) - keypoint_gaussians(kp_source, grid,
                                                                                           self.kp_variance)
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1).unsqueeze(2)   # (B, K+1, 1, D, H, W)

        prediction = self.hourglass(torch.cat([heat, deformed], dim=2).view(b, -1, d, h, w))   # (B, 142, D, H, W)
        mask = F.softmax(self.mask(prediction), dim=1)                    # (B, K+1, D, H, W)
        deformation = (sparse.permute(0, 1, 5, 2, 3, 4) * mask.unsqueeze(2)).sum(dim=1)   # (B, 3, D, H, W)
        deformation = deformation.permute(0, 2, 3, 4, 1)                  # (B, D, H, W, 3)
        occlusion = torch.sigmoid(self.occlusion(prediction.reshape(b, -1, h, w)))   # (B, 1, H, W)
        return DenseMotion(mask=mask, deformation=deformation, occlusion_map=occlusion)
