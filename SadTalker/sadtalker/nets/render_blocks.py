"""Building blocks shared by the face renderer's networks (face-vid2vid style 2D/3D conv blocks and SPADE).

Attribute names follow the official state-dict keys. The original's synchronized BatchNorm behaves exactly like
plain BatchNorm in eval mode (running statistics), so plain BatchNorm is used.
"""
from __future__ import annotations

import functools
import itertools
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.accel import winograd
from sadtalker.accel.weight_cache import derived


def coordinate_grid_3d(depth: int, height: int, width: int, dtype: torch.dtype = torch.float32,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """(D, H, W, 3) grid of normalized (x, y, z) coordinates in [-1, 1], the layout grid_sample expects."""
    def axis(n: int) -> torch.Tensor:
        return 2 * (torch.arange(n, dtype=dtype, device=device) / (n - 1)) - 1

    z, y, x = torch.meshgrid(axis(depth), axis(height), axis(width), indexing="ij")
    return torch.stack([x, y, z], dim=-1)


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


class DownBlock2d(nn.Module):
    """conv -> BN -> ReLU -> 2x2 average pool."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(winograd.conv(self.conv, x))))


class DownBlock3d(nn.Module):
    """conv3d -> BN -> ReLU -> average pool over H and W only."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features)
        self.pool = nn.AvgPool3d(kernel_size=(1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(winograd.conv(self.conv, x))))


UP_SCALE_3D = (1, 2, 2)


class UpBlock3d(nn.Module):
    """Nearest 2x upsampling of H and W -> conv3d -> BN -> ReLU."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # = conv(interpolate(x, scale_factor=(1, 2, 2))), without materializing the upsampled volume
        x = upsampled_conv(x, self.conv.weight, self.conv.bias, UP_SCALE_3D, self._kept_kernels(x))
        return F.relu(self.norm(x))

    def _kept_kernels(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        """With the CPU fast paths on, the folded kernels are kept (refolding the widest, 56 MB, costs ~0.1 s a
        pass); otherwise None (folded per call)."""
        if not winograd.winograd_active(x):
            return None
        weight = self.conv.weight
        return derived(self, "folded", (weight,), lambda: folded_kernels(weight.detach(), UP_SCALE_3D))


class SameBlock2d(nn.Module):
    """conv -> BN -> ReLU (or LeakyReLU 0.01), same resolution."""

    def __init__(self, in_features: int, out_features: int, leaky: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features)
        self.ac = nn.LeakyReLU() if leaky else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ac(self.norm(winograd.conv(self.conv, x)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block: x + conv(relu(bn(conv(relu(bn(x))))))."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(features)
        self.norm2 = nn.BatchNorm3d(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = winograd.conv(self.conv1, F.relu(self.norm1(x)))
        out = winograd.conv(self.conv2, F.relu(self.norm2(out)))
        return out + x


class HourglassEncoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        widths = [in_features] + [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        self.down_blocks = nn.ModuleList(DownBlock3d(widths[i], widths[i + 1]) for i in range(num_blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            width_in = (1 if i == num_blocks - 1 else 2) * min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(UpBlock3d(width_in, min(max_features, block_expansion * 2 ** i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(winograd.conv(self.conv, out)))


class Hourglass3d(nn.Module):
    """3D U-Net: encoder of DownBlock3d, decoder of UpBlock3d with skip concatenation (the original's Hourglass)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class AntiAliasDownsample(nn.Module):
    """Gaussian blur then strided subsampling (the original's AntiAliasInterpolation2d).

    The kernel is a persistent buffer (`weight`) because the official files carry it.
    """

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1
        self.pad_before = size // 2
        self.pad_after = self.pad_before - 1 if size % 2 == 0 else self.pad_before
        coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        g = torch.exp(-coords**2 / (2 * sigma**2))
        kernel = g[:, None] * g[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, size, size).clone())
        self.channels = channels
        self.step = int(1 / scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = self.pad_before, self.pad_after
        out = F.conv2d(F.pad(x, (p, q, p, q)), self.weight, groups=self.channels)
        return out[:, :, :: self.step, :: self.step]


class SpectralNormConv2d(nn.Module):
    """Conv2d whose weight is weight_orig / sigma, sigma = u . (W v) with the stored u and v.

    This is what torch's spectral_norm computes in eval mode (no power iteration), so the official keys
    `weight_orig`, `weight_u`, `weight_v` load unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 bias: bool = True) -> None:
        super().__init__()
        self.weight_orig = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("weight_u", torch.ones(out_channels))
        self.register_buffer("weight_v", torch.ones(in_channels * kernel_size * kernel_size))
        nn.init.kaiming_uniform_(self.weight_orig, a=5**0.5)
        self.padding = padding

    def weight(self) -> torch.Tensor:
        matrix = self.weight_orig.reshape(self.weight_orig.shape[0], -1)
        sigma = torch.dot(self.weight_u, torch.mv(matrix, self.weight_v))
        return self.weight_orig / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o, c, k, _ = self.weight_orig.shape
        if winograd.applies(x, c, o, (k, k), (1, 1), (self.padding, self.padding), (1, 1), 1):
            return winograd.cached_conv(self, x, (self.weight_orig, self.weight_u, self.weight_v, self.bias),
                                        self.weight, lambda: self.bias)
        return F.conv2d(x, self.weight(), self.bias, padding=self.padding)


def upsampled_like(low: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`low` nearest-upsampled to `like`'s height and width (itself when they match)."""
    if low.shape[-2:] == like.shape[-2:]:
        return low
    return F.interpolate(low, size=tuple(like.shape[-2:]), mode="nearest")


def mul_upsampled_(t: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """t *= nearest_upsample(low), in place and by broadcasting: the upsampled map is never materialized.

    t (B, C, s*h, s*w), any strides; low (B or 1, C, h, w)."""
    s = t.shape[-1] // low.shape[-1]
    if s == 1:
        return t.mul_(low)
    h, w = low.shape[-2:]
    t.unflatten(3, (w, s)).unflatten(2, (h, s)).mul_(low[:, :, :, None, :, None])
    return t


class SPADE(nn.Module):
    """Spatially-adaptive normalization: instance norm, then scale and shift predicted from a feature map."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """`hidden`: this layer's `hidden(segmap, ...)` when the caller computed it already (see `shared_hiddens`)."""
        if hidden is None:
            hidden = self.hidden(segmap, x.shape[-2:])
        return self.modulate(self.param_free_norm(x), hidden)

    def hidden(self, segmap: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """mlp_shared(segmap resized to `size`): the features gamma and beta are predicted from."""
        scale = size[-1] // segmap.shape[-1]
        if scale > 1 and tuple(size) == (segmap.shape[-2] * scale, segmap.shape[-1] * scale):
            # mlp_shared(nearest upsample(segmap)), computed at the segmap's resolution
            conv = self.mlp_shared[0]
            return F.relu(upsampled_conv(segmap, conv.weight, conv.bias, (scale, scale)), inplace=True)
        hidden = winograd.conv(self.mlp_shared[0], F.interpolate(segmap, size=tuple(size), mode="nearest"))
        return F.relu(hidden, inplace=True)                   # a fresh map: no second full-size buffer

    def modulate(self, normalized: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """normalized * (1 + gamma) + beta; `normalized` is left unchanged. It may be at an integer fraction of
        `hidden`'s resolution: it is then nearest-upsampled (by broadcasting, on the in-place path)."""
        gamma, beta = self.gamma_beta(hidden)
        if torch.is_inference_mode_enabled() and gamma.dtype == normalized.dtype == beta.dtype:
            # the same arithmetic in gamma's buffer: no full-size temporaries (these maps reach 256x256x256)
            return mul_upsampled_(gamma.add_(1), normalized).add_(beta)
        return upsampled_like(normalized, gamma) * (1 + gamma) + beta

    def gamma_beta(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mlp_gamma(hidden), mlp_beta(hidden); on the Winograd path as one convolution of both weight sets."""
        g, b = self.mlp_gamma, self.mlp_beta
        if not winograd.applies(hidden, g.in_channels, g.out_channels, g.kernel_size, g.stride, g.padding,
                                g.dilation, g.groups):
            return g(hidden), b(hidden)
        both = winograd.cached_conv(self, hidden, (g.weight, g.bias, b.weight, b.bias),
                                    lambda: torch.cat([g.weight, b.weight]),
                                    lambda: torch.cat([g.bias, b.bias]))          # (B, 2 * norm_nc, H, W)
        return both[:, :g.out_channels], both[:, g.out_channels:]


def shared_hiddens(owner: nn.Module, spades: Sequence[SPADE], segmap: torch.Tensor) -> list[torch.Tensor] | None:
    """The hidden maps of SPADE layers that all read `segmap` at its own resolution, as one Winograd convolution of
    their concatenated mlp_shared weights (kept on `owner`): one input transform instead of one per layer, and one
    wider matrix product. None off the Winograd path (each layer then computes its own)."""
    convs = [spade.mlp_shared[0] for spade in spades]
    first = convs[0]
    widths = [conv.out_channels for conv in convs]
    if not winograd.applies(segmap, first.in_channels, sum(widths), first.kernel_size, first.stride, first.padding,
                            first.dilation, first.groups):
        return None
    sources = [t for conv in convs for t in (conv.weight, conv.bias)]
    hidden = winograd.cached_conv(owner, segmap, sources, lambda: torch.cat([conv.weight for conv in convs]),
                                  lambda: torch.cat([conv.bias for conv in convs]), slot="shared_hiddens")
    return list(F.relu(hidden, inplace=True).split(widths, dim=1))


class SPADEResnetBlock(nn.Module):
    """Residual block of two spectral-norm convs, each after SPADE + LeakyReLU(0.2); learned shortcut if widths differ."""

    def __init__(self, fin: int, fout: int, label_nc: int, spade_hidden: int = 128) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = SpectralNormConv2d(fin, fmiddle, kernel_size=3, padding=1)
        self.conv_1 = SpectralNormConv2d(fmiddle, fout, kernel_size=3, padding=1)
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(fin, fout, kernel_size=1, bias=False)
        self.norm_0 = SPADE(fin, label_nc, spade_hidden)
        self.norm_1 = SPADE(fmiddle, label_nc, spade_hidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc, spade_hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor, upsample: int = 1,
                hiddens: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The block applied to nearest_upsample(x, `upsample`) (the decoder's up blocks); `hiddens`: norm_0's and
        norm_1's hidden maps when the caller computed them already (see `shared_hiddens`).

        The upsampled input is only ever used normalized, and nearest upsampling keeps each channel's mean and
        variance, so the parameter-free norm runs at x's resolution and its output is upsampled by broadcasting
        inside the modulation (equal up to float rounding; the full-size input is never built).
        """
        normalized = self.norm_0.param_free_norm(x)     # norm_s's parameter-free norm is the same: computed once
        size = (x.shape[-2] * upsample, x.shape[-1] * upsample)
        if self.learned_shortcut:
            shortcut = self.shortcut(normalized, seg, size)
        else:
            shortcut = x if upsample == 1 else F.interpolate(x, scale_factor=upsample, mode="nearest")
        hidden_0, hidden_1 = hiddens if hiddens is not None else (self.norm_0.hidden(seg, size), None)
        dx = self.norm_0.modulate(normalized, hidden_0)
        dx = self.conv_0(F.leaky_relu(dx, 0.2, inplace=True))                    # SPADE's output is its own
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg, hidden_1), 0.2, inplace=True))
        return shortcut + dx

    def shortcut(self, normalized: torch.Tensor, seg: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """conv_s(norm_s(x, seg)) at `size` from norm_s's parameter-free norm of x (possibly at a fraction of `size`,
        see `forward`).

        On the Winograd path the 1x1 conv_s is folded into mlp_beta: conv_s(n * (1 + gamma) + beta) =
        conv_s(n * (1 + gamma)) + (W_s W_beta) * hidden + W_s b_beta, so beta is computed with fout instead of fin
        output channels (fin 256 -> fout 64 at 256x256 in up_1). Equal up to float rounding.
        """
        norm, conv = self.norm_s, self.conv_s
        hidden = norm.hidden(seg, size)
        g, b = norm.mlp_gamma, norm.mlp_beta
        fin, fout = g.out_channels, conv.weight_orig.shape[0]
        if not winograd.applies(hidden, g.in_channels, fin + fout, g.kernel_size, g.stride, g.padding, g.dilation,
                                g.groups):
            return conv(norm.modulate(normalized, hidden))
        shortcut_weight = conv.weight().detach()                                  # (fout, fin, 1, 1)

        def weights() -> torch.Tensor:
            folded = torch.einsum("of,fchw->ochw", shortcut_weight[:, :, 0, 0].double(), b.weight.double())
            return torch.cat([g.weight.double(), folded])

        def biases() -> torch.Tensor:
            return torch.cat([g.bias.double(), shortcut_weight[:, :, 0, 0].double() @ b.bias.double()])

        both = winograd.cached_conv(self, hidden, (g.weight, g.bias, b.weight, b.bias, conv.weight_orig,
                                                   conv.weight_u, conv.weight_v), weights, biases, slot="shortcut")
        scaled = mul_upsampled_(both[:, :fin].add_(1), normalized)                # n * (1 + gamma)
        out = both[:, fin:]                                                       # += conv_s(scaled), in place:
        matrix = shortcut_weight[:, :, 0, 0]                                      # a 1x1 conv is a matrix product
        for i in range(out.shape[0]):                                             # (oneDNN reorders these maps)
            out[i].view(fout, -1).addmm_(matrix, scaled[i].view(fin, -1))
        return out
