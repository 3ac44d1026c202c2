"""SPADE decoder G of LivePortrait (Ditto's `decoder.pth`): warped 64x64 features -> 512x512 RGB in 0..1. Every
SPADE layer is conditioned on the warped features; two nearest 2x upsamplings and a final pixel shuffle."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.nets.ditto.layers import SPADEResnetBlock


@dataclass(frozen=True)
class DecoderConfig:
    """Released values (the original's constructor defaults: upscale 2 -> 512x512 output)."""

    in_channels: int = 256
    out_channels: int = 64
    num_middle_blocks: int = 6
    spade_hidden: int = 128
    upscale: int = 2


class SPADEDecoder(nn.Module):
    def __init__(self, config: DecoderConfig = DecoderConfig()) -> None:
        super().__init__()
        c = config
        self.config = c
        ic, oc = c.in_channels, c.out_channels
        self.fc = nn.Conv2d(ic, 2 * ic, kernel_size=3, padding=1)
        for i in range(c.num_middle_blocks):
            setattr(self, f"G_middle_{i}", SPADEResnetBlock(2 * ic, 2 * ic, ic, c.spade_hidden))
        self.up_0 = SPADEResnetBlock(2 * ic, ic, ic, c.spade_hidden)
        self.up_1 = SPADEResnetBlock(ic, oc, ic, c.spade_hidden)
        self.up = nn.Upsample(scale_factor=2)
        if c.upscale > 1:
            self.conv_img = nn.Sequential(OrderedDict([
                ("0", nn.Conv2d(oc, 3 * c.upscale ** 2, kernel_size=3, padding=1)),
                ("1", nn.PixelShuffle(c.upscale))]))
        else:
            self.conv_img = nn.Conv2d(oc, 3, kernel_size=3, padding=1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """(B, 256, 64, 64) warped features -> (B, 3, 512, 512) RGB in 0..1."""
        seg = feature
        x = self.fc(feature)                                              # (B, 512, 64, 64)
        for i in range(self.config.num_middle_blocks):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(self.up(x), seg)                                    # (B, 256, 128, 128)
        x = self.up_1(self.up(x), seg)                                    # (B, 64, 256, 256)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))        # (B, 3, 512, 512)
