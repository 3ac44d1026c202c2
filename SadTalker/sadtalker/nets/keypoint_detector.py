"""Canonical 3D keypoint detector of face-vid2vid (SadTalker's KPDetector, keys `kp_extractor.*`).

A 2D encoder lifts the (anti-aliased, downscaled) source image to a 3D feature volume; a softmax heatmap per
keypoint gives its expected (x, y, z) position in [-1, 1].
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.nets.render_blocks import AntiAliasDownsample, DownBlock2d, UpBlock3d, coordinate_grid_3d


@dataclass(frozen=True)
class KPDetectorConfig:
    """facerender.yaml `kp_detector_params` + `common_params`."""

    num_kp: int = 15
    image_channel: int = 3
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    temperature: float = 0.1
    scale_factor: float = 0.25
    reshape_channel: int = 16384
    reshape_depth: int = 16


class KPHourglass(nn.Module):
    """2D down path, 1x1 conv, reshape channels to (C/D, D) depth, 3D up path."""

    def __init__(self, cfg: KPDetectorConfig) -> None:
        super().__init__()
        e, m, n = cfg.block_expansion, cfg.max_features, cfg.num_blocks
        widths = [cfg.image_channel] + [min(m, e * 2 ** (i + 1)) for i in range(n)]
        self.down_blocks = nn.Sequential(OrderedDict(
            (f"down{i}", DownBlock2d(widths[i], widths[i + 1])) for i in range(n)))
        self.conv = nn.Conv2d(widths[-1], cfg.reshape_channel, kernel_size=1)
        self.up_blocks = nn.Sequential(OrderedDict(
            (f"up{i}", UpBlock3d(min(m, e * 2 ** (n - i)), min(m, e * 2 ** (n - i - 1)))) for i in range(n)))
        self.reshape_depth = cfg.reshape_depth
        self.out_filters = min(m, e)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.down_blocks(x))                                  # (B, 16384, h, w)
        b, c, h, w = out.shape
        out = out.view(b, c // self.reshape_depth, self.reshape_depth, h, w)  # (B, 1024, 16, h, w)
        return self.up_blocks(out)                                            # (B, 32, 16, 32h, 32w)


class KPDetector(nn.Module):
    """Source image (B, 3, S, S) in 0..1 -> canonical keypoints (B, num_kp, 3)."""

    def __init__(self, cfg: KPDetectorConfig = KPDetectorConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.predictor = KPHourglass(cfg)
        self.kp = nn.Conv3d(self.predictor.out_filters, cfg.num_kp, kernel_size=3, padding=1)
        self.down = AntiAliasDownsample(cfg.image_channel, cfg.scale_factor)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.down(image)                                       # (B, 3, S/4, S/4)
        logits = self.kp(self.predictor(x))                        # (B, K, D, H, W)
        b, k, d, h, w = logits.shape
        heatmap = F.softmax(logits.view(b, k, -1) / self.cfg.temperature, dim=2).view(b, k, d, h, w, 1)
        grid = coordinate_grid_3d(d, h, w, logits.dtype, logits.device)          # (D, H, W, 3)
        return (heatmap * grid).sum(dim=(2, 3, 4))                 # (B, K, 3)
