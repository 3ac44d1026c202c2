"""Convolution of a nearest-upsampled input, computed at the low resolution.

After nearest upsampling by s, each output phase of a 3-tap kernel reads only one or two low-resolution
neighbours per axis, so the taps landing on the same neighbour can be summed into a smaller kernel: 2.25x fewer
multiply-adds for 2x, ~5.8x for 4x, and the upsampled input is never built. Exact up to float summation order;
any device and dtype.
"""
from __future__ import annotations

import functools
import itertools
from typing import Sequence

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=None)
def _phase_plan(scale: int) -> tuple[tuple[int, tuple[tuple[int, ...], ...], tuple[int, ...]], ...]:
    """How a 3-tap kernel after nearest upsampling by `scale` reads the low-res input, per output phase p:
    output index s*i + p with tap d (offset -1, 0, 1) reads input i + (p + d) // s. Phases that read the same
    neighbours with the same taps are grouped (the middle phases of a 4x upsampling).

    Returns (first neighbour offset, per neighbour the taps summed into it, the phases sharing this) groups.
    """
    groups: dict[tuple[int, tuple[tuple[int, ...], ...]], list[int]] = {}
    for phase in range(scale):
        offsets = [(phase + d) // scale for d in (-1, 0, 1)]
        first = min(offsets)
        taps = tuple(tuple(t for t in range(3) if offsets[t] == o) for o in range(first, max(offsets) + 1))
        groups.setdefault((first, taps), []).append(phase)
    return tuple((first, taps, tuple(phases)) for (first, taps), phases in groups.items())


def _fold(weight: torch.Tensor, dim: int, taps: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """Sum the kernel's taps along `dim` into len(taps) neighbours: (..., 3, ...) -> (..., n, ...)."""
    parts = []
    for group in taps:
        part = weight.narrow(dim, group[0], 1)
        for t in group[1:]:
            part = part + weight.narrow(dim, t, 1)
        parts.append(part)
    return torch.cat(parts, dim)


def folded_kernels(weight: torch.Tensor, scale: tuple[int, ...]) -> list[torch.Tensor]:
    """The smaller kernels `upsampled_conv` convolves with, one per group of output phases (see `_phase_plan`)."""
    kernels = []
    for combo in itertools.product(*(_phase_plan(s) for s in scale)):
        w = weight
        for axis, (_, taps, _) in enumerate(combo):
            w = _fold(w, 2 + axis, taps)
        kernels.append(w.contiguous())
    return kernels


def upsampled_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   scale: tuple[int, ...], kernels: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """conv(nearest_upsample(x, scale), weight, padding=1) for a 3-tap (3x3 or 3x3x3) kernel, computed at the low
    resolution: each output phase reads only 1-2 low-res neighbours per axis, so the taps that land on the same
    neighbour are summed into a smaller kernel (2.25x fewer multiply-adds for 2x, ~5.8x for 4x). Exact up to float
    summation order.

    x (B, C, *S) -> (B, O, *(S * scale)); weight (O, C, 3, ...); one entry of `scale` per spatial axis; `kernels`:
    `folded_kernels(weight, scale)` when the caller keeps them.
    """
    dims = len(scale)
    conv = F.conv2d if dims == 2 else F.conv3d
    padded = F.pad(x, (1, 1) * dims)
    low = x.shape[2:]
    out: torch.Tensor | None = None
    kernels = folded_kernels(weight, scale) if kernels is None else kernels
    for combo, w in zip(itertools.product(*(_phase_plan(s) for s in scale)), kernels, strict=True):
        index = [slice(None), slice(None)]
        for axis, (first, taps, _) in enumerate(combo):
            start = first + 1  # +1: the zero padding
            index.append(slice(start, start + low[axis] + len(taps) - 1))
        result = conv(padded[tuple(index)], w, bias)
        if out is None:  # the result's dtype (autocast may make it half precision)
            out = result.new_empty((x.shape[0], weight.shape[0], *(n * s for n, s in zip(low, scale))))
        for phase in itertools.product(*(phases for _, _, phases in combo)):
            out[(slice(None), slice(None), *(slice(a, None, s) for a, s in zip(phase, scale)))] = result
    if out is None:
        raise ValueError(f"upsampled_conv needs a positive scale per axis; got {scale}")
    return out
