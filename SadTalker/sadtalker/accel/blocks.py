"""Faster equivalents of the renderers' blocks (`nets/render_blocks.py`, `nets/spade_decoder.py`: SadTalker's and
Ditto's), swapped in by `accelerate`. Each computes what the plain block computes, up to float summation order.

Any device (memory and arithmetic saved everywhere):
- an upsampling block convolves its input at the low resolution with folded kernels (`upsample.upsampled_conv`);
- a SPADE block's parameter-free norm runs once at the input's resolution and is upsampled by broadcasting inside
  the modulation (nearest upsampling keeps each channel's mean and variance), so the decoder's up blocks never
  build their full-size input; the modulation runs in place in gamma's buffer under inference mode.
fp32 on the CPU only, when the CPU kernels are on (decided per call from the input):
- gamma and beta as one Winograd convolution of both weight sets;
- a learned 1x1 shortcut folded into beta's convolution and applied as in-place matrix products;
- the twelve middle SPADE layers' hidden maps (same segmap, same resolution) as one Winograd convolution;
- spectral-norm convolutions through Winograd on the normalized weight, kept until the weights change.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sadtalker.accel import native, winograd
from sadtalker.accel.upsample import folded_kernels, upsampled_conv
from sadtalker.accel.weight_cache import derived
from sadtalker.nets.render_blocks import SPADE, SPADEResnetBlock, SpectralNormConv2d, UpBlock3d
from sadtalker.nets.spade_decoder import NUM_MIDDLE_BLOCKS, SPADEDecoder

UP_SCALE_3D = (1, 2, 2)


class FastBlock:
    """What every swapped-in block knows: whether the CPU kernels are on, and the native kernels' handle."""

    cpu_kernels: bool
    native: native.NativeKernels

    def on_cpu_path(self, x: torch.Tensor) -> bool:
        return self.cpu_kernels and winograd.runs_on(x)

    def fits_cpu_path(self, x: torch.Tensor, conv: nn.Conv2d, out_channels: int | None = None) -> bool:
        """Whether a Winograd convolution shaped like `conv` (with `out_channels` outputs) applies to `x` now."""
        wide = min(conv.in_channels, out_channels or conv.out_channels) >= winograd.MIN_CHANNELS
        return self.on_cpu_path(x) and wide and winograd.fits(conv)


class FastUpBlock3d(FastBlock, UpBlock3d):
    """UpBlock3d without the upsampled volume; on the CPU path the folded kernels are kept (refolding the widest,
    56 MB, costs ~0.1 s a pass)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.conv.weight
        kept = (derived(self, "folded", (weight,), lambda: folded_kernels(weight.detach(), UP_SCALE_3D))
                if self.cpu_kernels and winograd.cpu_fp32(x) else None)
        return F.relu(self.norm(upsampled_conv(x, weight, self.conv.bias, UP_SCALE_3D, kept)))


class FastSpectralNormConv2d(FastBlock, SpectralNormConv2d):
    """Spectral-norm conv through Winograd on the normalized weight (kept until weight_orig, u or v change)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o, c, k, _ = self.weight_orig.shape
        if self.on_cpu_path(x) and k == winograd.KERNEL and self.padding == 1 and min(o, c) >= winograd.MIN_CHANNELS:
            return winograd.cached_conv(self, x, (self.weight_orig, self.weight_u, self.weight_v, self.bias),
                                        self.weight, lambda: self.bias, lib=self.native.library())
        return super().forward(x)


def conv_weight(conv: nn.Module) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """A convolution's effective weight and the tensors it is computed from (a plain conv, or a spectral-norm one:
    SadTalker's decoder keeps spectral norm, Ditto's loader folds it)."""
    if isinstance(conv, SpectralNormConv2d):
        return conv.weight(), (conv.weight_orig, conv.weight_u, conv.weight_v)
    return conv.weight, (conv.weight,)


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


class FastSPADE(FastBlock, SPADE):
    """SPADE whose hidden map may come from the caller and whose normalized input may be at a fraction of the
    output's resolution."""

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
        hidden = self.mlp_shared[0](F.interpolate(segmap, size=tuple(size), mode="nearest"))
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
        """mlp_gamma(hidden), mlp_beta(hidden); on the CPU path as one convolution of both weight sets."""
        g, b = self.mlp_gamma, self.mlp_beta
        if not self.fits_cpu_path(hidden, g):
            return g(hidden), b(hidden)
        both = winograd.cached_conv(self, hidden, (g.weight, g.bias, b.weight, b.bias),
                                    lambda: torch.cat([g.weight, b.weight]),
                                    lambda: torch.cat([g.bias, b.bias]), lib=self.native.library())
        return both[:, :g.out_channels], both[:, g.out_channels:]                   # (B, norm_nc, H, W) each


class FastSPADEResnetBlock(FastBlock, SPADEResnetBlock):
    """SPADEResnetBlock that may upsample its input itself (`upsample`) and take precomputed hidden maps."""

    norm_0: FastSPADE
    norm_1: FastSPADE
    norm_s: FastSPADE

    def forward(self, x: torch.Tensor, seg: torch.Tensor, upsample: int = 1,
                hiddens: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The block applied to nearest_upsample(x, `upsample`); `hiddens`: norm_0's and norm_1's hidden maps when
        the caller computed them already (see `shared_hiddens`).

        The upsampled input is only ever used normalized, and nearest upsampling keeps each channel's mean and
        variance, so the parameter-free norm runs at x's resolution and its output is upsampled by broadcasting
        inside the modulation (the full-size input is never built).
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
        """conv_s(norm_s(x, seg)) at `size` from norm_s's parameter-free norm of x (possibly at a fraction of `size`).

        On the CPU path the 1x1 conv_s is folded into mlp_beta: conv_s(n * (1 + gamma) + beta) =
        conv_s(n * (1 + gamma)) + (W_s W_beta) * hidden + W_s b_beta, so beta is computed with fout instead of fin
        output channels (fin 256 -> fout 64 at 256x256 in up_1).
        """
        norm, conv = self.norm_s, self.conv_s
        hidden = norm.hidden(seg, size)
        g, b = norm.mlp_gamma, norm.mlp_beta
        shortcut_weight, shortcut_sources = conv_weight(conv)                     # (fout, fin, 1, 1)
        fin, fout = g.out_channels, shortcut_weight.shape[0]
        if not self.fits_cpu_path(hidden, g, fin + fout):
            return conv(norm.modulate(normalized, hidden))
        shortcut_weight = shortcut_weight.detach()

        def weights() -> torch.Tensor:
            folded = torch.einsum("of,fchw->ochw", shortcut_weight[:, :, 0, 0].double(), b.weight.double())
            return torch.cat([g.weight.double(), folded])

        def biases() -> torch.Tensor:
            return torch.cat([g.bias.double(), shortcut_weight[:, :, 0, 0].double() @ b.bias.double()])

        both = winograd.cached_conv(self, hidden, (g.weight, g.bias, b.weight, b.bias, *shortcut_sources), weights,
                                    biases, slot="shortcut", lib=self.native.library())
        scaled = mul_upsampled_(both[:, :fin].add_(1), normalized)                # n * (1 + gamma)
        out = both[:, fin:]                                                       # += conv_s(scaled), in place:
        matrix = shortcut_weight[:, :, 0, 0]                                      # a 1x1 conv is a matrix product
        for i in range(out.shape[0]):                                             # (oneDNN reorders these maps)
            out[i].view(fout, -1).addmm_(matrix, scaled[i].view(fin, -1))
        return out


class FastSPADEDecoder(FastBlock, SPADEDecoder):
    """SPADEDecoder whose up blocks upsample inside (see FastSPADEResnetBlock) and whose twelve middle SPADE layers
    share one hidden-map convolution on the CPU path."""

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        seg = feature                                         # (B, 256, h, w)
        x = self.fc(feature)                                  # (B, 512, h, w)
        middle: list[FastSPADEResnetBlock] = [getattr(self, f"G_middle_{i}") for i in range(NUM_MIDDLE_BLOCKS)]
        hiddens = self.shared_hiddens([norm for block in middle for norm in (block.norm_0, block.norm_1)], seg)
        for i, block in enumerate(middle):
            x = block(x, seg, hiddens=None if hiddens is None else hiddens[2 * i:2 * i + 2])
        x = self.up_0(x, seg, upsample=2)                     # (B, 256, 2h, 2w)
        x = self.up_1(x, seg, upsample=2)                     # (B, 64, 4h, 4w)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))   # (B, 3, 4h, 4w)

    def shared_hiddens(self, spades: Sequence[SPADE], segmap: torch.Tensor) -> list[torch.Tensor] | None:
        """The hidden maps of SPADE layers that all read `segmap` at its own resolution, as one Winograd convolution
        of their concatenated mlp_shared weights: one input transform instead of one per layer, and one wider matrix
        product. None off the CPU path (each layer then computes its own)."""
        convs = [spade.mlp_shared[0] for spade in spades]
        widths = [conv.out_channels for conv in convs]
        if not self.fits_cpu_path(segmap, convs[0], sum(widths)):
            return None
        sources = [t for conv in convs for t in (conv.weight, conv.bias)]
        hidden = winograd.cached_conv(self, segmap, sources, lambda: torch.cat([conv.weight for conv in convs]),
                                      lambda: torch.cat([conv.bias for conv in convs]), slot="shared_hiddens",
                                      lib=self.native.library())
        return list(F.relu(hidden, inplace=True).split(widths, dim=1))
