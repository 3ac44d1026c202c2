"""Stitching network S of LivePortrait (Ditto's `stitch_network.pth`, entry `retarget_shoulder`): a small MLP that
nudges the driving keypoints so the animated crop lines up with the source around its border (shoulders)."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class StitchingConfig:
    """Released values: input [x_s | x_d] flattened (2 x 21 x 3), output 21 x 3 deltas + (tx, ty)."""

    input_size: int = 126
    hidden_sizes: tuple[int, ...] = (128, 128, 64)
    output_size: int = 65


class StitchingNetwork(nn.Module):
    def __init__(self, config: StitchingConfig = StitchingConfig()) -> None:
        super().__init__()
        widths = [config.input_size, *config.hidden_sizes]
        layers: list[tuple[str, nn.Module]] = []
        for i in range(len(config.hidden_sizes)):
            layers += [(str(2 * i), nn.Linear(widths[i], widths[i + 1])), (str(2 * i + 1), nn.ReLU())]
        layers.append((str(2 * len(config.hidden_sizes)), nn.Linear(widths[-1], config.output_size)))
        self.mlp = nn.Sequential(OrderedDict(layers))

    def forward(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        """(B, K, 3) source and driving keypoints -> stitched driving keypoints (B, K, 3)."""
        b, k = kp_source.shape[:2]
        delta = self.mlp(torch.cat([kp_source.reshape(b, -1), kp_driving.reshape(b, -1)], dim=1))   # (B, 3K + 2)
        shift = torch.zeros_like(kp_driving)
        shift[..., :2] = delta[:, 3 * k:3 * k + 2].reshape(b, 1, 2)
        return kp_driving + delta[:, :3 * k].reshape(b, k, 3) + shift
