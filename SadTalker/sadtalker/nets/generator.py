"""SadTalker's face generator (the original's OcclusionAwareSPADEGenerator, keys `generator.*`).

Appearance feature extractor (2D encoder reshaped to a 32 x 16-deep feature volume, 3D res-blocks), the dense
motion network that warps that volume from source to driving keypoints, occlusion gating, and the SPADE decoder.
The source-only part (`extract_appearance`) is split out so a clip computes it once instead of once per frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.nets.dense_motion import DenseMotion, DenseMotionConfig, DenseMotionNetwork
from sadtalker.nets.render_blocks import DownBlock2d, ResBlock3d, SameBlock2d
from sadtalker.nets.spade_decoder import SPADEDecoder


@dataclass(frozen=True)
class GeneratorConfig:
    """facerender.yaml `generator_params` (+ `common_params`)."""

    image_channel: int = 3
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6
    decoder_channels: int = 64      # SPADE decoder output width (its input is block_expansion * 2**num_down_blocks)
    spade_hidden: int = 128
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)


class Appearance(NamedTuple):
    """What the generator needs from the source image, computed once per clip."""

    feature_3d: torch.Tensor   # (1, 32, 16, S/4, S/4)
    compressed: torch.Tensor   # (1, 4, 16, S/4, S/4), the dense motion network's input volume


class RenderOutput(NamedTuple):
    image: torch.Tensor        # (B, 3, S, S) in 0..1
    motion: DenseMotion


class OcclusionAwareSPADEGenerator(nn.Module):
    def __init__(self, cfg: GeneratorConfig = GeneratorConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        e, m = cfg.block_expansion, cfg.max_features
        self.dense_motion_network = DenseMotionNetwork(cfg.dense_motion)
        self.first = SameBlock2d(cfg.image_channel, e)
        widths = [min(m, e * 2**i) for i in range(cfg.num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(DownBlock2d(widths[i], widths[i + 1]) for i in range(cfg.num_down_blocks))
        self.second = nn.Conv2d(widths[-1], m, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(cfg.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(cfg.reshape_channel))
        out_features = e * 2**cfg.num_down_blocks
        self.third = SameBlock2d(m, out_features, leaky=True)
        self.fourth = nn.Conv2d(out_features, out_features, kernel_size=1)
        self.decoder = SPADEDecoder(out_features, cfg.decoder_channels, cfg.spade_hidden)

    def extract_appearance(self, source_image: torch.Tensor) -> Appearance:
        """(B, 3, S, S) -> the 3D appearance volume and its compressed copy for the motion network."""
        out = self.first(source_image)                          # (B, 64, S, S)
        for block in self.down_blocks:
            out = block(out)                                    # (B, 256, S/4, S/4)
        out = self.second(out)                                  # (B, 512, S/4, S/4)
        b, _, h, w = out.shape
        feature_3d = self.resblocks_3d(out.view(b, self.cfg.reshape_channel, self.cfg.reshape_depth, h, w))
        return Appearance(feature_3d, self.dense_motion_network.compress_feature(feature_3d))

    def render(self, appearance: Appearance, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> RenderOutput:
        """Keypoints (B, K, 3) -> frames (B, 3, S, S). `appearance` may have batch 1 (shared by all B frames)."""
        b = kp_driving.shape[0]
        motion = self.dense_motion_network(appearance.compressed, kp_driving, kp_source)
        volume = appearance.feature_3d.expand(b, *appearance.feature_3d.shape[1:])
        deformation = motion.deformation
        if deformation.shape[1:4] != volume.shape[2:]:
            deformation = F.interpolate(deformation.permute(0, 4, 1, 2, 3), size=volume.shape[2:],
                                        mode="trilinear").permute(0, 2, 3, 4, 1)
        out = F.grid_sample(volume, deformation, align_corners=False)   # (B, 32, 16, h, w)
        _, c, d, h, w = out.shape
        out = self.fourth(self.third(out.reshape(b, c * d, h, w)))      # (B, 256, h, w)
        occlusion = motion.occlusion_map
        if occlusion.shape[2:] != out.shape[2:]:
            occlusion = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear")
        image = self.decoder(out * occlusion)                           # (B, 3, 4h, 4w)
        return RenderOutput(image, motion)

    def forward(self, source_image: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
        """The original's call signature: everything from the source image, per batch."""
        return self.render(self.extract_appearance(source_image), kp_source, kp_driving).image
