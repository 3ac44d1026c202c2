"""FFT convolution of the dense-motion mask head: equal to torch's conv3d up to float rounding, used only with the
renderer's CPU fast paths, the weights' spectra computed once per layer."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sadtalker.accel import fftconv, winograd


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


def test_layer_path_is_cached_and_only_with_the_fast_paths(monkeypatch):
    layer = torch.nn.Conv3d(16, 4, kernel_size=7, padding=3)
    x = torch.randn(1, 16, 4, 20, 20)
    calls = []
    original = fftconv.transform_weight
    monkeypatch.setattr(fftconv, "transform_weight", lambda w, n=fftconv.FFT_SIZE: calls.append(1) or original(w, n))
    with torch.no_grad():
        expected = layer(x)
        assert not fftconv.applies(layer, x)  # off by default
        with winograd.winograd_enabled():
            assert fftconv.applies(layer, x)
            assert not fftconv.applies(torch.nn.Conv3d(16, 4, kernel_size=3, padding=1), x)
            assert not fftconv.applies(torch.nn.Conv3d(16, 4, kernel_size=7, padding=0), x)
            first = fftconv.conv(layer, x)
            second = fftconv.conv(layer, x)
    assert len(calls) == 1
    assert torch.equal(first, second)
    assert (first - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()
