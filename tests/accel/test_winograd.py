"""Winograd F(4x4, 3x3) convolutions of the renderer: equal to torch's convolution up to float rounding, the
weights transformed once per layer, and the official-size renderer's frames the same with the fast path on or off."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sadtalker.accel import winograd
from sadtalker.accel.weight_cache import Derived
from sadtalker.errors import InvalidInputError
from sadtalker.nets.render_blocks import SPADE, SPADEResnetBlock, SpectralNormConv2d


@pytest.mark.parametrize("m", [2, 4, 6])
@pytest.mark.parametrize("shape", [(1, 64, 64, 64, 64), (2, 96, 80, 37, 50), (3, 64, 128, 5, 9), (2, 70, 65, 1, 1)])
def test_matches_conv2d(m, shape):
    b, c, o, h, w = shape
    gen = torch.Generator().manual_seed(sum(shape) + m)
    x = torch.randn(b, c, h, w, generator=gen)
    weight = torch.randn(o, c, 3, 3, generator=gen) / (3 * c**0.5)
    bias = torch.randn(o, generator=gen)
    ref = F.conv2d(x, weight, bias, padding=1)
    got = winograd.winograd_conv2d(x, winograd.transform_weight(weight, m), bias, m=m, chunk_tiles=16)
    assert got.shape == ref.shape
    tolerance = {2: 1e-5, 4: 2e-5, 6: 1e-4}[m]
    assert (got - ref).abs().max().item() <= tolerance * ref.abs().max().item()


@pytest.mark.parametrize("shape", [(2, 64, 80, 16, 16, 16), (1, 96, 64, 5, 13, 9), (2, 64, 64, 1, 4, 4)])
def test_matches_conv3d(shape):
    b, c, o, d, h, w = shape
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(b, c, d, h, w, generator=gen)
    weight = torch.randn(o, c, 3, 3, 3, generator=gen) / (5 * c**0.5)
    bias = torch.randn(o, generator=gen)
    ref = F.conv3d(x, weight, bias, padding=1)
    got = winograd.winograd_conv3d(x, winograd.transform_weight(weight), bias, chunk_tiles=8)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= 2e-5 * ref.abs().max().item()
    conv = torch.nn.Conv3d(c, o, 3, padding=1)
    with torch.inference_mode(), winograd.winograd_enabled():
        # small planes keep torch's kernel (little gain, large transformed weights)
        assert winograd.applies(x, c, o, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1) == (min(h, w) >= 16)
        expected = conv(x)
        assert (winograd.conv(conv, x) - expected).abs().max().item() <= 2e-5 * expected.abs().max().item()


def test_narrow_or_other_convolutions_keep_torchs_path():
    conv = torch.nn.Conv2d(3, 64, 3, padding=1)
    x = torch.randn(1, 3, 16, 16)
    with winograd.winograd_enabled():
        assert not winograd.applies(x, 3, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1)
        assert not winograd.applies(torch.randn(1, 64, 8, 8), 64, 64, (3, 3), (2, 2), (1, 1), (1, 1), 1)
        assert not winograd.applies(torch.randn(1, 64, 8, 8).double(), 64, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1)
        assert not winograd.applies(torch.randn(1, 64, 4, 8, 8), 64, 64, (7, 7, 7), (1, 1, 1), (3, 3, 3), (1, 1, 1), 1)
        assert torch.equal(winograd.conv(conv, x), conv(x))
    assert not winograd.applies(torch.randn(1, 64, 8, 8), 64, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1)  # off


def test_weights_are_transformed_once_and_follow_updates(monkeypatch):
    conv = SpectralNormConv2d(64, 64, kernel_size=3, padding=1)
    x = torch.randn(1, 64, 12, 12)
    calls = []
    original = winograd.transform_weight
    monkeypatch.setattr(winograd, "transform_weight", lambda w, m=4: calls.append(1) or original(w, m))
    with torch.no_grad(), winograd.winograd_enabled():
        first = conv(x)
        conv(x)
        assert len(calls) == 1
        conv.weight_orig[:8].mul_(3.0)  # an in-place update (e.g. loading a checkpoint) invalidates the cache
        updated = conv(x)
    assert len(calls) == 2
    with torch.no_grad():
        expected = F.conv2d(x, conv.weight(), conv.bias, padding=1)
    assert (updated - expected).abs().max() < 1e-4 and not torch.allclose(first, updated)


def test_spade_fast_path_equals_the_plain_one():
    spade = SPADE(128, 256).eval()
    x, seg = torch.randn(2, 128, 32, 32), torch.randn(2, 256, 8, 8)
    with torch.no_grad():
        plain = spade(x, seg)
    with torch.inference_mode(), winograd.winograd_enabled():
        fast = spade(x, seg)
    assert (fast - plain).abs().max().item() < 1e-4


@pytest.mark.parametrize("fin, fout, size", [(128, 64, 32), (128, 128, 16)])
def test_resnet_block_fast_path_equals_the_plain_one(fin, fout, size):
    """With a learned shortcut the fast path folds conv_s into norm_s's beta; without one it only shares the norm."""
    torch.manual_seed(fin + fout)
    block = SPADEResnetBlock(fin, fout, 96).eval()
    with torch.no_grad():
        block.conv_0.weight_u.normal_()  # spectral-norm vectors as a checkpoint would have them
        block.conv_0.weight_v.normal_()
        if block.learned_shortcut:
            block.conv_s.weight_u.normal_()
            block.conv_s.weight_v.normal_()
    x, seg = torch.randn(2, fin, size, size), torch.randn(2, 96, size // 4, size // 4)
    with torch.no_grad():
        plain = block(x, seg)
    with torch.inference_mode(), winograd.winograd_enabled():
        fast = block(x, seg)
        again = block(x, seg)  # from the cached folded weights
    assert block.learned_shortcut == (fin != fout)
    assert (fast - plain).abs().max().item() < 1e-4 * plain.abs().max().item()
    assert torch.equal(fast, again)


def test_official_renderer_frames_equal_with_and_without_winograd(official_checkpoints):
    from sadtalker.engines.sadtalker.render import FaceRenderer, renderer_coefficients

    renderer = FaceRenderer.from_checkpoint(official_checkpoints, size=256, device="cpu")
    assert renderer.winograd  # the CPU default
    rng = np.random.default_rng(3)
    crop = (rng.random((256, 256, 3)) * 255).astype(np.uint8)
    coeffs = (rng.normal(size=(2, 70)) * 0.1).astype(np.float32)
    source = (rng.normal(size=73) * 0.1).astype(np.float32)
    target, source = renderer_coefficients(coeffs, source, "crop", 1.0, False)
    state = renderer.prepare_source(torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255, source, "crop")
    fast = next(renderer.render_batches(state, target, "crop", batch_size=2)).frames
    renderer.winograd = False
    plain = next(renderer.render_batches(state, target, "crop", batch_size=2)).frames
    assert (fast - plain).abs().max().item() < 2e-3  # the renderer's parity tolerance; measured ~1e-5


def test_renderer_loaded_inside_inference_mode_has_normal_weights(official_checkpoints):
    """The pipeline loads the 512 renderer lazily inside a request's inference mode; its weights must still be
    normal tensors, or the fast paths could not keep their transformed weights and would redo them every pass."""
    from sadtalker.engines.sadtalker.render import FaceRenderer

    with torch.inference_mode():
        renderer = FaceRenderer.from_checkpoint(official_checkpoints, size=256, device="cpu")
    tensors = [*renderer.generator.parameters(), *renderer.generator.buffers()]
    assert tensors and not any(t.is_inference() for t in tensors)
    cache = Derived()
    weight = renderer.generator.decoder.fc.weight
    first = cache.get((weight,), lambda: winograd.transform_weight(weight))
    second = cache.get((weight,), lambda: winograd.transform_weight(weight))
    assert second is first  # kept, not rebuilt


def test_fast_paths_can_be_turned_off_for_the_service(official_checkpoints, monkeypatch):
    """SADTALKER_CPU_FAST_PATHS=0 (about 1 GB less memory) reaches the renderer the pipeline loads."""
    from sadtalker.engines.sadtalker.pipeline import SadTalkerPipeline
    from sadtalker.service.model_service import ServiceConfig

    monkeypatch.setenv("SADTALKER_CPU_FAST_PATHS", "0")
    assert ServiceConfig.from_env().cpu_fast_paths is False
    monkeypatch.setenv("SADTALKER_CPU_FAST_PATHS", "1")
    assert ServiceConfig.from_env().cpu_fast_paths is True
    monkeypatch.setenv("SADTALKER_CPU_FAST_PATHS", "maybe")  # a typo is refused, not read as on
    with pytest.raises(InvalidInputError, match="SADTALKER_CPU_FAST_PATHS must be true or false"):
        ServiceConfig.from_env()
    pipeline = SadTalkerPipeline.from_checkpoint(official_checkpoints, device="cpu", cpu_fast_paths=False)
    assert pipeline.renderers[256].winograd is False and pipeline.cpu_fast_paths is False
