"""Appearance feature extractor F of LivePortrait (Ditto's `appearance_extractor.pth`): source image -> 3-D
appearance feature volume f_s that the warping network deforms."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from sadtalker.nets.render_blocks import DownBlock2d, ResBlock3d, SameBlock2d


@dataclass(frozen=True)
class AppearanceExtractorConfig:
    """Released values (the original constructs the module with its defaults)."""

    image_channel: int = 3
    block_expansion: int = 64
    num_down_blocks: int = 2
    max_features: int = 512
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6


class AppearanceFeatureExtractor(nn.Module):
    def __init__(self, config: AppearanceExtractorConfig = AppearanceExtractorConfig()) -> None:
        super().__init__()
        c = config
        self.config = c
        self.first = SameBlock2d(c.image_channel, c.block_expansion)
        widths = [min(c.max_features, c.block_expansion * 2 ** i) for i in range(c.num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(DownBlock2d(widths[i], widths[i + 1]) for i in range(c.num_down_blocks))
        self.second = nn.Conv2d(widths[-1], c.max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential(OrderedDict(
            (f"3dr{i}", ResBlock3d(c.reshape_channel)) for i in range(c.num_resblocks)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) RGB in 0..1 -> f_s (B, 32, 16, 64, 64)."""
        out = self.first(image)                                   # (B, 64, 256, 256)
        for block in self.down_blocks:
            out = block(out)                                      # (B, 128, 128, 128) -> (B, 256, 64, 64)
        out = self.second(out)                                    # (B, 512, 64, 64)
        b, _, h, w = out.shape
        volume = out.view(b, self.config.reshape_channel, self.config.reshape_depth, h, w)  # (B, 32, 16, 64, 64)
        return self.resblocks_3d(volume)
