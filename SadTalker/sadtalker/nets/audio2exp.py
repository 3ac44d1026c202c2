"""ExpNet: audio to 64 expression coefficients per frame (the original's SimpleWrapperV2, audio2exp)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sadtalker.nets.audio_encoder import build_audio_encoder


@dataclass(frozen=True)
class Audio2ExpConfig:
    """ExpNet sizes of the released checkpoint."""

    audio_dim: int = 512
    exp_dim: int = 64


class Audio2Exp(nn.Module):
    """Mel window + source expression + eye-blink ratio -> expression, one frame at a time."""

    def __init__(self, config: Audio2ExpConfig = Audio2ExpConfig()) -> None:
        super().__init__()
        self.config = config
        self.audio_encoder = build_audio_encoder()
        self.mapping1 = nn.Linear(config.audio_dim + config.exp_dim + 1, config.exp_dim)

    def forward(self, windows: torch.Tensor, ref_exp: torch.Tensor, blink: torch.Tensor) -> torch.Tensor:
        """windows (N, 80, 16), ref_exp (N, 64), blink (N, 1) -> (N, 64)."""
        audio = self.audio_encoder(windows.unsqueeze(1)).flatten(1)  # (N, 512)
        return self.mapping1(torch.cat([audio, ref_exp, blink], dim=1))  # (N, 64)
