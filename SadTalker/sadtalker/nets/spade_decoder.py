"""SPADE decoder of the face renderers: SadTalker's (the original's SPADEDecoder, keys `generator.decoder.*`) and
LivePortrait's G, which Ditto loads from `decoder.pth` (`upscale=2`, spectral norm folded by its loader).

The warped feature map conditions every SPADE layer; two 2x upsamplings take 64x64 features to a 256x256 image
(128 -> 512 for SadTalker's 512 model); LivePortrait's final pixel shuffle doubles that again (64 -> 512).
Sigmoid output in 0..1.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.nets.render_blocks import SPADEResnetBlock

NUM_MIDDLE_BLOCKS = 6


class SPADEDecoder(nn.Module):
    def __init__(self, in_channels: int = 256, out_channels: int = 64, spade_hidden: int = 128, upscale: int = 1,
                 spectral_norm: bool = True) -> None:
        """`upscale` > 1: the image head predicts 3 * upscale**2 channels and pixel-shuffles them (keys
        `conv_img.0.*`); `spectral_norm`: see SPADEResnetBlock."""
        super().__init__()
        ic, oc = in_channels, out_channels
        self.fc = nn.Conv2d(ic, 2 * ic, kernel_size=3, padding=1)
        for i in range(NUM_MIDDLE_BLOCKS):
            setattr(self, f"G_middle_{i}", SPADEResnetBlock(2 * ic, 2 * ic, ic, spade_hidden, spectral_norm))
        self.up_0 = SPADEResnetBlock(2 * ic, ic, ic, spade_hidden, spectral_norm)
        self.up_1 = SPADEResnetBlock(ic, oc, ic, spade_hidden, spectral_norm)
        if upscale > 1:
            self.conv_img: nn.Module = nn.Sequential(OrderedDict([
                ("0", nn.Conv2d(oc, 3 * upscale ** 2, kernel_size=3, padding=1)), ("1", nn.PixelShuffle(upscale))]))
        else:
            self.conv_img = nn.Conv2d(oc, 3, kernel_size=3, padding=1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        seg = feature                                         # (B, 256, h, w)
        x = self.fc(feature)                                  # (B, 512, h, w)
        for i in range(NUM_MIDDLE_BLOCKS):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2), seg)  # (B, 256, 2h, 2w)
        x = self.up_1(F.interpolate(x, scale_factor=2), seg)  # (B, 64, 4h, 4w)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))   # (B, 3, 4h, 4w) x upscale
