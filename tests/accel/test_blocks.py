"""The accelerated renderer blocks compute what the plain blocks in `nets/` compute, at the real channel widths of
the 256 renderer (smaller planes to keep the tests quick): low-resolution phase convolutions instead of
upsample-then-convolve, SPADE normalized before upsampling, folded shortcuts, shared hidden maps. Also the
mixed-precision switch of the renderer (exercised on CPU; meant for CUDA)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from renderer_factory import tiny_renderer

from sadtalker.accel import AccelConfig, accelerate, is_accelerated, upsample
from sadtalker.accel.blocks import FastSPADEDecoder, FastSPADEResnetBlock, FastUpBlock3d, mul_upsampled_
from sadtalker.nets.render_blocks import SPADEResnetBlock, UpBlock3d
from sadtalker.nets.spade_decoder import SPADEDecoder

CPU_KERNELS = [AccelConfig(cpu_kernels=False), AccelConfig(cpu_kernels=True)]


def _spectral_vectors(module: torch.nn.Module) -> None:
    """Spectral-norm u and v as a checkpoint would have them (not the constructor's ones)."""
    with torch.no_grad():
        for name, buffer in module.named_buffers():
            if name.endswith(("weight_u", "weight_v")):
                buffer.normal_()


def _close(got: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    scale = expected.abs().max().item()
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= rel * scale, (got - expected).abs().max().item() / scale


@pytest.mark.parametrize("scale,shape", [((2, 2), (2, 6, 5, 7)), ((4, 4), (1, 3, 4, 3)), ((1, 2, 2), (2, 4, 3, 5, 4)),
                                         ((3, 1), (1, 2, 4, 5))])
def test_upsampled_conv_equals_conv_of_nearest_upsampling(scale, shape) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    weight = torch.randn(5, shape[1], *([3] * len(scale)), generator=g, dtype=torch.float64)
    bias = torch.randn(5, generator=g, dtype=torch.float64)
    conv = F.conv2d if len(scale) == 2 else F.conv3d
    size = tuple(n * s for n, s in zip(shape[2:], scale))
    expected = conv(F.interpolate(x, size=size, mode="nearest"), weight, bias, padding=1)
    got = upsample.upsampled_conv(x, weight, bias, scale)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("config", CPU_KERNELS, ids=["structural", "cpu-kernels"])
@pytest.mark.parametrize("fin,fout", [(1024, 512), (64, 32)])  # the dense-motion hourglass's first and last up blocks
def test_up_block_equals_the_plain_one(config, fin, fout) -> None:
    torch.manual_seed(fin)
    plain = UpBlock3d(fin, fout).eval()
    with torch.no_grad():
        plain.norm.running_mean.normal_(0, 0.1)
    fast = accelerate(copy.deepcopy(plain), config)
    assert isinstance(fast, FastUpBlock3d)
    v = torch.randn(1, fin, 4, 6, 5)
    with torch.inference_mode():
        _close(fast(v), plain(v))


def test_up_block_keeps_its_folded_kernels_on_the_cpu_path(monkeypatch) -> None:
    torch.manual_seed(1)
    up = accelerate(UpBlock3d(64, 32).eval())
    v = torch.randn(2, 64, 3, 5, 4)
    folds = []
    original = upsample.folded_kernels
    monkeypatch.setattr("sadtalker.accel.blocks.folded_kernels", lambda w, s: folds.append(1) or original(w, s))
    with torch.no_grad():
        first, second = up(v), up(v)
        assert len(folds) == 1  # kept for both calls
        up.conv.weight.mul_(2.0)  # an in-place update: folded again
        updated = up(v)
    assert len(folds) == 2
    assert torch.equal(first, second) and not torch.allclose(updated, first)
    structural = accelerate(UpBlock3d(64, 32).eval(), AccelConfig(cpu_kernels=False))
    with torch.no_grad():
        structural(v)
    assert "_derived_folded" not in structural.__dict__  # folded per call without the CPU kernels


@pytest.mark.parametrize("config", CPU_KERNELS, ids=["structural", "cpu-kernels"])
@pytest.mark.parametrize("fin,fout,upsample_by", [(512, 512, 1), (512, 256, 2), (256, 64, 2)],
                         ids=["G_middle", "up_0", "up_1"])
@pytest.mark.parametrize("spectral_norm", [True, False], ids=["sadtalker", "ditto"])
def test_spade_resnet_block_equals_the_plain_one(config, fin, fout, upsample_by, spectral_norm) -> None:
    """The decoder's three kinds of blocks at their real widths (label 256, hidden 128): the fast block fed the
    low-resolution input with `upsample` equals the plain block fed the upsampled input. With a learned shortcut
    the CPU path folds conv_s into norm_s's beta: a spectral-norm conv (SadTalker) or a plain one (Ditto's folded
    weights)."""
    torch.manual_seed(fin + fout)
    plain = SPADEResnetBlock(fin, fout, 256, 128, spectral_norm=spectral_norm).eval()
    _spectral_vectors(plain)
    fast = accelerate(copy.deepcopy(plain), config)
    assert isinstance(fast, FastSPADEResnetBlock) and fast.learned_shortcut == (fin != fout)
    x, seg = torch.randn(2, fin, 8, 8) * 3 + 1, torch.randn(2, 256, 8, 8)
    with torch.no_grad():
        expected = plain(F.interpolate(x, scale_factor=upsample_by, mode="nearest"), seg)
    with torch.inference_mode():
        got = fast(x, seg, upsample=upsample_by)
        again = fast(x, seg, upsample=upsample_by)  # from the kept transformed weights
    _close(got, expected)
    assert torch.equal(got, again)


def test_multiplying_by_an_upsampled_map_in_place_equals_materializing_it() -> None:
    g = torch.Generator().manual_seed(3)
    both = torch.randn(2, 10, 8, 12, generator=g)
    low = torch.randn(2, 4, 4, 6, generator=g)
    expected = both[:, :4] * F.interpolate(low, scale_factor=2, mode="nearest")
    got = mul_upsampled_(both[:, :4], low)            # a channel slice: not contiguous
    assert got.data_ptr() == both.data_ptr()
    torch.testing.assert_close(both[:, :4], expected, rtol=0, atol=0)


@pytest.mark.parametrize("config", CPU_KERNELS, ids=["structural", "cpu-kernels"])
@pytest.mark.parametrize("engine", ["sadtalker", "ditto"])
def test_decoder_equals_the_plain_one_at_real_widths(config, engine) -> None:
    """The whole SPADE decoder of the 256 renderer (256 -> 512 -> ... -> 64 -> 3) and Ditto's (plain convolutions,
    pixel-shuffle head), on an 8x8 feature map; on the CPU path its twelve middle SPADE layers share one hidden-map
    convolution, equal to each layer's own."""
    from sadtalker.nets.ditto.spade_decoder import build_decoder

    torch.manual_seed(5)
    plain = (SPADEDecoder() if engine == "sadtalker" else build_decoder()).eval()
    _spectral_vectors(plain)
    fast = accelerate(copy.deepcopy(plain), config)
    assert isinstance(fast, FastSPADEDecoder)
    feature = torch.randn(1, 256, 8, 8)
    norms = [norm for i in range(6) for norm in (getattr(fast, f"G_middle_{i}").norm_0,
                                                getattr(fast, f"G_middle_{i}").norm_1)]
    with torch.no_grad():
        expected = plain(feature)
    with torch.inference_mode():
        got = fast(feature)
        shared = fast.shared_hiddens(norms, feature)
        own = [norm.hidden(feature, (8, 8)) for norm in norms]
    _close(got, expected)
    if config.cpu_kernels:
        assert shared is not None and len(shared) == 12
        for a, b in zip(shared, own):
            _close(a, b)
    else:
        assert shared is None


@pytest.mark.parametrize("network", ["sadtalker generator", "ditto warp", "ditto decoder"])
def test_accelerate_shares_the_parameters_and_keeps_the_keys(network) -> None:
    """No copies: the swapped layers hold the very tensors the plain network was loaded with."""
    from sadtalker.nets.ditto.spade_decoder import build_decoder
    from sadtalker.nets.ditto.warping_network import WarpingNetwork
    from sadtalker.nets.generator import OcclusionAwareSPADEGenerator

    net = {"sadtalker generator": OcclusionAwareSPADEGenerator, "ditto warp": WarpingNetwork,
           "ditto decoder": build_decoder}[network]()
    before = {k: v.data_ptr() for k, v in net.state_dict().items()}
    fast = accelerate(net)
    assert {k: v.data_ptr() for k, v in fast.state_dict().items()} == before
    assert sum(is_accelerated(m) for m in fast.modules()) >= 5


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
