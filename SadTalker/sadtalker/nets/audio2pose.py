"""PoseVAE: audio to head-pose motion, a conditional VAE over 32-frame windows (the original's Audio2Pose).

Only the decoder runs at inference; the encoder and the motion discriminator exist so that the official
state dict loads strictly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sadtalker.nets.audio_encoder import AudioEncoder
from sadtalker.nets.pose_blocks import ConvNormRelu1d, ResUnet


@dataclass(frozen=True)
class Audio2PoseConfig:
    """auido2pose.yaml values of the released checkpoint."""

    seq_len: int = 32
    latent_size: int = 64
    num_classes: int = 46
    audio_emb_in: int = 512
    audio_emb_out: int = 6
    encoder_layer_sizes: tuple[int, ...] = (192, 128)
    decoder_layer_sizes: tuple[int, ...] = (128, 192)
    discriminator_channels: int = 6


def _mlp(sizes: list[int], last: str) -> nn.Sequential:
    mlp = nn.Sequential()
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        mlp.add_module(f"L{i}", nn.Linear(a, b))
        if i + 2 < len(sizes) or last == "relu":
            mlp.add_module(f"A{i}", nn.ReLU())
        else:
            mlp.add_module("sigmoid", nn.Sigmoid())
    return mlp


class PoseEncoder(nn.Module):
    """Training-time posterior q(z | pose, audio, style); weights only."""

    def __init__(self, c: Audio2PoseConfig) -> None:
        super().__init__()
        self.resunet = ResUnet()
        first = c.encoder_layer_sizes[0] + c.latent_size + c.seq_len * c.audio_emb_out + 6
        self.MLP = _mlp([first, *c.encoder_layer_sizes[1:]], last="relu")
        self.linear_means = nn.Linear(c.encoder_layer_sizes[-1], c.latent_size)
        self.linear_logvar = nn.Linear(c.encoder_layer_sizes[-1], c.latent_size)
        self.linear_audio = nn.Linear(c.audio_emb_in, c.audio_emb_out)
        self.classbias = nn.Parameter(torch.zeros(c.num_classes, c.latent_size))


class PoseDecoder(nn.Module):
    """p(motion | z + style bias, audio, source pose) for one 32-frame window."""

    def __init__(self, c: Audio2PoseConfig) -> None:
        super().__init__()
        self.seq_len = c.seq_len
        self.resunet = ResUnet()
        first = c.latent_size + c.seq_len * c.audio_emb_out + 6
        self.MLP = _mlp([first, *c.decoder_layer_sizes], last="sigmoid")
        self.pose_linear = nn.Linear(6, 6)
        self.linear_audio = nn.Linear(c.audio_emb_in, c.audio_emb_out)
        self.classbias = nn.Parameter(torch.zeros(c.num_classes, c.latent_size))

    def forward(self, z: torch.Tensor, style: torch.Tensor, ref_pose: torch.Tensor,
                audio_emb: torch.Tensor) -> torch.Tensor:
        """z (B, 64), style (B,) long, ref_pose (B, 6), audio_emb (B, L, 512) -> motion (B, L, 6)."""
        b = z.shape[0]
        audio = self.linear_audio(audio_emb).reshape(b, -1)          # (B, L*6)
        z = z + self.classbias[style]                                # (B, 64)
        x = self.MLP(torch.cat([ref_pose, z, audio], dim=-1))        # (B, 192)
        x = self.resunet(x.reshape(b, 1, self.seq_len, -1))          # (B, 1, L, 6)
        return self.pose_linear(x.squeeze(1))                        # (B, L, 6)


class CVAE(nn.Module):
    def __init__(self, c: Audio2PoseConfig) -> None:
        super().__init__()
        self.encoder = PoseEncoder(c)
        self.decoder = PoseDecoder(c)


class MotionDiscriminator(nn.Module):
    """Training-time pose-sequence discriminator; weights only."""

    def __init__(self, c: Audio2PoseConfig) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvNormRelu1d(c.discriminator_channels, 256, 4, 2, 1),
            ConvNormRelu1d(256, 512, 4, 2, 1),
            ConvNormRelu1d(512, 1024, 3, 1, 1),
            nn.Conv1d(1024, 1, kernel_size=3, stride=1, padding=1, bias=True),
        )


class Audio2Pose(nn.Module):
    """Audio encoder + CVAE (+ discriminator) under the official attribute names."""

    def __init__(self, config: Audio2PoseConfig = Audio2PoseConfig()) -> None:
        super().__init__()
        self.config = config
        self.audio_encoder = AudioEncoder()
        self.netG = CVAE(config)
        self.netD_motion = MotionDiscriminator(config)

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        """(N, 80, 16) -> (N, 512)."""
        return self.audio_encoder(windows)

    def decode(self, z: torch.Tensor, style: torch.Tensor, ref_pose: torch.Tensor,
               audio_emb: torch.Tensor) -> torch.Tensor:
        """One motion window per row: (B, 32, 6)."""
        return self.netG.decoder(z, style, ref_pose, audio_emb)
