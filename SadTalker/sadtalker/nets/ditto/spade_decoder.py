"""SPADE decoder G of LivePortrait (Ditto's `decoder.pth`): warped 64x64 features -> 512x512 RGB in 0..1.

The same network as SadTalker's decoder (`nets/spade_decoder.py`) with a pixel-shuffle image head; the official
file's spectral-norm convolutions are folded into plain weights by the loader (engines/ditto/weights.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from sadtalker.nets.spade_decoder import SPADEDecoder


@dataclass(frozen=True)
class DecoderConfig:
    """Released values (the original's constructor defaults: upscale 2 -> 512x512 output)."""

    in_channels: int = 256
    out_channels: int = 64
    spade_hidden: int = 128
    upscale: int = 2


def build_decoder(config: DecoderConfig = DecoderConfig()) -> SPADEDecoder:
    """The decoder with plain convolutions, ready for the folded official state dict."""
    return SPADEDecoder(config.in_channels, config.out_channels, config.spade_hidden, upscale=config.upscale,
                        spectral_norm=False)
