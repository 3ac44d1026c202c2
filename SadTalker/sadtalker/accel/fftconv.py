"""FFT convolution for the dense-motion network's wide 3D kernel (the 7x7x7 mask head) on CPU.

A 7x7x7 kernel costs 343 multiply-adds per voxel and channel pair. Transforming each depth slice's H x W plane
(in overlapping tiles) turns the 7x7 spatial part into one complex product per frequency, so the work per frequency
is a small matrix product over (depth tap, input channel): about 15x fewer operations for the mask head, and
equal to the direct convolution up to float rounding (closer to a float64 reference than torch's own fp32 kernel).
"""
from __future__ import annotations

import torch
from torch import nn

from sadtalker.accel.weight_cache import derived
from sadtalker.accel.winograd import cpu_fp32

TILE = 32          # output pixels per tile side
FFT_SIZE = 40      # transform size per tile side: >= TILE + kernel - 1, a product of small primes
MIN_KERNEL = 5     # smaller kernels are cheaper directly


def transform_weight(weight: torch.Tensor, n: int = FFT_SIZE) -> torch.Tensor:
    """(O, C, KD, K, K) -> (KD, F, 2C, 2O) fp32, F = n * (n // 2 + 1): per depth tap and frequency, the conjugate
    spectrum of the spatial kernel as the real matrix of the complex product (computed in float64)."""
    o, c, kd = weight.shape[:3]
    spectrum = torch.fft.rfft2(weight.detach().double(), s=(n, n)).conj()         # (O, C, KD, n, n/2+1)
    spectrum = spectrum.permute(2, 3, 4, 1, 0).reshape(kd, -1, c, o)              # (KD, F, C, O)
    real = spectrum.new_empty(kd, spectrum.shape[1], c, 2, o, 2, dtype=torch.float64)
    real[..., 0, :, 0] = spectrum.real     # (re, im) of the input times this matrix = (re, im) of the product
    real[..., 1, :, 0] = -spectrum.imag
    real[..., 0, :, 1] = spectrum.imag
    real[..., 1, :, 1] = spectrum.real
    return real.reshape(kd, -1, 2 * c, 2 * o).float().contiguous()


def fft_conv3d(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None, kernel: int,
               n: int = FFT_SIZE, tile: int = TILE) -> torch.Tensor:
    """conv3d(x, weight, bias, padding=kernel // 2) for a cubic odd kernel, with u = transform_weight(weight, n).

    x (B, C, D, H, W) -> (B, O, D, H, W). Each output tile of tile x tile pixels reads an n x n input window, and
    the circular correlation of that window is exact on the tile (n >= tile + kernel - 1).
    """
    b, c, d, h, w = x.shape
    kd, f, _, o2 = u.shape
    o, p = o2 // 2, kernel // 2
    if kd != kernel or f != n * (n // 2 + 1) or u.shape[2] != 2 * c or n < tile + kernel - 1:
        raise ValueError(f"FFT weights {tuple(u.shape)} do not fit input {tuple(x.shape)}, kernel {kernel}, size {n}")
    ty, tx = -(-h // tile), -(-w // tile)
    tiles = b * ty * tx
    # Channels last, zero padded so that every tile's window is inside; depth padding is left implicit.
    padded = x.new_zeros(b, d, ty * tile + n - tile, tx * tile + n - tile, c)
    padded[:, :, p:p + h, p:p + w].copy_(x.permute(0, 2, 3, 4, 1))
    windows = padded.unfold(2, n, tile).unfold(3, n, tile).permute(0, 1, 2, 3, 5, 6, 4)  # (B, D, ty, tx, n, n, C)
    spectra = torch.fft.rfft2(windows, dim=(4, 5))                                     # (B, D, ty, tx, n, m, C)
    # (F, D * tiles, 2C): per frequency, one row per (depth, tile) with the channels' (re, im) pairs.
    spectra = torch.view_as_real(spectra.permute(4, 5, 1, 0, 2, 3, 6).contiguous()).view(f, d * tiles, 2 * c)

    # Output depth z reads input depth z + j - p through tap j: a contiguous range of rows for each tap.
    product = torch.bmm(spectra, u[p])
    for j in range(kd):
        shift = j - p
        if j == p or abs(shift) >= d:
            continue
        lo, hi = max(0, -shift), min(d, d - shift)                                     # output depths
        product[:, lo * tiles:hi * tiles].baddbmm_(spectra[:, (lo + shift) * tiles:(hi + shift) * tiles], u[j])
    product = torch.view_as_complex(product.view(n, n // 2 + 1, d, b, ty, tx, o, 2))
    y = torch.fft.irfft2(product, s=(n, n), dim=(0, 1))[:tile, :tile]                  # (t, t, D, B, ty, tx, O)
    out = y.permute(3, 6, 2, 4, 0, 5, 1).reshape(b, o, d, ty * tile, tx * tile)[..., :h, :w]
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1, 1)
    return out.contiguous()


def fits(conv: nn.Conv3d) -> bool:
    """A wide cubic kernel with 'same' padding, stride 1, no dilation or groups."""
    k = conv.kernel_size[0]
    return (conv.kernel_size == (k, k, k) and k % 2 == 1 and k >= MIN_KERNEL and conv.stride == (1, 1, 1)
            and conv.padding == (k // 2,) * 3 and conv.dilation == (1, 1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros")


class FFTConv3d(nn.Conv3d):
    """nn.Conv3d through tiled FFTs on fp32 CPU inputs (the weights' spectra computed once and kept); torch's own
    convolution otherwise. Made from a loaded layer by `sadtalker.accel.accelerate`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not cpu_fp32(x):
            return super().forward(x)
        u = derived(self, "fft", (self.weight,), lambda: transform_weight(self.weight))
        return fft_conv3d(x, u, self.bias, self.kernel_size[0])
