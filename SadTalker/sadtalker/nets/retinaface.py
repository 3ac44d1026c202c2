"""RetinaFace (Deng et al. 2020) with a ResNet-50 body, as facexlib builds it for `detection_Resnet50_Final.pth`:
FPN over layer2-4, an SSH context module per level, and per-level 1x1 heads for 2 anchors per cell.
Keys: `body.*` (torchvision ResNet-50 names), `fpn.*`, `ssh1-3.*`, `ClassHead/BboxHead/LandmarkHead.0-2.conv1x1.*`.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.nets.resnet import ResNet50

logger = logging.getLogger(__name__)

ANCHORS_PER_CELL = 2
FEATURE_CHANNELS = 256
# out_channels 256 > 64, so the original's leaky slope is 0 everywhere (plain ReLU).


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, relu: bool) -> nn.Sequential:
    """conv (no bias) + BatchNorm (+ ReLU): keys `.0` conv, `.1` norm."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class FPN(nn.Module):
    """Top-down feature pyramid: 1x1 laterals, nearest upsampling, 3x3 merge convs."""

    def __init__(self, in_channels: tuple[int, int, int], out_channels: int) -> None:
        super().__init__()
        self.output1 = conv_bn(in_channels[0], out_channels, 1, relu=True)
        self.output2 = conv_bn(in_channels[1], out_channels, 1, relu=True)
        self.output3 = conv_bn(in_channels[2], out_channels, 1, relu=True)
        self.merge1 = conv_bn(out_channels, out_channels, 3, relu=True)
        self.merge2 = conv_bn(out_channels, out_channels, 3, relu=True)

    def forward(self, c2: torch.Tensor, c3: torch.Tensor, c4: torch.Tensor) -> list[torch.Tensor]:
        p3 = self.output3(c4)                                              # (B, 256, H/32, W/32)
        p2 = self.output2(c3) + F.interpolate(p3, size=c3.shape[2:], mode="nearest")
        p2 = self.merge2(p2)                                               # (B, 256, H/16, W/16)
        p1 = self.output1(c2) + F.interpolate(p2, size=c2.shape[2:], mode="nearest")
        p1 = self.merge1(p1)                                               # (B, 256, H/8, W/8)
        return [p1, p2, p3]


class SSH(nn.Module):
    """Single-stage headless context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, concatenated."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv3X3 = conv_bn(channels, channels // 2, 3, relu=False)
        self.conv5X5_1 = conv_bn(channels, channels // 4, 3, relu=True)
        self.conv5X5_2 = conv_bn(channels // 4, channels // 4, 3, relu=False)
        self.conv7X7_2 = conv_bn(channels // 4, channels // 4, 3, relu=True)
        self.conv7x7_3 = conv_bn(channels // 4, channels // 4, 3, relu=False)  # sic: lower-case x in the file

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5_1 = self.conv5X5_1(x)
        out = torch.cat([self.conv3X3(x), self.conv5X5_2(branch5_1),
                         self.conv7x7_3(self.conv7X7_2(branch5_1))], dim=1)
        return F.relu(out)


class Head(nn.Module):
    """1x1 conv -> (B, H*W*anchors, values) in row-major cell order."""

    def __init__(self, in_channels: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(in_channels, ANCHORS_PER_CELL * values, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()
        return out.view(out.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    """(B, 3, H, W) mean-subtracted BGR float -> (loc (B, P, 4), scores (B, P, 2) softmaxed, landmarks (B, P, 10))."""

    def __init__(self) -> None:
        super().__init__()
        self.body = ResNet50()
        self.fpn = FPN((512, 1024, 2048), FEATURE_CHANNELS)
        self.ssh1 = SSH(FEATURE_CHANNELS)
        self.ssh2 = SSH(FEATURE_CHANNELS)
        self.ssh3 = SSH(FEATURE_CHANNELS)
        self.ClassHead = nn.ModuleList(Head(FEATURE_CHANNELS, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(Head(FEATURE_CHANNELS, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(Head(FEATURE_CHANNELS, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pyramid = self.fpn(*self.body.features(x))
        features = [self.ssh1(pyramid[0]), self.ssh2(pyramid[1]), self.ssh3(pyramid[2])]
        loc = torch.cat([head(f) for head, f in zip(self.BboxHead, features)], dim=1)        # (B, P, 4)
        logits = torch.cat([head(f) for head, f in zip(self.ClassHead, features)], dim=1)    # (B, P, 2)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features)], dim=1)  # (B, P, 10)
        return loc, F.softmax(logits, dim=-1), landmarks
