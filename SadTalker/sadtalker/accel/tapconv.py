"""A wide 2D kernel with very few output channels as one matrix product over its taps (the occlusion head).

The dense-motion occlusion head maps 1792 channels to 1 with a 7x7 kernel. oneDNN spends ~0.1 s per frame on it,
mostly reordering the input. Instead, one product of the (O * KH * KW, C) tap matrix with the (C, H * W) input
gives every tap's response at every pixel, and the output is the sum of the KH * KW responses shifted into place.
Equal to the direct convolution up to float summation order.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.accel.weight_cache import derived
from sadtalker.accel.winograd import cpu_fp32

MAX_TAP_ROWS = 64   # O * KH * KW at most: beyond that the shifted sums cost more than they save
MIN_KERNEL = 5


def tap_matrix(weight: torch.Tensor) -> torch.Tensor:
    """(O, C, KH, KW) -> (O * KH * KW, C), row (o, i, j) holding tap (i, j) of output channel o."""
    o, c, kh, kw = weight.shape
    return weight.detach().permute(0, 2, 3, 1).reshape(o * kh * kw, c).contiguous()


def tap_conv2d(x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor | None, kernel: tuple[int, int],
               padding: tuple[int, int]) -> torch.Tensor:
    """conv2d(x, weight, bias, padding=padding) for stride 1, with taps = tap_matrix(weight).

    x (B, C, H, W) -> (B, O, H + 2 * ph - KH + 1, W + 2 * pw - KW + 1).
    """
    b, c, h, w = x.shape
    kh, kw = kernel
    ph, pw = padding
    o = taps.shape[0] // (kh * kw)
    if taps.shape != (o * kh * kw, c):
        raise ValueError(f"tap matrix {tuple(taps.shape)} does not fit input {tuple(x.shape)}, kernel {kernel}")
    responses = torch.matmul(taps, x.reshape(b, c, h * w)).view(b, o, kh, kw, h, w)
    responses = F.pad(responses, (pw, pw, ph, ph))               # zero padding of the input = of each response
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    out = responses[:, :, 0, 0, :oh, :ow].clone()
    for i in range(kh):
        for j in range(kw):
            if i or j:
                out += responses[:, :, i, j, i:i + oh, j:j + ow]
    if bias is not None:
        out += bias.view(1, -1, 1, 1)
    return out


def fits(conv: nn.Conv2d) -> bool:
    """A plain wide 2D kernel with few output channels (at most MAX_TAP_ROWS taps in all)."""
    kh, kw = conv.kernel_size
    return (min(kh, kw) >= MIN_KERNEL and conv.out_channels * kh * kw <= MAX_TAP_ROWS and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple))


class TapConv2d(nn.Conv2d):
    """nn.Conv2d as one tap-matrix product plus shifted sums on fp32 CPU inputs (the tap matrix kept); torch's own
    convolution otherwise. Made from a loaded layer by `sadtalker.accel.accelerate`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not cpu_fp32(x):
            return super().forward(x)
        taps = derived(self, "taps", (self.weight,), lambda: tap_matrix(self.weight))
        return tap_conv2d(x, taps, self.bias, self.kernel_size, self.padding)  # type: ignore[arg-type]
