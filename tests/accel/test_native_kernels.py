"""The native (C) Winograd tile transforms: same convolutions as the pure PyTorch transforms and torch's own kernel,
built once per source, and a clean fallback when they cannot be built or are switched off."""
from __future__ import annotations

import logging
import shutil

import pytest
import torch
import torch.nn.functional as F

from sadtalker.accel import AccelConfig, accelerate, winograd
from sadtalker.accel import native as native_kernels

needs_compiler = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                    reason="no C compiler on this machine")


@pytest.fixture
def lib():
    built = native_kernels.library()
    assert built is not None, "the native kernels should build wherever a C compiler is installed"
    return built


def _both_paths(lib, run):
    return run(lib), run(None)


@needs_compiler
@pytest.mark.parametrize("shape", [(1, 64, 65, 7, 9), (2, 64, 64, 13, 16), (1, 70, 33, 33, 31), (2, 64, 80, 8, 40),
                                   (1, 64, 64, 1, 1), (3, 96, 64, 64, 64)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_2d_native_equals_pure_pytorch_and_conv2d(lib, monkeypatch, shape, with_bias):
    b, c, o, h, w = shape
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(b, c, h, w, generator=gen)
    weight = torch.randn(o, c, 3, 3, generator=gen) / (3 * c**0.5)
    bias = torch.randn(o, generator=gen) if with_bias else None
    u = winograd.transform_weight(weight)
    ref = F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(), padding=1).float()
    native, plain = _both_paths(lib, lambda lib: winograd.winograd_conv2d(x, u, bias, chunk_tiles=7, lib=lib))
    scale = ref.abs().max().item()
    assert native.shape == ref.shape and native.is_contiguous()
    assert (native - ref).abs().max().item() <= 2e-5 * scale
    assert (native - plain).abs().max().item() <= 2e-5 * scale
    assert not torch.equal(native, plain) or h * w <= 1   # really two implementations (rounding differs)


@needs_compiler
@pytest.mark.parametrize("shape", [(2, 64, 80, 16, 16, 16), (1, 96, 64, 5, 13, 9), (1, 64, 64, 1, 4, 4)])
def test_3d_native_equals_conv3d_on_strided_input(lib, monkeypatch, shape):
    b, c, o, d, h, w = shape
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(b, c, d, w, h, generator=gen).transpose(3, 4)   # not contiguous: the kernel reads strides
    weight = torch.randn(o, c, 3, 3, 3, generator=gen) / (5 * c**0.5)
    bias = torch.randn(o, generator=gen)
    ref = F.conv3d(x.double(), weight.double(), bias.double(), padding=1).float()
    native, plain = _both_paths(lib, lambda lib: winograd.winograd_conv3d(x, winograd.transform_weight(weight),
                                                                         bias, chunk_tiles=8, lib=lib))
    scale = ref.abs().max().item()
    assert (native - ref).abs().max().item() <= 2e-5 * scale
    assert (native - plain).abs().max().item() <= 2e-5 * scale


@needs_compiler
def test_native_kernels_use_torchs_threads(lib):
    """Built with -fopenmp, the library must share torch's OpenMP runtime (one thread pool, not two spinning)."""
    with open("/proc/self/maps") as maps:
        gomp = {line.split()[-1] for line in maps if "libgomp" in line}
    assert len(gomp) == 1, gomp


@needs_compiler
def test_built_once_per_source(tmp_path):
    first = native_kernels.build(folder=tmp_path)
    stamp = first.stat().st_mtime_ns
    assert native_kernels.build(folder=tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]   # no leftovers from the build


def test_missing_compiler_falls_back_to_pytorch(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    native_kernels.library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=native_kernels.__name__):
            assert native_kernels.library(tmp_path / "cache") is None
        assert "native kernels unavailable" in caplog.text
        x = torch.randn(1, 64, 9, 9)
        weight = torch.randn(64, 64, 3, 3) / 24
        got = winograd.winograd_conv2d(x, winograd.transform_weight(weight))
        ref = F.conv2d(x, weight, padding=1)
        assert (got - ref).abs().max().item() <= 2e-5 * ref.abs().max().item()
    finally:
        native_kernels.library.cache_clear()


def test_switched_off(monkeypatch):
    """AccelConfig(native_kernels=False) (the service's SADTALKER_NATIVE_KERNELS=0): the pure PyTorch transforms."""
    assert native_kernels.NativeKernels(enabled=False).library() is None
    conv = accelerate(torch.nn.Conv2d(64, 64, 3, padding=1), AccelConfig(native_kernels=False))
    monkeypatch.setattr(native_kernels, "input_tiles", lambda *a, **k: pytest.fail("native kernel called"))
    x = torch.randn(1, 64, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1), rtol=1e-4, atol=1e-4)
