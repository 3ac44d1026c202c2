"""Face parsing network (19 classes, from PSFR-GAN) used by GFPGAN's paste-back to mask the restored face.

The original calls it facexlib `ParseNet(in_size=512, out_size=512, parsing_ch=19)`; names follow the official
`parsing_parsenet.pth` keys (a bare state dict).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

# Classes of the 19-class CelebAMask-HQ labelling that are NOT face for the paste-back mask:
# 0 background, 14 neck, 16 cloth, 17 hair, 18 hat.
NON_FACE_CLASSES = (0, 14, 16, 17, 18)


@dataclass(frozen=True)
class ParseNetConfig:
    """facexlib's `init_parsing_model('parsenet')` values (ParseNet defaults otherwise)."""

    in_size: int = 512
    out_size: int = 512
    min_feat_size: int = 32
    base_ch: int = 64
    parsing_ch: int = 19
    res_depth: int = 10
    min_ch: int = 32
    max_ch: int = 256


class ConvLayer(nn.Module):
    """[nearest 2x up] - reflection pad - conv (stride 2 when 'down') - [BatchNorm] - [leaky ReLU]."""

    def __init__(self, in_channels: int, out_channels: int, scale: str = "none", norm: bool = False,
                 act: bool = False) -> None:
        super().__init__()
        self.upsample = scale == "up"
        self.pad = 1  # ceil((3 - 1) / 2) for the 3x3 kernels used throughout
        # BatchNorm replaces the bias; the official keys are `conv2d.*` and `norm.norm.*`.
        self.conv2d = nn.Conv2d(in_channels, out_channels, 3, 2 if scale == "down" else 1, bias=not norm)
        self.norm = _NormHolder(out_channels) if norm else None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        out = self.conv2d(F.pad(x, (self.pad,) * 4, mode="reflect"))
        if self.norm is not None:
            out = self.norm.norm(out)
        if self.act:
            out = F.leaky_relu(out, 0.2)
        return out


class _NormHolder(nn.Module):
    """Only there to reproduce the official key path `<layer>.norm.norm.*`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)


class ResidualBlock(nn.Module):
    """Two conv layers (BN; leaky ReLU after the first) plus an identity or conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int, scale: str = "none") -> None:
        super().__init__()
        self.shortcut_func = (
            ConvLayer(in_channels, out_channels, scale) if scale != "none" or in_channels != out_channels else None
        )
        first, second = {"down": ("none", "down"), "up": ("up", "none"), "none": ("none", "none")}[scale]
        self.conv1 = ConvLayer(in_channels, out_channels, first, norm=True, act=True)
        self.conv2 = ConvLayer(out_channels, out_channels, second, norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut_func is None else self.shortcut_func(x)
        return identity + self.conv2(self.conv1(x))


class ParseNet(nn.Module):
    """Encoder (to 32x32) - 10 residual blocks with a global skip - decoder; heads for parsing logits and image."""

    def __init__(self, config: ParseNetConfig = ParseNetConfig()) -> None:
        super().__init__()
        self.config = config

        def clip(ch: int) -> int:
            return max(config.min_ch, min(ch, config.max_ch))

        min_feat = min(config.in_size, config.min_feat_size)
        down_steps = int(math.log2(config.in_size // min_feat))
        up_steps = int(math.log2(config.out_size // min_feat))
        ch = config.base_ch
        encoder: list[nn.Module] = [ConvLayer(3, ch)]
        for _ in range(down_steps):
            encoder.append(ResidualBlock(clip(ch), clip(ch * 2), "down"))
            ch *= 2
        self.encoder = nn.Sequential(*encoder)
        self.body = nn.Sequential(*(ResidualBlock(clip(ch), clip(ch)) for _ in range(config.res_depth)))
        decoder: list[nn.Module] = []
        for _ in range(up_steps):
            decoder.append(ResidualBlock(clip(ch), clip(ch // 2), "up"))
            ch //= 2
        self.decoder = nn.Sequential(*decoder)
        self.out_img_conv = ConvLayer(clip(ch), 3)
        self.out_mask_conv = ConvLayer(clip(ch), config.parsing_ch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, 512, 512) RGB in [-1, 1] -> (parsing logits (B, 19, 512, 512), image (B, 3, 512, 512))."""
        feat = self.encoder(x)  # (B, 256, 32, 32)
        feat = self.decoder(feat + self.body(feat))  # (B, 64, 512, 512)
        return self.out_mask_conv(feat), self.out_img_conv(feat)
