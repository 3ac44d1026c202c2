"""Blocks of the PoseVAE (audio2pose): the pose ResUNet and the unused motion discriminator's conv unit."""
from __future__ import annotations

import torch
from torch import nn


class ResidualConv(nn.Module):
    """Pre-activation residual unit with a conv skip."""

    def __init__(self, cin: int, cout: int, stride: int | tuple[int, int], padding: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 3, stride, padding),
            nn.BatchNorm2d(cout), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.conv_skip = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x) + self.conv_skip(x)


class Upsample(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int]) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(cin, cout, kernel_size=kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x)


class ResUnet(nn.Module):
    """U-Net over a (seq_len, 6) pose map, halving/doubling the time axis only; output in (0, 1)."""

    def __init__(self, channels: int = 1, filters: tuple[int, int, int, int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        f0, f1, f2, f3 = filters
        self.input_layer = nn.Sequential(
            nn.Conv2d(channels, f0, 3, padding=1), nn.BatchNorm2d(f0), nn.ReLU(), nn.Conv2d(f0, f0, 3, padding=1))
        self.input_skip = nn.Sequential(nn.Conv2d(channels, f0, 3, padding=1))
        self.residual_conv_1 = ResidualConv(f0, f1, (2, 1), 1)
        self.residual_conv_2 = ResidualConv(f1, f2, (2, 1), 1)
        self.bridge = ResidualConv(f2, f3, (2, 1), 1)
        self.upsample_1 = Upsample(f3, f3, (2, 1), (2, 1))
        self.up_residual_conv1 = ResidualConv(f3 + f2, f2, 1, 1)
        self.upsample_2 = Upsample(f2, f2, (2, 1), (2, 1))
        self.up_residual_conv2 = ResidualConv(f2 + f1, f1, 1, 1)
        self.upsample_3 = Upsample(f1, f1, (2, 1), (2, 1))
        self.up_residual_conv3 = ResidualConv(f1 + f0, f0, 1, 1)
        self.output_layer = nn.Sequential(nn.Conv2d(f0, 1, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.input_layer(x) + self.input_skip(x)   # (B, 32, L, 6)
        x2 = self.residual_conv_1(x1)                    # (B, 64, L/2, 6)
        x3 = self.residual_conv_2(x2)                    # (B, 128, L/4, 6)
        x4 = self.bridge(x3)                             # (B, 256, L/8, 6)
        x5 = torch.cat([self.upsample_1(x4), x3], 1)     # (B, 384, L/4, 6)
        x6 = self.up_residual_conv1(x5)                  # (B, 128, L/4, 6)
        x7 = torch.cat([self.upsample_2(x6), x2], 1)     # (B, 192, L/2, 6)
        x8 = self.up_residual_conv2(x7)                  # (B, 64, L/2, 6)
        x9 = torch.cat([self.upsample_3(x8), x1], 1)     # (B, 96, L, 6)
        return self.output_layer(self.up_residual_conv3(x9))  # (B, 1, L, 6)


class ConvNormRelu1d(nn.Module):
    """Bias-free Conv1d + batch norm + ReLU (the discriminator's unit)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride, padding, bias=False)
        self.norm = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x)))
