"""Blocks shared by Ditto's LivePortrait networks (the original's `core/models/modules/util.py`).

Module attribute names follow the official state-dict keys (`conv`, `norm`, `mlp_shared.0`, ...).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def coordinate_grid(depth: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(D, H, W, 3) grid of (x, y, z) in [-1, 1], x to the right, y down, z inwards (grid_sample's order)."""
    def axis(n: int) -> torch.Tensor:
        return 2 * (torch.arange(n, dtype=like.dtype, device=like.device) / (n - 1)) - 1

    z, y, x = torch.meshgrid(axis(depth), axis(height), axis(width), indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def keypoint_gaussians(kp: torch.Tensor, grid: torch.Tensor, variance: float) -> torch.Tensor:
    """exp(-|p - kp|^2 / (2 variance)) on the grid: (B, K, 3) keypoints, (D, H, W, 3) grid -> (B, K, D, H, W)."""
    diff = grid[None, None] - kp[:, :, None, None, None, :]   # (B, K, D, H, W, 3)
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / variance)


class SameBlock2d(nn.Module):
    """3x3 conv + BatchNorm + ReLU (LeakyReLU(0.01) with `leaky`), resolution kept."""

    def __init__(self, in_features: int, out_features: int, leaky: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features)
        self.ac = nn.LeakyReLU() if leaky else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ac(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """3x3 conv + BatchNorm + ReLU + 2x2 average pooling."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features)
        self.pool = nn.AvgPool2d(kernel_size=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class ResBlock3d(nn.Module):
    """Pre-activation 3-D residual block: (BN, ReLU, conv) twice, plus the input."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(features)
        self.norm2 = nn.BatchNorm3d(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class DownBlock3d(nn.Module):
    """3x3x3 conv + BatchNorm + ReLU, then halve height and width (depth kept)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features)
        self.pool = nn.AvgPool3d(kernel_size=(1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class UpBlock3d(nn.Module):
    """Nearest 2x upsampling of height and width, then 3x3x3 conv + BatchNorm + ReLU."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1, 2, 2))
        return F.relu(self.norm(self.conv(x)))


def _hourglass_width(block_expansion: int, max_features: int, level: int) -> int:
    return min(max_features, block_expansion * 2 ** level)


class HourglassEncoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        widths = [in_features] + [_hourglass_width(block_expansion, max_features, i + 1) for i in range(num_blocks)]
        self.down_blocks = nn.ModuleList(DownBlock3d(widths[i], widths[i + 1]) for i in range(num_blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            skip = 1 if i == num_blocks - 1 else 2   # every block but the first also reads its encoder skip
            blocks.append(UpBlock3d(skip * _hourglass_width(block_expansion, max_features, i + 1),
                                    _hourglass_width(block_expansion, max_features, i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """3-D U-Net of the dense-motion network: `num_blocks` (1, 2, 2) poolings and back, with skips."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class SPADE(nn.Module):
    """Spatially-adaptive normalization: instance norm, then scale (1 + gamma) and shift beta predicted from a map."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(OrderedDict([
            ("0", nn.Conv2d(label_nc, hidden, kernel_size=3, padding=1)), ("1", nn.ReLU())]))
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        hidden = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(hidden)) + self.mlp_beta(hidden)


class SPADEResnetBlock(nn.Module):
    """Two SPADE + LeakyReLU(0.2) + conv steps with a (learned, if widths differ) shortcut.

    The official convolutions carry spectral norm (`weight_orig`, `weight_u`, `weight_v`); the loader folds them
    into the plain `weight` these convolutions hold (see engines/ditto/weights.py).
    """

    def __init__(self, fin: int, fout: int, label_nc: int, hidden: int = 128) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1)
        self.conv_1 = nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1)
        self.norm_0 = SPADE(fin, label_nc, hidden)
        self.norm_1 = SPADE(fmiddle, label_nc, hidden)
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(fin, fout, kernel_size=1, bias=False)
            self.norm_s = SPADE(fin, label_nc, hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return shortcut + dx
