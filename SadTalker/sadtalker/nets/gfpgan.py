"""GFPGAN v1 "clean": a U-Net encoder whose features steer a StyleGAN2 face prior through spatial feature
transforms (Wang et al. 2021, "Towards Real-World Blind Face Restoration with Generative Facial Prior").

The original calls it `GFPGANv1Clean`; names follow the official `GFPGANv1.4.pth` (`params_ema`) keys.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.nets.stylegan2 import LEAKY_SLOPE, StyleGAN2DecoderSFT, stylegan_channels

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GFPGANConfig:
    """GFPGANer's `arch='clean'` arguments for GFPGANv1.4 (as SadTalker builds it)."""

    out_size: int = 512
    num_style_feat: int = 512
    channel_multiplier: int = 2
    num_mlp: int = 8
    input_is_latent: bool = True
    different_w: bool = True
    narrow: float = 1.0
    sft_half: bool = True


class ResBlock(nn.Module):
    """conv3x3 - leaky ReLU - bilinear resample - conv3x3 - leaky ReLU, plus a resampled 1x1 skip."""

    def __init__(self, in_channels: int, out_channels: int, scale: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), LEAKY_SLOPE)
        out = F.interpolate(out, scale_factor=self.scale, mode="bilinear", align_corners=False)
        out = F.leaky_relu(self.conv2(out), LEAKY_SLOPE)  # (B, C_out, H*s, W*s)
        skip = self.skip(F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False))
        return out + skip


def _sft_branch(channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(LEAKY_SLOPE), nn.Conv2d(channels, out_channels, 3, 1, 1)
    )


class GFPGANv1Clean(nn.Module):
    """Restores an aligned 512x512 face given as RGB in [-1, 1]; returns RGB in about [-1, 1]."""

    def __init__(self, config: GFPGANConfig = GFPGANConfig()) -> None:
        super().__init__()
        self.config = config
        self.log_size = int(math.log2(config.out_size))
        unet = stylegan_channels(config.channel_multiplier, config.narrow * 0.5)  # the U-Net uses half the width
        size = config.out_size

        self.conv_body_first = nn.Conv2d(3, unet[size], 1)
        self.conv_body_down = nn.ModuleList(
            ResBlock(unet[2 ** r], unet[2 ** (r - 1)], 0.5) for r in range(self.log_size, 2, -1)
        )
        self.final_conv = nn.Conv2d(unet[4], unet[4], 3, 1, 1)
        self.conv_body_up = nn.ModuleList(
            ResBlock(unet[2 ** (r - 1)], unet[2 ** r], 2.0) for r in range(3, self.log_size + 1)
        )
        # Intermediate RGB heads, used only by the training losses; kept so the official file loads strictly.
        self.toRGB = nn.ModuleList(nn.Conv2d(unet[2 ** r], 3, 1) for r in range(3, self.log_size + 1))
        num_w = (self.log_size * 2 - 2) if config.different_w else 1
        self.final_linear = nn.Linear(unet[4] * 4 * 4, num_w * config.num_style_feat)
        self.stylegan_decoder = StyleGAN2DecoderSFT(
            out_size=size, num_style_feat=config.num_style_feat, num_mlp=config.num_mlp,
            channel_multiplier=config.channel_multiplier, narrow=config.narrow, sft_half=config.sft_half,
        )
        sft = (lambda c: c) if config.sft_half else (lambda c: 2 * c)
        self.condition_scale = nn.ModuleList(
            _sft_branch(unet[2 ** r], sft(unet[2 ** r])) for r in range(3, self.log_size + 1)
        )
        self.condition_shift = nn.ModuleList(
            _sft_branch(unet[2 ** r], sft(unet[2 ** r])) for r in range(3, self.log_size + 1)
        )

    def forward(self, x: torch.Tensor, noise: Sequence[torch.Tensor] | None = None, randomize_noise: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """x (B, 3, 512, 512) RGB in [-1, 1] -> (B, 3, 512, 512).

        Noise: explicit `noise` maps if given; else fresh N(0, 1) maps when `randomize_noise` (the original
        GFPGANer's behaviour, drawn from `generator`); else the checkpoint's stored maps (deterministic).
        """
        # 1. U-Net encoder
        feat = F.leaky_relu(self.conv_body_first(x), LEAKY_SLOPE)  # (B, 32, 512, 512)
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)  # halves: (B, 64, 256, 256) ... (B, 256, 4, 4)
            skips.append(feat)
        feat = F.leaky_relu(self.final_conv(feat), LEAKY_SLOPE)  # (B, 256, 4, 4)

        # 2. W+ latent codes, one per decoder layer
        latent = self.final_linear(feat.flatten(1))  # (B, 16 * 512)
        if self.config.different_w:
            latent = latent.view(latent.shape[0], -1, self.config.num_style_feat)  # (B, 16, 512)
        if not self.config.input_is_latent:  # (the original applies the MLP to the code as shaped here)
            latent = self.stylegan_decoder.style_mlp(latent)
        if not self.config.different_w:
            latent = latent.unsqueeze(1).expand(-1, self.stylegan_decoder.num_latent, -1)

        # 3. U-Net decoder: SFT scale/shift maps per resolution 8 .. 512 px
        conditions: list[torch.Tensor] = []
        for up, to_scale, to_shift, skip in zip(self.conv_body_up, self.condition_scale, self.condition_shift,
                                                reversed(skips)):
            feat = up(feat + skip)  # (B, C, 2H, 2W)
            conditions += [to_scale(feat), to_shift(feat)]

        # 4. StyleGAN2 prior, modulated by the conditions
        if noise is None:
            decoder = self.stylegan_decoder
            noise = decoder.draw_noise(x.shape[0], x, generator) if randomize_noise else decoder.stored_noise()
        return self.stylegan_decoder(latent, conditions, noise)  # (B, 3, 512, 512)
