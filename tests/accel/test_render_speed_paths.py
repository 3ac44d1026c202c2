"""The renderer's speed paths compute what the plain formulation computes: low-resolution phase convolutions
instead of upsample-then-convolve, and the mixed-precision switch (exercised on CPU; meant for CUDA)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from renderer_factory import tiny_renderer


@pytest.mark.parametrize("scale,shape", [((2, 2), (2, 6, 5, 7)), ((4, 4), (1, 3, 4, 3)), ((1, 2, 2), (2, 4, 3, 5, 4)),
                                         ((3, 1), (1, 2, 4, 5))])
def test_upsampled_conv_equals_conv_of_nearest_upsampling(scale, shape) -> None:
    from sadtalker.nets.render_blocks import upsampled_conv

    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    weight = torch.randn(5, shape[1], *([3] * len(scale)), generator=g, dtype=torch.float64)
    bias = torch.randn(5, generator=g, dtype=torch.float64)
    conv = F.conv2d if len(scale) == 2 else F.conv3d
    size = tuple(n * s for n, s in zip(shape[2:], scale))
    expected = conv(F.interpolate(x, size=size, mode="nearest"), weight, bias, padding=1)
    got = upsampled_conv(x, weight, bias, scale)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-10, rtol=0)


def test_spade_and_up_block_match_the_plain_formulation() -> None:
    from sadtalker.nets.render_blocks import SPADE, UpBlock3d

    torch.manual_seed(0)
    spade = SPADE(6, 4, hidden=5).eval()
    x, seg = torch.randn(2, 6, 16, 16), torch.randn(2, 4, 4, 4)
    with torch.no_grad():
        hidden = spade.mlp_shared(F.interpolate(seg, size=(16, 16), mode="nearest"))
        plain = spade.param_free_norm(x) * (1 + spade.mlp_gamma(hidden)) + spade.mlp_beta(hidden)
        assert torch.allclose(spade(x, seg), plain, atol=1e-5)
        same_size = torch.randn(2, 4, 16, 16)
        hidden = spade.mlp_shared(same_size)
        plain = spade.param_free_norm(x) * (1 + spade.mlp_gamma(hidden)) + spade.mlp_beta(hidden)
        assert torch.allclose(spade(x, same_size), plain, atol=1e-6)

        up = UpBlock3d(3, 4).eval()
        up.norm.running_mean.normal_(0, 0.1)
        v = torch.randn(1, 3, 2, 3, 4)
        plain = F.relu(up.norm(up.conv(F.interpolate(v, scale_factor=(1, 2, 2)))))
        assert torch.allclose(up(v), plain, atol=1e-5)
        assert "_derived_folded" not in up.__dict__  # folded per call without the fast paths


def test_up_block_keeps_its_folded_kernels_on_the_fast_path(monkeypatch) -> None:
    from sadtalker.accel import winograd
    from sadtalker.nets import render_blocks

    torch.manual_seed(1)
    up = render_blocks.UpBlock3d(8, 6).eval()
    v = torch.randn(2, 8, 3, 5, 4)
    folds = []
    original = render_blocks.folded_kernels
    monkeypatch.setattr(render_blocks, "folded_kernels", lambda w, s: folds.append(1) or original(w, s))
    with torch.no_grad():
        plain = up(v)
        with winograd.winograd_enabled():
            first, second = up(v), up(v)
        assert len(folds) == 2  # once for the plain call, once kept for both fast-path calls
        up.conv.weight.mul_(2.0)  # an in-place update: folded again
        with winograd.winograd_enabled():
            updated = up(v)
    assert len(folds) == 3
    assert torch.equal(first, second) and torch.allclose(first, plain, atol=1e-5)
    assert not torch.allclose(updated, first)


def _inputs():
    rng = np.random.default_rng(1)
    crop = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    return crop, rng.normal(0, 0.1, (3, 70)).astype(np.float32), np.zeros(73, np.float32)


def test_bf16_autocast_keeps_keypoints_fp32_and_frames_close() -> None:
    from sadtalker.engines.sadtalker.render import FaceRenderer, renderer_coefficients, source_tensor

    ref = tiny_renderer()
    half = FaceRenderer(ref.kp_detector, ref.generator, ref.size, ref.device, mappings=ref._mappings,
                        precision="bf16")
    crop, coeffs, src = _inputs()
    target, source = renderer_coefficients(coeffs, src, "crop")
    state = ref.prepare_source(source_tensor(crop, 64), source, "crop")
    a = next(ref.render_batches(state, target, "crop", batch_size=3))
    b = next(half.render_batches(state, target, "crop", batch_size=3))
    assert b.frames.dtype == torch.float32 and b.kp_driving.dtype == torch.float32
    assert torch.equal(a.kp_driving, b.kp_driving)  # keypoints are not computed under autocast
    diff = (a.frames - b.frames).abs().max().item()
    assert 0 < diff < 0.05  # bf16 really ran, and stayed near fp32


def test_unknown_precision_is_refused() -> None:
    from sadtalker.engines.sadtalker.render import FaceRenderer
    from sadtalker.errors import InvalidInputError

    ref = tiny_renderer()
    with pytest.raises(InvalidInputError, match="precision"):
        FaceRenderer(ref.kp_detector, ref.generator, ref.size, ref.device, precision="int8")  # type: ignore[arg-type]


def test_multiplying_by_an_upsampled_map_in_place_equals_materializing_it() -> None:
    from sadtalker.nets.render_blocks import mul_upsampled_

    g = torch.Generator().manual_seed(3)
    both = torch.randn(2, 10, 8, 12, generator=g)
    low = torch.randn(2, 4, 4, 6, generator=g)
    expected = both[:, :4] * F.interpolate(low, scale_factor=2, mode="nearest")
    got = mul_upsampled_(both[:, :4], low)            # a channel slice: not contiguous
    assert got.data_ptr() == both.data_ptr()
    torch.testing.assert_close(both[:, :4], expected, rtol=0, atol=0)


@pytest.mark.parametrize("fin,fout", [(24, 8), (16, 16)])
@pytest.mark.parametrize("fast", [False, True])
def test_up_block_normalizes_at_low_resolution(fin, fout, fast) -> None:
    """block(x, seg, upsample=2) = block(nearest_upsample(x), seg): with and without a learned shortcut, on the
    plain and the fast path."""
    from sadtalker.accel import winograd
    from sadtalker.nets.render_blocks import SPADEResnetBlock

    torch.manual_seed(fin + fout)
    block = SPADEResnetBlock(fin, fout, 12, spade_hidden=16).eval()
    x, seg = torch.randn(2, fin, 8, 8) * 3 + 1, torch.randn(2, 12, 4, 4)
    with torch.no_grad():
        expected = block(F.interpolate(x, scale_factor=2, mode="nearest"), seg)
    context = torch.inference_mode() if fast else torch.no_grad()
    with context, winograd.winograd_enabled(fast):
        got = block(x, seg, upsample=2)
    assert got.shape == (2, fout, 16, 16)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_middle_blocks_share_one_hidden_convolution_on_the_fast_path() -> None:
    """The twelve middle SPADE layers' hidden maps come from one convolution of their concatenated weights: equal to
    each layer's own, and the decoder's output equals the plain path's."""
    from sadtalker.accel import winograd
    from sadtalker.nets.render_blocks import shared_hiddens
    from sadtalker.nets.spade_decoder import SPADEDecoder

    torch.manual_seed(5)
    decoder = SPADEDecoder(in_channels=64, out_channels=64, spade_hidden=64).eval()
    feature = torch.randn(2, 64, 8, 8)
    norms = [norm for i in range(6) for norm in (getattr(decoder, f"G_middle_{i}").norm_0,
                                                getattr(decoder, f"G_middle_{i}").norm_1)]
    with torch.no_grad():
        plain = decoder(feature)
        own = [norm.hidden(feature, (8, 8)) for norm in norms]
        assert shared_hiddens(decoder, norms, feature) is None          # off the fast path: each layer its own
    with torch.inference_mode(), winograd.winograd_enabled():
        shared = shared_hiddens(decoder, norms, feature)
        fast = decoder(feature)
    assert shared is not None and len(shared) == 12
    for got, expected in zip(shared, own):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
