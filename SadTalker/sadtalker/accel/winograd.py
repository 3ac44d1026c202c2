"""Winograd minimal-filtering convolution F(m x m, 3 x 3) for the renderer's wide 3x3 (and 3x3x3) convolutions
on CPU.

A 3x3 stride-1 padding-1 convolution over m x m output tiles costs (m + 2)^2 multiplies per tile and channel
pair instead of 9 m^2 (4x fewer for m = 4): the weights are transformed once (U = G g G^T), input tiles are
transformed with two small fixed matrices (B^T d B), and the channel mixing becomes one batched matrix product
per tile position; the inverse transform (A^T M A) gives the output tiles. fp32 on CPU; the tile transforms in C
(`native`) when a compiler is there, else pure PyTorch.
"""
from __future__ import annotations

import ctypes
import functools
from typing import Callable, Sequence

import torch
from torch import nn

from sadtalker.accel import native
from sadtalker.accel.weight_cache import derived

# Interpolation points of the Cook-Toom construction (plus the point at infinity), chosen for fp32 accuracy.
POINTS: dict[int, tuple[float, ...]] = {
    2: (0.0, 1.0, -1.0),
    4: (0.0, 1.0, -1.0, 2.0, -2.0),
    6: (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5),
}
DEFAULT_TILE = 4
CHUNK_TILES = 128   # tiles per band: measured best on 2 AVX2 cores for the decoder's shapes
KERNEL = 3


def cpu_fp32(x: torch.Tensor) -> bool:
    """Whether `x` is what the CPU kernels are written for: fp32 on the CPU, outside autocast. Decided per call, so
    a network moved to another device or run under autocast takes torch's own kernels."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")


@functools.lru_cache(maxsize=None)
def transform_matrices(m: int, r: int = KERNEL) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A^T (m, n), G (n, r), B^T (n, n)) in float64, n = m + r - 1, for correlation y = A^T[(G g) * (B^T d)].

    From Toom-Cook polynomial multiplication c = V^-1 [(V_m h) * (V_r g)] at the points and infinity, transposed:
    A^T = V_m^T, G = V_r, B^T = V^-T, with each point's Lagrange denominator moved from B^T into G.
    """
    if m not in POINTS:
        raise ValueError(f"no Winograd points for output tile {m}; choose one of {sorted(POINTS)}")
    n = m + r - 1
    points = torch.tensor(POINTS[m][: n - 1], dtype=torch.float64)

    def vandermonde(cols: int) -> torch.Tensor:
        v = torch.zeros(n, cols, dtype=torch.float64)
        v[:-1] = points[:, None] ** torch.arange(cols, dtype=torch.float64)[None, :]
        v[-1, -1] = 1.0  # the point at infinity picks the leading coefficient
        return v

    denominators = torch.ones(n, dtype=torch.float64)
    for i in range(n - 1):
        others = torch.cat([points[:i], points[i + 1:]])
        denominators[i] = torch.prod(points[i] - others)
    at = vandermonde(m).T.contiguous()
    g = vandermonde(r) / denominators[:, None]
    bt = torch.linalg.inv(vandermonde(n)).T * denominators[:, None]
    return at, g, bt


@functools.lru_cache(maxsize=None)
def _tile_operators(m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """2D input and output transforms as single matrices acting on flattened tiles: (n^2, n^2) and (m^2, n^2)."""
    at, _, bt = transform_matrices(m)
    return torch.kron(bt, bt).float().contiguous(), torch.kron(at, at).float().contiguous()


@functools.lru_cache(maxsize=None)
def _separable_operators(m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B^T (n, n) and A^T (m, n) in fp32, for the native kernels (which apply them along each axis in turn)."""
    at, _, bt = transform_matrices(m)
    return bt.float().contiguous(), at.float().contiguous()


def transform_weight(weight: torch.Tensor, m: int = DEFAULT_TILE) -> torch.Tensor:
    """(O, C, 3, 3) -> U = G g G^T as (n^2, O, C); (O, C, 3, 3, 3) -> (3, n^2, O, C), one per depth tap.
    Computed in float64, stored fp32."""
    if weight.dim() == 5 and weight.shape[2] == KERNEL:
        return torch.stack([transform_weight(weight[:, :, k], m) for k in range(KERNEL)])
    if weight.shape[-2:] != (KERNEL, KERNEL) or weight.dim() != 4:
        raise ValueError(f"Winograd needs 3x3 or 3x3x3 kernels; got {tuple(weight.shape)}")
    _, g, _ = transform_matrices(m)
    u = torch.einsum("ai,ocij,bj->aboc", g, weight.detach().double(), g)       # (n, n, O, C)
    return u.reshape(-1, *weight.shape[:2]).float().contiguous()


def winograd_conv2d(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None,
                    m: int = DEFAULT_TILE, chunk_tiles: int = CHUNK_TILES, lib: ctypes.CDLL | None = None
                    ) -> torch.Tensor:
    """conv2d(x, weight, bias, padding=1) with U = transform_weight(weight, m); any H, W (tiles are zero padded).
    x (B, C, H, W) -> (B, O, H, W)."""
    n = m + KERNEL - 1
    if u.shape != (n * n, u.shape[1], x.shape[1]):
        raise ValueError(f"transformed weight {tuple(u.shape)} does not fit input {tuple(x.shape)} and tile {m}")
    return _depth_taps_conv(x.unsqueeze(2), u.unsqueeze(0), bias, m, chunk_tiles, lib).squeeze(2)


def winograd_conv3d(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None,
                    m: int = DEFAULT_TILE, chunk_tiles: int = CHUNK_TILES, lib: ctypes.CDLL | None = None
                    ) -> torch.Tensor:
    """conv3d(x, weight, bias, padding=1) for a 3x3x3 kernel with U = transform_weight(weight, m).

    A 3x3x3 convolution is the sum over its three depth taps of 3x3 convolutions of neighbouring depth slices, so
    each slice is transformed once and every output slice accumulates three matrix products of transformed
    slices (the same 4x fewer multiplies as in 2D). x (B, C, D, H, W) -> (B, O, D, H, W).
    """
    n = m + KERNEL - 1
    if u.shape != (KERNEL, n * n, u.shape[2], x.shape[1]):
        raise ValueError(f"transformed weight {tuple(u.shape)} does not fit input {tuple(x.shape)} and tile {m}")
    return _depth_taps_conv(x, u, bias, m, chunk_tiles, lib)


def _depth_taps_conv(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None, m: int,
                     chunk_tiles: int, lib: ctypes.CDLL | None = None) -> torch.Tensor:
    """x (B, C, D, H, W), u (taps, n^2, O, C) with 1 or 3 depth taps -> (B, O, D, H, W).

    Works through bands of tile rows of about `chunk_tiles` tiles (over all depth slices), reusing small buffers, so
    every intermediate stays in cache and no large temporary is allocated (at these sizes memory traffic, not
    arithmetic, decides). Layouts keep the gathers and scatters contiguous: input tiles are gathered with their
    n x n values innermost (rows of the band), and the output transform is computed transposed, so each tile's
    m x m outputs come out together and are scattered as whole rows of m values.
    """
    if lib is not None and m == NATIVE_TILE:
        return _native_depth_taps_conv(lib, x, u, bias, m, chunk_tiles)
    n = m + KERNEL - 1
    b, c, depth, h, w = x.shape
    taps, o = u.shape[0], u.shape[2]
    dp = depth + taps - 1                                    # with a zero slice before and after for 3 taps
    th, tw = -(-h // m), -(-w // m)
    rows = max(1, min(th, chunk_tiles // (tw * dp)))
    bt, at = _tile_operators(m)
    out = x.new_empty(b, o, depth, th * m, tw * m)
    band = x.new_zeros(c, dp, rows * m + 2, tw * m + 2)     # one zero-padded band of input rows
    d_buf = x.new_empty(c * dp * rows * tw, n * n)
    v_buf = x.new_empty(n * n, c * dp * rows * tw)
    m_buf = x.new_empty(n * n, o * depth * rows * tw)
    y_buf = x.new_empty(o * depth * rows * tw, m * m)
    bias_view = None if bias is None else bias.view(o, 1, 1, 1, 1, 1)
    for bi in range(b):
        for t0 in range(0, th, rows):
            r = min(rows, th - t0)
            tiles = r * tw
            first, last = t0 * m - 1, (t0 + r) * m + 1      # input rows this band reads (half-open)
            lo, hi = max(first, 0), min(last, h)
            if lo > first or hi < last:
                band.zero_()
            band[:, taps // 2:taps // 2 + depth, lo - first:hi - first, 1:w + 1].copy_(x[bi, :, :, lo:hi])
            s = band.stride()
            d = d_buf[:c * dp * tiles]
            d.view(c, dp, r, tw, n, n).copy_(band.as_strided((c, dp, r, tw, n, n),
                                                             (s[0], s[1], m * s[2], m * s[3], s[2], s[3])))
            v = torch.mm(bt, d.t(), out=v_buf[:, :c * dp * tiles]).view(n * n, c, dp * tiles)   # B^T d B
            prod = m_buf[:, :o * depth * tiles].view(n * n, o, depth * tiles)
            torch.bmm(u[0], v[:, :, :depth * tiles], out=prod)          # tap k reads slice d + k for output d
            for k in range(1, taps):
                prod.baddbmm_(u[k], v[:, :, k * tiles:(k + depth) * tiles])
            y = torch.mm(prod.view(n * n, -1).t(), at.t(), out=y_buf[:o * depth * tiles])  # (A^T M A)^T
            tile_out = y.view(o, depth, r, tw, m, m).permute(0, 1, 2, 4, 3, 5)           # (O, D, r, m, tw, m)
            target = out[bi, :, :, t0 * m:(t0 + r) * m].view(o, depth, r, m, tw, m)
            if bias_view is None:
                target.copy_(tile_out)
            else:
                torch.add(tile_out, bias_view, out=target)
    if th * m != h or tw * m != w:
        out = out[..., :h, :w].contiguous()
    return out


NATIVE_TILE = 4   # the tile size the native kernels are written for


def _native_depth_taps_conv(lib, x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None, m: int,
                            chunk_tiles: int) -> torch.Tensor:
    """`_depth_taps_conv` with the tile gather + input transform and the output transform + scatter done by the
    native kernels, one pass each (same bands and GEMMs)."""
    n = m + KERNEL - 1
    b, c, depth, h, w = x.shape
    taps, o = u.shape[0], u.shape[2]
    dp = depth + taps - 1
    th, tw = -(-h // m), -(-w // m)
    rows = max(1, min(th, chunk_tiles // (tw * dp)))
    bt, at = _separable_operators(m)
    out = x.new_empty(b, o, depth, h, w)
    v_flat = x.new_empty(n * n * c * dp * rows * tw)
    m_flat = x.new_empty(n * n * o * depth * rows * tw)
    bias = None if bias is None else bias.contiguous()
    for bi in range(b):
        for t0 in range(0, th, rows):
            r = min(rows, th - t0)
            tiles = r * tw
            v = v_flat[:n * n * c * dp * tiles].view(c, n * n, dp * tiles)
            native.input_tiles(lib, x[bi], t0, r, tw, taps, bt, v)
            v = v.transpose(0, 1)                               # (n^2, C, DP * tiles), a strided batch
            prod = m_flat[:n * n * o * depth * tiles].view(o, n * n, depth * tiles)
            products = prod.transpose(0, 1)                     # (n^2, O, D * tiles)
            torch.bmm(u[0], v[:, :, :depth * tiles], out=products)
            for k in range(1, taps):
                products.baddbmm_(u[k], v[:, :, k * tiles:(k + depth) * tiles])
            native.output_tiles(lib, prod, t0, r, tw, at, bias, out[bi])
    return out


MIN_CHANNELS = 64  # narrower convolutions (the image in/out layers) gain nothing: torch's own kernel is used
# 3D convolutions on planes smaller than this (the hourglass's deepest, widest layers) gain little and their
# transformed weights would be large (226 MB for the 512 -> 1024 one): torch's kernel is used there.
MIN_3D_PLANE = 16


def fits(conv: nn.Conv2d | nn.Conv3d) -> bool:
    """Whether a convolution layer has the shape the Winograd path is written for: a wide 3x3 (or 3x3x3), stride 1,
    padding 1, no dilation or groups."""
    dims = len(conv.kernel_size)
    return (dims in (2, 3) and tuple(conv.kernel_size) == (KERNEL,) * dims and tuple(conv.stride) == (1,) * dims
            and tuple(conv.padding) == (1,) * dims and tuple(conv.dilation) == (1,) * dims and conv.groups == 1
            and min(conv.in_channels, conv.out_channels) >= MIN_CHANNELS
            and getattr(conv, "padding_mode", "zeros") == "zeros")


def runs_on(x: torch.Tensor) -> bool:
    """Whether a Winograd-shaped convolution of `x` takes the Winograd path (fp32 on the CPU; 3D planes large
    enough)."""
    return cpu_fp32(x) and x.dim() in (4, 5) and (x.dim() == 4 or min(x.shape[-2:]) >= MIN_3D_PLANE)


def cached_conv(owner: nn.Module, x: torch.Tensor, sources: Sequence[torch.Tensor | None],
                weight: Callable[[], torch.Tensor], bias: Callable[[], torch.Tensor | None],
                slot: str = "weights", lib: ctypes.CDLL | None = None) -> torch.Tensor:
    """Winograd conv of `x` with the weights `weight()` / `bias()` derive from `sources` ((O, C, 3, 3[, 3]) / (O,) or
    None), transformed once and kept on `owner` under `slot` until a source changes."""
    def build() -> tuple[torch.Tensor, torch.Tensor | None]:
        b = bias()
        return transform_weight(weight()), None if b is None else b.detach().float().contiguous()

    u, b = derived(owner, f"winograd_{slot}", sources, build)
    return (winograd_conv3d if x.dim() == 5 else winograd_conv2d)(x, u, b, lib=lib)


class WinogradConv2d(nn.Conv2d):
    """nn.Conv2d through Winograd F(4x4, 3x3) on fp32 CPU inputs (weights transformed once and kept); torch's own
    convolution otherwise. Made from a loaded layer by `sadtalker.accel.accelerate`."""

    native: "native.NativeKernels"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not runs_on(x):
            return super().forward(x)
        return cached_conv(self, x, (self.weight, self.bias), lambda: self.weight, lambda: self.bias,
                           lib=self.native.library())


class WinogradConv3d(nn.Conv3d):
    """nn.Conv3d (3x3x3) through Winograd over depth taps on fp32 CPU inputs with planes of 16x16 and up."""

    native: "native.NativeKernels"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not runs_on(x):
            return super().forward(x)
        return cached_conv(self, x, (self.weight, self.bias), lambda: self.weight, lambda: self.bias,
                           lib=self.native.library())
