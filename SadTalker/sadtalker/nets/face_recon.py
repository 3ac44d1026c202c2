"""Deep3DFaceRecon's coefficient regressor (the original's `ReconNetWrapper('resnet50', use_last_fc=False)`):
a ResNet-50 whose pooled features feed seven 1x1-conv heads, concatenated into 257 3DMM coefficients."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from sadtalker.nets.resnet import ResNet50

logger = logging.getLogger(__name__)

# (name, size) of each head, in output order; 80 + 64 + 80 + 3 + 27 + 2 + 1 = 257.
HEADS: tuple[tuple[str, int], ...] = (
    ("identity", 80), ("expression", 64), ("texture", 80), ("angles", 3), ("lighting", 27),
    ("translation_xy", 2), ("translation_z", 1),
)
NUM_COEFFS = sum(n for _, n in HEADS)


@dataclass(frozen=True)
class Coefficients3DMM:
    """The 257 coefficients split by meaning (each (B, n))."""

    identity: torch.Tensor     # (B, 80)
    expression: torch.Tensor   # (B, 64)
    texture: torch.Tensor      # (B, 80)
    angles: torch.Tensor       # (B, 3)
    lighting: torch.Tensor     # (B, 27) spherical-harmonics gamma
    translation: torch.Tensor  # (B, 3)

    @classmethod
    def split(cls, coeffs: torch.Tensor) -> "Coefficients3DMM":
        return cls(coeffs[:, 0:80], coeffs[:, 80:144], coeffs[:, 144:224], coeffs[:, 224:227],
                   coeffs[:, 227:254], coeffs[:, 254:257])


class FaceReconNet(nn.Module):
    """(B, 3, 224, 224) RGB in 0..1 -> (B, 257). Keys: `backbone.*` (torchvision names), `final_layers.0-6.*`."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNet50()
        self.final_layers = nn.ModuleList(
            nn.Conv2d(ResNet50.out_channels, n, kernel_size=1, bias=True) for _, n in HEADS
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)  # (B, 2048, 1, 1)
        out = torch.cat([head(features) for head in self.final_layers], dim=1)  # (B, 257, 1, 1)
        return torch.flatten(out, 1)  # (B, 257)
