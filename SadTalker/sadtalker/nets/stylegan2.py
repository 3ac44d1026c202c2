"""StyleGAN2 decoder with spatial feature transform: the generative face prior of GFPGAN.

The original calls it `StyleGAN2GeneratorCSFT` (on top of basicsr's `StyleGAN2GeneratorClean`, the variant without
custom CUDA ops). Module and buffer names follow the official `GFPGANv1.4.pth` keys under `stylegan_decoder.`.
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

LEAKY_SLOPE = 0.2


def stylegan_channels(multiplier: int = 2, narrow: float = 1.0) -> dict[int, int]:
    """Feature channels per resolution (4 .. 1024 px) of the StyleGAN2 'config-f' family."""
    wide = {4: 512, 8: 512, 16: 512, 32: 512}
    scaled = {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    out = {res: int(ch * narrow) for res, ch in wide.items()}
    out.update({res: int(ch * multiplier * narrow) for res, ch in scaled.items()})
    return out


class ModulatedConv2d(nn.Module):
    """Convolution whose weight is scaled per sample by a style vector (and optionally demodulated); no bias.

    The per-sample weights run as one grouped convolution, so a batch costs one call.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, upsample: bool = False, eps: float = 1e-8) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.eps = eps
        self.modulation = nn.Linear(num_style_feat, in_channels, bias=True)
        self.weight = nn.Parameter(
            torch.randn(1, out_channels, in_channels, kernel_size, kernel_size) / math.sqrt(in_channels * kernel_size ** 2)
        )

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.shape  # (B, C_in, H, W)
        scale = self.modulation(style).view(b, 1, c, 1, 1)  # (B, 1, C_in, 1, 1)
        weight = self.weight * scale  # (B, C_out, C_in, k, k)
        if self.demodulate:
            # Demodulation in float32: under fp16 autocast the squared sum over C_in*k*k terms could overflow.
            demod = torch.rsqrt(weight.float().pow(2).sum(dim=(2, 3, 4)) + self.eps)  # (B, C_out)
            weight = weight * demod.to(weight.dtype).view(b, self.out_channels, 1, 1, 1)
        weight = weight.view(b * self.out_channels, c, self.kernel_size, self.kernel_size)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)  # (B, C_in, 2H, 2W)
        h, w = x.shape[2:]
        out = F.conv2d(x.reshape(1, b * c, h, w), weight.to(x.dtype), padding=self.kernel_size // 2, groups=b)
        return out.view(b, self.out_channels, h, w)  # (B, C_out, H', W')


class StyleConv(nn.Module):
    """Modulated 3x3 conv, then per-pixel noise x learned strength, bias, and leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, num_style_feat: int, upsample: bool = False) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, 3, num_style_feat, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = self.modulated_conv(x, style) * math.sqrt(2.0)  # (B, C_out, H, W); sqrt(2): leaky-ReLU gain
        out = out + self.weight * noise + self.bias  # noise (B or 1, 1, H, W)
        return F.leaky_relu(out, LEAKY_SLOPE)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation), added to the upsampled image of the previous resolution."""

    def __init__(self, in_channels: int, num_style_feat: int, upsample: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_channels, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias  # (B, 3, H, W)
        if skip is not None:
            if self.upsample:
                skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    """The learned 4x4 start tensor."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.expand(batch, -1, -1, -1)  # (B, C, 4, 4)


class PixelNorm(nn.Module):
    """Normalises each style code to unit root-mean-square (first layer of the mapping MLP)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class StyleGAN2DecoderSFT(nn.Module):
    """StyleGAN2 synthesis network whose first conv at each resolution is followed by a spatial feature transform
    (x * scale + shift) on half of the channels (`sft_half`), with scale/shift maps coming from GFPGAN's U-Net.

    `style_mlp` (the mapping network) is kept for checkpoint compatibility; GFPGAN feeds latents directly.
    """

    def __init__(self, out_size: int = 512, num_style_feat: int = 512, num_mlp: int = 8, channel_multiplier: int = 2,
                 narrow: float = 1.0, sft_half: bool = True) -> None:
        super().__init__()
        self.num_style_feat = num_style_feat
        self.sft_half = sft_half
        mlp: list[nn.Module] = [PixelNorm()]
        for _ in range(num_mlp):
            mlp += [nn.Linear(num_style_feat, num_style_feat), nn.LeakyReLU(LEAKY_SLOPE)]
        self.style_mlp = nn.Sequential(*mlp)

        channels = stylegan_channels(channel_multiplier, narrow)
        self.log_size = int(math.log2(out_size))
        self.num_layers = (self.log_size - 2) * 2 + 1  # style convs: one at 4 px, two per later resolution
        self.num_latent = self.log_size * 2 - 2  # style vectors consumed (convs + to-RGBs, sharing)

        self.constant_input = ConstantInput(channels[4], 4)
        self.style_conv1 = StyleConv(channels[4], channels[4], num_style_feat)
        self.to_rgb1 = ToRGB(channels[4], num_style_feat, upsample=False)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i, (h, _) in enumerate(self.noise_shapes()):
            self.noises.register_buffer(f"noise{i}", torch.randn(1, 1, h, h))
        in_ch = channels[4]
        for log_res in range(3, self.log_size + 1):
            out_ch = channels[2 ** log_res]
            self.style_convs.append(StyleConv(in_ch, out_ch, num_style_feat, upsample=True))
            self.style_convs.append(StyleConv(out_ch, out_ch, num_style_feat))
            self.to_rgbs.append(ToRGB(out_ch, num_style_feat))
            in_ch = out_ch

    def noise_shapes(self) -> list[tuple[int, int]]:
        """(h, w) of the noise map of each style conv, in forward order: 4, 8, 8, 16, 16, ... px."""
        return [(2 ** ((i + 5) // 2),) * 2 for i in range(self.num_layers)]  # type: ignore[misc]

    def stored_noise(self) -> list[torch.Tensor]:
        return [getattr(self.noises, f"noise{i}") for i in range(self.num_layers)]

    def draw_noise(self, batch: int, like: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Fresh N(0, 1) maps, one per style conv and sample (what the original does with randomize_noise=True)."""
        return [
            torch.randn(batch, 1, h, w, generator=generator, device=like.device, dtype=torch.float32).to(like.dtype)
            for h, w in self.noise_shapes()
        ]

    def forward(self, latent: torch.Tensor, conditions: Sequence[torch.Tensor],
                noise: Sequence[torch.Tensor]) -> torch.Tensor:
        """latent (B, num_latent, 512) W+ codes; conditions: [scale, shift] per resolution 8 .. out_size px;
        noise: one map per style conv (see `noise_shapes`). Returns (B, 3, out_size, out_size)."""
        b = latent.shape[0]
        out = self.style_conv1(self.constant_input(b), latent[:, 0], noise[0])  # (B, 512, 4, 4)
        skip = self.to_rgb1(out, latent[:, 1])  # (B, 3, 4, 4)
        for level, to_rgb in enumerate(self.to_rgbs):
            i = 2 * level + 1  # latent index and noise index of this resolution's first conv
            out = self.style_convs[2 * level](out, latent[:, i], noise[i])  # (B, C, 2H, 2W)
            if i < len(conditions):
                scale, shift = conditions[i - 1], conditions[i]
                if self.sft_half:
                    keep, mod = out.split(out.shape[1] // 2, dim=1)
                    out = torch.cat([keep, mod * scale + shift], dim=1)
                else:
                    out = out * scale + shift
            out = self.style_convs[2 * level + 1](out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)  # (B, 3, 2H, 2W)
        return skip
