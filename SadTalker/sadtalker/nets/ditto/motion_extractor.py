"""Motion extractor M of LivePortrait (Ditto's `motion_extractor.pth`): a ConvNeXt-V2 tiny backbone whose heads give
the canonical keypoints, head pose (pitch/yaw/roll as 66 bins of 3 degrees), translation, expression deformation
and scale of a 256x256 face crop."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MotionExtractorConfig:
    """Released values: ConvNeXt-V2 tiny, 21 keypoints, 66 pose bins."""

    in_channels: int = 3
    depths: tuple[int, ...] = (3, 3, 9, 3)
    dims: tuple[int, ...] = (96, 192, 384, 768)
    num_kp: int = 21
    num_bins: int = 66


class MotionInfo(NamedTuple):
    """Raw head outputs for a batch; pose entries are bin logits (degrees: see engines/ditto/stitch.py)."""

    pitch: torch.Tensor   # (B, 66)
    yaw: torch.Tensor     # (B, 66)
    roll: torch.Tensor    # (B, 66)
    t: torch.Tensor       # (B, 3)
    exp: torch.Tensor     # (B, 3K)
    scale: torch.Tensor   # (B, 1)
    kp: torch.Tensor      # (B, 3K)


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channels of (B, C, H, W), written out as the original computes it."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ChannelsLastLayerNorm(nn.Module):
    """LayerNorm over the last axis with the original's parameter names (eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2's GRN on (B, H, W, C): scale each channel by its L2 energy relative to the channel mean."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = torch.norm(x, p=2, dim=(1, 2), keepdim=True)            # (B, 1, 1, C)
        relative = energy / (energy.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * relative) + self.beta + x


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, LayerNorm, 4x MLP with GELU and GRN, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = ChannelsLastLayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GlobalResponseNorm(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)                         # (B, H, W, C)
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)                                 # (B, C, H, W)


class ConvNeXtV2(nn.Module):
    """Backbone plus the seven linear heads (the original's `detector`)."""

    def __init__(self, config: MotionExtractorConfig) -> None:
        super().__init__()
        dims = config.dims
        stem = nn.Sequential(OrderedDict([
            ("0", nn.Conv2d(config.in_channels, dims[0], kernel_size=4, stride=4)),
            ("1", ChannelsFirstLayerNorm(dims[0]))]))
        downs = [nn.Sequential(OrderedDict([
            ("0", ChannelsFirstLayerNorm(dims[i])),
            ("1", nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))])) for i in range(len(dims) - 1)]
        self.downsample_layers = nn.ModuleList([stem, *downs])
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtBlock(dim) for _ in range(depth)]) for dim, depth in zip(dims, config.depths))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        k, bins = config.num_kp, config.num_bins
        self.fc_kp = nn.Linear(dims[-1], 3 * k)
        self.fc_scale = nn.Linear(dims[-1], 1)
        self.fc_pitch = nn.Linear(dims[-1], bins)
        self.fc_yaw = nn.Linear(dims[-1], bins)
        self.fc_roll = nn.Linear(dims[-1], bins)
        self.fc_t = nn.Linear(dims[-1], 3)
        self.fc_exp = nn.Linear(dims[-1], 3 * k)

    def forward(self, x: torch.Tensor) -> MotionInfo:
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))                                           # (B, 768, 8, 8) at the end
        x = self.norm(x.mean(dim=(-2, -1)))                              # (B, 768)
        return MotionInfo(pitch=self.fc_pitch(x), yaw=self.fc_yaw(x), roll=self.fc_roll(x), t=self.fc_t(x),
                          exp=self.fc_exp(x), scale=self.fc_scale(x), kp=self.fc_kp(x))


class MotionExtractor(nn.Module):
    def __init__(self, config: MotionExtractorConfig = MotionExtractorConfig()) -> None:
        super().__init__()
        self.config = config
        self.detector = ConvNeXtV2(config)

    def forward(self, image: torch.Tensor) -> MotionInfo:
        """(B, 3, 256, 256) RGB in 0..1 -> MotionInfo."""
        return self.detector(image)
