"""Adaptive Wing loss FAN (Wang et al. 2019), the 98-point WFLW face aligner of `alignment_WFLW_4HG.pth`
(facexlib's / SadTalker's `FAN(num_modules=4, num_landmarks=98)`): a CoordConv stem, four stacked hourglasses
with boundary-aware CoordConv inputs, and 99 heatmaps (98 points + a boundary map) at 64x64 per stack.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

NUM_LANDMARKS = 98
HEATMAP_SIZE = 64
INPUT_SIZE = 256


def coordinate_maps(batch: int, size: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """(B, 1, size, size) maps in -1..1: the first varies along rows, the second along columns, and the radius
    normalised by its maximum (the original's AddCoords with with_r; its 'x' map runs along the height axis)."""
    ramp = torch.arange(size, device=device, dtype=dtype) / (size - 1) * 2 - 1
    rows = ramp.view(1, 1, size, 1).expand(batch, 1, size, size)
    cols = ramp.view(1, 1, 1, size).expand(batch, 1, size, size)
    radius = torch.sqrt(rows ** 2 + cols ** 2)
    return rows, cols, radius / torch.max(radius)


class CoordConv(nn.Module):
    """Conv over [input, coordinate maps (+ the coordinates where the previous boundary heatmap is > 0.05)]."""

    def __init__(self, size: int, in_channels: int, out_channels: int, with_boundary: bool, **conv_args) -> None:
        super().__init__()
        self.size = size
        self.with_boundary = with_boundary
        extra = 3 + (2 if with_boundary else 0)
        self.conv = nn.Conv2d(in_channels + extra, out_channels, **conv_args)

    def forward(self, x: torch.Tensor, heatmap: torch.Tensor | None = None) -> torch.Tensor:
        rows, cols, radius = coordinate_maps(x.shape[0], self.size, x.device, x.dtype)
        parts = [x, rows, cols, radius]
        if self.with_boundary and heatmap is not None:
            boundary = torch.clamp(heatmap[:, -1:], 0.0, 1.0)  # (B, 1, 64, 64)
            zero = torch.zeros_like(rows)
            parts += [torch.where(boundary > 0.05, rows, zero), torch.where(boundary > 0.05, cols, zero)]
        return self.conv(torch.cat(parts, dim=1))


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)


class ConvBlock(nn.Module):
    """Pre-activation residual block whose three 3x3 convs (out/2, out/4, out/4 channels) are concatenated."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels // 2)
        self.bn2 = nn.BatchNorm2d(out_channels // 2)
        self.conv2 = conv3x3(out_channels // 2, out_channels // 4)
        self.bn3 = nn.BatchNorm2d(out_channels // 4)
        self.conv3 = conv3x3(out_channels // 4, out_channels // 4)
        self.downsample = None
        if in_channels != out_channels:
            self.downsample = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(True),
                                            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.cat([out1, out2, out3], dim=1) + shortcut


class HourGlass(nn.Module):
    """Depth-4 hourglass on 64x64 features; modules `b1_<level>`, `b2_<level>`, `b2_plus_1`, `b3_<level>`."""

    def __init__(self, depth: int, first: bool) -> None:
        super().__init__()
        self.depth = depth
        self.coordconv = CoordConv(HEATMAP_SIZE, 256, 256, with_boundary=not first, kernel_size=1)
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", ConvBlock(256, 256))
            self.add_module(f"b2_{level}", ConvBlock(256, 256))
            self.add_module(f"b3_{level}", ConvBlock(256, 256))
        self.add_module("b2_plus_1", ConvBlock(256, 256))

    def level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        upper = self._modules[f"b1_{level}"](x)
        lower = self._modules[f"b2_{level}"](F.avg_pool2d(x, 2, stride=2))
        lower = self.level(level - 1, lower) if level > 1 else self._modules["b2_plus_1"](lower)
        lower = self._modules[f"b3_{level}"](lower)
        return upper + F.interpolate(lower, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor, heatmap: torch.Tensor | None) -> torch.Tensor:
        return self.level(self.depth, self.coordconv(x, heatmap))


class AWingFAN(nn.Module):
    """(B, 3, 256, 256) BGR in 0..1 -> list of (B, 99, 64, 64) heatmaps, one per stack (the last is used)."""

    def __init__(self, num_modules: int = 4, num_landmarks: int = NUM_LANDMARKS) -> None:
        super().__init__()
        self.num_modules = num_modules
        self.conv1 = CoordConv(INPUT_SIZE, 3, 64, with_boundary=False, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, 256)
        for i in range(num_modules):
            self.add_module(f"m{i}", HourGlass(4, first=i == 0))
            self.add_module(f"top_m_{i}", ConvBlock(256, 256))
            self.add_module(f"conv_last{i}", nn.Conv2d(256, 256, kernel_size=1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(256))
            self.add_module(f"l{i}", nn.Conv2d(256, num_landmarks + 1, kernel_size=1))
            if i < num_modules - 1:
                self.add_module(f"bl{i}", nn.Conv2d(256, 256, kernel_size=1))
                self.add_module(f"al{i}", nn.Conv2d(num_landmarks + 1, 256, kernel_size=1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))           # (B, 64, 128, 128)
        x = F.avg_pool2d(self.conv2(x), 2, stride=2)  # (B, 128, 64, 64)
        features = self.conv4(self.conv3(x))          # (B, 256, 64, 64)
        heatmaps: list[torch.Tensor] = []
        previous: torch.Tensor | None = None
        for i in range(self.num_modules):
            hg = self._modules[f"m{i}"](features, previous)
            ll = self._modules[f"top_m_{i}"](hg)
            ll = F.relu(self._modules[f"bn_end{i}"](self._modules[f"conv_last{i}"](ll)))
            previous = self._modules[f"l{i}"](ll)     # (B, 99, 64, 64)
            heatmaps.append(previous)
            if i < self.num_modules - 1:
                features = features + self._modules[f"bl{i}"](ll) + self._modules[f"al{i}"](previous)
        return heatmaps
