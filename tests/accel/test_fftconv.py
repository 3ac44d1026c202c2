"""FFT convolution of the dense-motion mask head: equal to torch's conv3d up to float rounding, used only with the
renderer's CPU fast paths (fp32 CPU inputs), the weights' spectra computed once per layer."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from sadtalker.accel import accelerate, fftconv


@pytest.mark.parametrize("shape, kernel", [((2, 24, 6, 40, 37), 7), ((1, 8, 3, 10, 70), 5), ((1, 4, 9, 32, 32), 7)])
def test_matches_conv3d(shape, kernel):
    b, c, d, h, w = shape
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    weight = torch.randn(5, c, kernel, kernel, kernel, generator=gen, dtype=torch.float64) / (c * kernel**3) ** 0.5
    bias = torch.randn(5, generator=gen, dtype=torch.float64)
    ref = F.conv3d(x, weight, bias, padding=kernel // 2)                      # float64 reference
    got = fftconv.fft_conv3d(x.float(), fftconv.transform_weight(weight), bias.float(), kernel)
    assert got.shape == ref.shape and got.is_contiguous()
    assert (got.double() - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()


def test_mask_head_layer_at_real_widths_is_cached_and_cpu_fp32_only(monkeypatch):
    """The dense-motion mask head as the 256 renderer has it (112 -> 16 channels, 7x7x7, depth 16), on a smaller
    plane: the accelerated layer equals torch's, transforms its weights once, and only for fp32 CPU inputs."""
    torch.manual_seed(0)
    layer = torch.nn.Conv3d(112, 16, kernel_size=7, padding=3)
    x = torch.randn(1, 112, 16, 24, 24)
    calls = []
    original = fftconv.transform_weight
    monkeypatch.setattr(fftconv, "transform_weight", lambda w, n=fftconv.FFT_SIZE: calls.append(1) or original(w, n))
    fast = accelerate(copy.deepcopy(layer))
    assert isinstance(fast, fftconv.FFTConv3d)
    assert not fftconv.fits(torch.nn.Conv3d(16, 4, kernel_size=3, padding=1))
    assert not fftconv.fits(torch.nn.Conv3d(16, 4, kernel_size=7, padding=0))
    with torch.no_grad():
        expected = layer(x)
        first, second = fast(x), fast(x)
        on_meta = accelerate(copy.deepcopy(layer).to("meta"))   # as on another device: torch's kernel
        assert on_meta(torch.empty(1, 112, 16, 24, 24, device="meta")).shape == expected.shape
    assert len(calls) == 1
    assert torch.equal(first, second)
    assert (first - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()
