"""Tap-product convolution of the occlusion head: equal to torch's conv2d up to float rounding, used only with the
renderer's CPU fast paths for wide kernels with few outputs, the tap matrix computed once per layer."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from sadtalker.accel import accelerate, tapconv


@pytest.mark.parametrize("shape, out, kernel, padding", [
    ((2, 96, 20, 17), 1, (7, 7), (3, 3)),
    ((1, 30, 9, 12), 2, (5, 7), (2, 3)),
    ((1, 12, 11, 10), 1, (5, 5), (0, 1)),
])
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_conv2d(shape, out, kernel, padding, with_bias):
    b, c, h, w = shape
    gen = torch.Generator().manual_seed(sum(shape) + out)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    weight = torch.randn(out, c, *kernel, generator=gen, dtype=torch.float64) / (c * kernel[0] * kernel[1]) ** 0.5
    bias = torch.randn(out, generator=gen, dtype=torch.float64) if with_bias else None
    ref = F.conv2d(x, weight, bias, padding=padding)                          # float64 reference
    got = tapconv.tap_conv2d(x.float(), tapconv.tap_matrix(weight.float()), None if bias is None else bias.float(),
                             kernel, padding)
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert (got.double() - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()


def test_occlusion_head_layer_at_real_widths_is_cached_and_cpu_fp32_only(monkeypatch):
    """The occlusion head as the 256 renderer has it (1792 -> 1 channels, 7x7), on a smaller plane."""
    torch.manual_seed(1)
    layer = torch.nn.Conv2d(1792, 1, kernel_size=7, padding=3)
    x = torch.randn(2, 1792, 24, 24)
    calls = []
    original = tapconv.tap_matrix
    monkeypatch.setattr(tapconv, "tap_matrix", lambda w: calls.append(1) or original(w))
    fast = accelerate(copy.deepcopy(layer))
    assert isinstance(fast, tapconv.TapConv2d)
    assert not tapconv.fits(torch.nn.Conv2d(40, 8, kernel_size=7, padding=3))    # many outputs
    assert not tapconv.fits(torch.nn.Conv2d(40, 1, kernel_size=3, padding=1))    # narrow kernel
    assert not tapconv.fits(torch.nn.Conv2d(40, 1, kernel_size=7, stride=2))
    with torch.no_grad():
        expected = layer(x)
        first, second = fast(x), fast(x)
        on_meta = accelerate(copy.deepcopy(layer).to("meta"))   # as on another device: torch's kernel
        assert on_meta(torch.empty(2, 1792, 24, 24, device="meta")).shape == expected.shape
    assert len(calls) == 1
    torch.testing.assert_close(first, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(second, first, rtol=0, atol=0)


def test_wrong_tap_matrix_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        tapconv.tap_conv2d(torch.randn(1, 4, 8, 8), torch.randn(49, 5), None, (7, 7), (3, 3))
