"""Winograd F(4x4, 3x3) convolutions of the renderer: equal to torch's convolution up to float rounding, only for
fp32 CPU inputs, the weights transformed once per layer, and the official-size renderer's frames the same
accelerated or plain."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sadtalker.accel import AccelConfig, accelerate, is_accelerated, winograd
from sadtalker.accel.weight_cache import Derived
from sadtalker.errors import InvalidInputError
from sadtalker.nets.render_blocks import SpectralNormConv2d


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
    fast = accelerate(copy.deepcopy(conv))
    assert isinstance(fast, winograd.WinogradConv3d)
    with torch.inference_mode():
        # small planes keep torch's kernel (little gain, large transformed weights)
        assert winograd.runs_on(x) == (min(h, w) >= 16)
        expected = conv(x)
        assert (fast(x) - expected).abs().max().item() <= 2e-5 * expected.abs().max().item()


def test_only_wide_3x3_convolutions_are_swapped():
    assert winograd.fits(torch.nn.Conv2d(64, 64, 3, padding=1))
    assert winograd.fits(torch.nn.Conv3d(64, 128, 3, padding=1))
    assert not winograd.fits(torch.nn.Conv2d(3, 64, 3, padding=1))              # narrow: the image layers
    assert not winograd.fits(torch.nn.Conv2d(64, 64, 3, stride=2, padding=1))
    assert not winograd.fits(torch.nn.Conv2d(64, 64, 3, padding=1, padding_mode="reflect"))
    assert not winograd.fits(torch.nn.Conv3d(64, 64, 7, padding=3))
    narrow = torch.nn.Conv2d(3, 64, 3, padding=1)
    assert type(accelerate(narrow)) is torch.nn.Conv2d


@pytest.mark.parametrize("x", [torch.randn(1, 64, 8, 8).double(), torch.empty(1, 64, 8, 8, device="meta")])
def test_other_dtypes_and_devices_take_torchs_kernel(x, monkeypatch):
    """The fast paths stay off for non-CPU or non-fp32 tensors: a meta tensor (as a CUDA one would) goes through
    torch's convolution and never reaches the Winograd code."""
    conv = accelerate(torch.nn.Conv2d(64, 64, 3, padding=1).to(x.device, x.dtype))
    monkeypatch.setattr(winograd, "cached_conv", lambda *a, **k: pytest.fail("Winograd path taken"))
    assert not winograd.runs_on(x)
    with torch.no_grad():
        out = conv(x)
    assert out.shape == x.shape and out.device == x.device and out.dtype == x.dtype


def test_autocast_takes_torchs_kernel(monkeypatch):
    conv = accelerate(torch.nn.Conv2d(64, 64, 3, padding=1))
    monkeypatch.setattr(winograd, "cached_conv", lambda *a, **k: pytest.fail("Winograd path taken"))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(torch.randn(1, 64, 8, 8)).dtype == torch.bfloat16


def test_weights_are_transformed_once_and_follow_updates(monkeypatch):
    conv = accelerate(SpectralNormConv2d(64, 64, kernel_size=3, padding=1))
    x = torch.randn(1, 64, 12, 12)
    calls = []
    original = winograd.transform_weight
    monkeypatch.setattr(winograd, "transform_weight", lambda w, m=4: calls.append(1) or original(w, m))
    with torch.no_grad():
        first = conv(x)
        conv(x)
        assert len(calls) == 1
        conv.weight_orig[:8].mul_(3.0)  # an in-place update (e.g. loading a checkpoint) invalidates the cache
        updated = conv(x)
    assert len(calls) == 2
    with torch.no_grad():
        expected = F.conv2d(x, conv.weight(), conv.bias, padding=1)
    assert (updated - expected).abs().max() < 1e-4 and not torch.allclose(first, updated)


def test_official_renderer_frames_equal_accelerated_and_plain(official_checkpoints):
    from sadtalker.engines.sadtalker.render import FaceRenderer, renderer_coefficients

    renderer = FaceRenderer.from_checkpoint(official_checkpoints, size=256, device="cpu")
    plain_renderer = FaceRenderer.from_checkpoint(official_checkpoints, size=256, device="cpu", accel=None)
    assert renderer.accel is not None and renderer.accel.cpu_kernels  # the default
    assert is_accelerated(renderer.generator.decoder) and not any(map(is_accelerated, plain_renderer.generator.modules()))
    rng = np.random.default_rng(3)
    crop = (rng.random((256, 256, 3)) * 255).astype(np.uint8)
    coeffs = (rng.normal(size=(2, 70)) * 0.1).astype(np.float32)
    source = (rng.normal(size=73) * 0.1).astype(np.float32)
    target, source = renderer_coefficients(coeffs, source, "crop", 1.0, False)
    state = renderer.prepare_source(torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255, source, "crop")
    fast = next(renderer.render_batches(state, target, "crop", batch_size=2)).frames
    state = plain_renderer.prepare_source(torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255, source, "crop")
    plain = next(plain_renderer.render_batches(state, target, "crop", batch_size=2)).frames
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
    from sadtalker.service.settings import ServiceSettings

    for value, wanted in (("0", False), ("1", True)):
        monkeypatch.setenv("SADTALKER_CPU_FAST_PATHS", value)
        settings = ServiceSettings.from_env()
        assert settings.cpu_fast_paths is wanted and settings.accel.cpu_kernels is wanted
    monkeypatch.setenv("SADTALKER_CPU_FAST_PATHS", "maybe")  # a typo is refused, not read as on
    with pytest.raises(InvalidInputError, match="SADTALKER_CPU_FAST_PATHS"):
        ServiceSettings.from_env()
    pipeline = SadTalkerPipeline.from_checkpoint(official_checkpoints, device="cpu",
                                                 accel=AccelConfig(cpu_kernels=False))
    generator = pipeline.renderers[256].generator
    assert not any(isinstance(m, (winograd.WinogradConv2d, winograd.WinogradConv3d)) for m in generator.modules())
    assert is_accelerated(generator.decoder)  # the memory savings stay
