"""SadTalker's MappingNet: a window of 3DMM coefficients -> head pose bins, translation and keypoint deltas.

Keys are the `mapping` entry of mapping_00229-model.pth.tar (crop modes, 70 coefficients) and
mapping_00109-model.pth.tar (full modes, 73: the 70 plus the source's 3 crop parameters).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn


@dataclass(frozen=True)
class MappingConfig:
    """facerender.yaml `mapping_params` (facerender_still.yaml: coeff_nc 73)."""

    coeff_nc: int = 70
    descriptor_nc: int = 1024
    layer: int = 3
    num_kp: int = 15
    num_bins: int = 66


class HeadMotion(NamedTuple):
    """Raw mapping outputs for a batch: pose logits (B, 66) each, translation (B, 3), expression (B, 3 K)."""

    yaw: torch.Tensor
    pitch: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    exp: torch.Tensor


class MappingNet(nn.Module):
    """(B, coeff_nc, 27) coefficient window -> HeadMotion. A 7-tap conv then dilated residual convs, mean-pooled."""

    def __init__(self, cfg: MappingConfig = MappingConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.descriptor_nc
        self.first = nn.Sequential(nn.Conv1d(cfg.coeff_nc, d, kernel_size=7))
        for i in range(cfg.layer):
            setattr(self, f"encoder{i}", nn.Sequential(nn.LeakyReLU(0.1), nn.Conv1d(d, d, kernel_size=3, dilation=3)))
        self.pooling = nn.AdaptiveAvgPool1d(1)
        self.fc_roll = nn.Linear(d, cfg.num_bins)
        self.fc_pitch = nn.Linear(d, cfg.num_bins)
        self.fc_yaw = nn.Linear(d, cfg.num_bins)
        self.fc_t = nn.Linear(d, 3)
        self.fc_exp = nn.Linear(d, 3 * cfg.num_kp)

    def forward(self, window: torch.Tensor) -> HeadMotion:
        out = self.first(window)                                   # (B, 1024, 21)
        for i in range(self.cfg.layer):
            out = getattr(self, f"encoder{i}")(out) + out[:, :, 3:-3]   # length shrinks by 6 per layer
        out = self.pooling(out).flatten(1)                         # (B, 1024)
        return HeadMotion(yaw=self.fc_yaw(out), pitch=self.fc_pitch(out), roll=self.fc_roll(out),
                          t=self.fc_t(out), exp=self.fc_exp(out))
