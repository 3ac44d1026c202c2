"""CPU speed paths for the plain networks in `nets/`, applied once after the weights load.

`accelerate(net, AccelConfig(...))` swaps layer instances for faster equivalents that share the same parameters
(state-dict keys unchanged) and compute the same result up to float rounding; the networks themselves never
mention these kernels. Which path a layer takes is decided per call from its input, so an accelerated network
moved to CUDA or run under autocast uses torch's own kernels there.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from torch import nn

from sadtalker.accel import fftconv, native, tapconv, winograd
from sadtalker.accel.blocks import (
    FastBlock,
    FastSPADE,
    FastSPADEDecoder,
    FastSPADEResnetBlock,
    FastSpectralNormConv2d,
    FastUpBlock3d,
)
from sadtalker.nets.render_blocks import SPADE, SPADEResnetBlock, SpectralNormConv2d, UpBlock3d
from sadtalker.nets.spade_decoder import SPADEDecoder

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class AccelConfig:
    """What `accelerate` swaps in.

    cpu_kernels: Winograd F(4x4, 3x3) for the wide 3x3 and 3x3x3 convolutions, an FFT for the 7x7x7 mask head, a
        tap product for the 7x7 occlusion head, folded 1x1 shortcuts, shared SPADE hidden maps, derived weights kept
        (fp32 on the CPU only; ~1.2 GB more memory for the 256 renderer). Off: the structural rewrites below only.
    native_kernels: the Winograd tile transforms in C (built with the system compiler; pure PyTorch without one).
    cache_dir: where the C kernels are built (default ~/.cache/sadtalker).
    Always (any device): upsampling blocks convolve at the low resolution and SPADE up blocks normalize before
    upsampling, so the full-size upsampled maps are never built.
    """

    cpu_kernels: bool = True
    native_kernels: bool = True
    cache_dir: Path | None = None


# plain block -> faster equivalent with the same parameters
BLOCKS: dict[type[nn.Module], type[nn.Module]] = {
    UpBlock3d: FastUpBlock3d,
    SpectralNormConv2d: FastSpectralNormConv2d,
    SPADE: FastSPADE,
    SPADEResnetBlock: FastSPADEResnetBlock,
    SPADEDecoder: FastSPADEDecoder,
}


def rebind(module: nn.Module, cls: type[M], **attributes: object) -> M:
    """A new module of `cls` (a subclass of the module's class that adds no parameters) that shares the module's
    parameters, buffers and children: nothing is copied, and the state dict is the same."""
    if not issubclass(cls, type(module)):
        raise TypeError(f"{cls.__name__} does not extend {type(module).__name__}")
    fast = cls.__new__(cls)
    fast.__dict__.update(module.__dict__)
    fast.__dict__.update(attributes)
    return fast


def _faster(module: nn.Module, config: AccelConfig, kernels: native.NativeKernels) -> nn.Module | None:
    """The faster equivalent of one module, or None to keep it."""
    cls = type(module)
    if cls in BLOCKS:
        return rebind(module, BLOCKS[cls], cpu_kernels=config.cpu_kernels, native=kernels)
    if not config.cpu_kernels:
        return None
    if cls in (nn.Conv2d, nn.Conv3d) and winograd.fits(module):  # type: ignore[arg-type]
        return rebind(module, winograd.WinogradConv2d if cls is nn.Conv2d else winograd.WinogradConv3d,
                      native=kernels)
    if cls is nn.Conv3d and fftconv.fits(module):  # type: ignore[arg-type]
        return rebind(module, fftconv.FFTConv3d)
    if cls is nn.Conv2d and tapconv.fits(module):  # type: ignore[arg-type]
        return rebind(module, tapconv.TapConv2d)
    return None


def accelerate(net: M, config: AccelConfig = AccelConfig()) -> M:
    """Swap the network's layers (in place) for their faster equivalents; returns the network."""
    kernels = native.NativeKernels(enabled=config.native_kernels, cache_dir=config.cache_dir)
    swapped = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            fast = _faster(child, config, kernels)
            if fast is not None:
                setattr(parent, name, fast)
                swapped += 1
    root = _faster(net, config, kernels)
    if root is not None:
        net, swapped = root, swapped + 1  # type: ignore[assignment]
    logger.debug("accelerated %s: %d layers swapped (%s)", type(net).__name__, swapped, config)
    return net


def is_accelerated(module: nn.Module) -> bool:
    return isinstance(module, (FastBlock, winograd.WinogradConv2d, winograd.WinogradConv3d, fftconv.FFTConv3d,
                               tapconv.TapConv2d))


__all__ = ["AccelConfig", "accelerate", "is_accelerated", "rebind"]
