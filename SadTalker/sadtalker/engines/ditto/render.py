"""Frames from driving keypoints: warp the source feature volume (warping network) and decode it (SPADE decoder).

The original's WarpF3D + DecodeF3D. Frames are produced in small batches as an iterator, so memory stays flat
whatever the clip length; f_s and x_s are computed once per source by the source stage, and so is the dense motion
network's compressed copy of f_s (the original recomputes it every frame). The CPU speed paths of `sadtalker.accel`
(shared with SadTalker's renderer, which has the same blocks) are swapped in at construction.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

from sadtalker.accel import AccelConfig, accelerate
from sadtalker.errors import InvalidInputError
from sadtalker.nets.ditto.warping_network import WarpingNetwork
from sadtalker.nets.spade_decoder import SPADEDecoder

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "bf16"]
_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def precision_context(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager:
    """fp32: plain float32. fp16/bf16: CUDA autocast (as the original's fp16 path); refused on other devices."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in _AUTOCAST_DTYPES:
        raise InvalidInputError(f"precision must be one of fp32, fp16, bf16; got {precision!r}")
    if device.type != "cuda":
        raise InvalidInputError(f"precision {precision!r} is only available on CUDA (device is {device}); use fp32")
    return torch.autocast(device_type="cuda", dtype=_AUTOCAST_DTYPES[precision])


class FrameRenderer:
    """f_s (1, 32, 16, 64, 64), x_s (1, 21, 3), x_d (N, 21, 3) -> N frames (512, 512, 3) float32 RGB 0..255."""

    def __init__(self, warp_net: WarpingNetwork, decoder: SPADEDecoder, precision: Precision = "fp32",
                 batch_size: int = 1, accel: AccelConfig | None = AccelConfig()) -> None:
        """`accel`: the speed paths, swapped into both networks in place (None: the plain networks)."""
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1; got {batch_size}")
        if accel is not None:
            warp_net, decoder = accelerate(warp_net, accel), accelerate(decoder, accel)
        self.warp_net = warp_net
        self.decoder = decoder
        self.device = next(decoder.parameters()).device
        precision_context(precision, self.device)   # validate early
        self.precision = precision
        self.batch_size = batch_size

    @torch.inference_mode()
    def compress(self, f_s: torch.Tensor) -> torch.Tensor:
        """The dense motion network's input volume for a source (what `render` takes as `compressed`)."""
        with precision_context(self.precision, self.device):
            return self.warp_net.compress(f_s.to(self.device, torch.float32))

    @torch.inference_mode()
    def render(self, f_s: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor,
               compressed: torch.Tensor | None = None) -> torch.Tensor:
        """One batch: (B, 21, 3) driving keypoints -> (B, 3, 512, 512) decoder output in 0..1 (float32).
        f_s (1, 32, 16, 64, 64) and x_s (1, 21, 3) are shared by the batch; `compressed`: `compress(f_s)`."""
        b = x_d.shape[0]
        f_s = f_s.to(self.device, torch.float32)
        x_s = x_s.to(self.device, torch.float32).expand(b, -1, -1)
        with precision_context(self.precision, self.device):
            feature = self.warp_net(f_s, x_s, x_d.to(self.device, torch.float32),
                                    compressed=compressed)                          # (B, 256, 64, 64)
            image = self.decoder(feature)                                           # (B, 3, 512, 512)
        return image.float()

    def frames(self, f_s: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor,
               batch_size: int | None = None) -> Iterator[np.ndarray]:
        """Yield each frame as (512, 512, 3) float32 RGB, clip(0, 1) * 255 (what the original's Decoder returns),
        `batch_size` frames per network pass (default: the one given at construction)."""
        batch = self.batch_size if batch_size is None else batch_size
        if batch < 1:
            raise InvalidInputError(f"batch_size must be >= 1; got {batch}")
        compressed = self.compress(f_s)
        for start in range(0, x_d.shape[0], batch):
            images = self.render(f_s, x_s, x_d[start:start + batch], compressed)
            hwc = (images.clamp(0, 1) * 255).permute(0, 2, 3, 1).cpu().numpy()
            yield from hwc
