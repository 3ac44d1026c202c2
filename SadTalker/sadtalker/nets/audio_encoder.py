"""Wav2Lip-style audio encoder shared by ExpNet (audio2exp) and PoseVAE (audio2pose).

Maps one [1, 80, 16] mel window to a 512-vector. Layer names follow the official state dicts
(`<i>.conv_block.0` conv, `<i>.conv_block.1` batch norm).
"""
from __future__ import annotations

import torch
from torch import nn

# (in, out, stride, padding, kernel, residual) per block, as trained.
_BLOCKS = (
    (1, 32, 1, 1, 3, False), (32, 32, 1, 1, 3, True), (32, 32, 1, 1, 3, True),
    (32, 64, (3, 1), 1, 3, False), (64, 64, 1, 1, 3, True), (64, 64, 1, 1, 3, True),
    (64, 128, 3, 1, 3, False), (128, 128, 1, 1, 3, True), (128, 128, 1, 1, 3, True),
    (128, 256, (3, 2), 1, 3, False), (256, 256, 1, 1, 3, True),
    (256, 512, 1, 0, 3, False), (512, 512, 1, 0, 1, False),
)


class ConvBlock(nn.Module):
    """Conv + batch norm (+ identity skip) + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int | tuple[int, int], padding: int,
                 residual: bool = False) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return torch.relu(out)


def build_audio_encoder() -> nn.Sequential:
    """The 13-block encoder: (N, 1, 80, 16) -> (N, 512, 1, 1)."""
    return nn.Sequential(*(ConvBlock(i, o, k, s, p, r) for i, o, s, p, k, r in _BLOCKS))


class AudioEncoder(nn.Module):
    """Per-frame embeddings of a window sequence (audio2pose's `audio_encoder` wrapper)."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = build_audio_encoder()

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(N, 80, 16) mel windows -> (N, 512)."""
        return self.audio_encoder(windows.unsqueeze(1)).flatten(1)  # (N, 512)
