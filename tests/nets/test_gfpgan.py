"""GFPGANv1Clean, its StyleGAN2 SFT decoder and ParseNet: official key layout, config values, forward semantics."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from sadtalker.engines.sadtalker.random_weights import group_shapes
from sadtalker.nets.gfpgan import GFPGANConfig, GFPGANv1Clean
from sadtalker.nets.parsenet import ParseNet, ParseNetConfig
from sadtalker.nets.stylegan2 import ModulatedConv2d

TINY = GFPGANConfig(out_size=32, num_style_feat=16, num_mlp=2, narrow=1 / 16)


def _layout(name: str, group: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(shape) for k, (shape, _) in group_shapes(name, group).items()}


def test_gfpgan_state_dict_matches_official_layout():
    ours = {k: tuple(v.shape) for k, v in GFPGANv1Clean().state_dict().items()}
    assert ours == _layout("GFPGANv1.4.pth", "params_ema")


def test_parsenet_state_dict_matches_official_layout():
    ours = {k: tuple(v.shape) for k, v in ParseNet().state_dict().items()}
    assert ours == _layout("parsing_parsenet.pth", "")


def test_configs_equal_the_originals_arguments():
    # GFPGANer(arch='clean', channel_multiplier=2) -> GFPGANv1Clean(out_size=512, num_style_feat=512, channel_multiplier=2,
    # decoder_load_path=None, fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    assert dataclasses.asdict(GFPGANConfig()) == dict(
        out_size=512, num_style_feat=512, channel_multiplier=2, num_mlp=8, input_is_latent=True, different_w=True,
        narrow=1.0, sft_half=True,
    )
    # facexlib init_parsing_model('parsenet') -> ParseNet(in_size=512, out_size=512, parsing_ch=19), defaults otherwise
    assert dataclasses.asdict(ParseNetConfig()) == dict(
        in_size=512, out_size=512, min_feat_size=32, base_ch=64, parsing_ch=19, res_depth=10, min_ch=32, max_ch=256,
    )


def test_modulated_conv_equals_per_sample_convolution():
    torch.manual_seed(0)
    conv = ModulatedConv2d(6, 5, 3, num_style_feat=7, upsample=True)
    x, style = torch.randn(3, 6, 4, 4), torch.randn(3, 7)
    out = conv(x, style)
    assert out.shape == (3, 5, 8, 8)
    for b in range(3):  # the textbook definition, one sample at a time
        w = conv.weight[0] * conv.modulation(style[b]).view(1, 6, 1, 1)
        w = w / torch.sqrt(w.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        up = F.interpolate(x[b:b + 1], scale_factor=2, mode="bilinear", align_corners=False)
        torch.testing.assert_close(out[b:b + 1], F.conv2d(up, w, padding=1), atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny_gfpgan() -> GFPGANv1Clean:
    torch.manual_seed(1)
    net = GFPGANv1Clean(TINY).eval()
    with torch.no_grad():
        for i in range(net.stylegan_decoder.num_layers):  # noise strengths are zero at init; make noise matter
            conv = net.stylegan_decoder.style_conv1 if i == 0 else net.stylegan_decoder.style_convs[i - 1]
            conv.weight.fill_(0.5)
    return net


def test_tiny_forward_shapes_and_noise_modes(tiny_gfpgan):
    net, x = tiny_gfpgan, torch.rand(2, 3, 32, 32) * 2 - 1
    decoder = net.stylegan_decoder
    assert decoder.num_layers == 7 and decoder.num_latent == 8
    assert [h for h, _ in decoder.noise_shapes()] == [4, 8, 8, 16, 16, 32, 32]
    with torch.inference_mode():
        fixed = net(x)
        assert fixed.shape == (2, 3, 32, 32) and torch.isfinite(fixed).all()
        torch.testing.assert_close(net(x), fixed, rtol=0, atol=0)  # stored noise: deterministic
        torch.testing.assert_close(net(x, noise=decoder.stored_noise()), fixed, rtol=0, atol=0)
        a = net(x, randomize_noise=True, generator=torch.Generator().manual_seed(3))
        b = net(x, randomize_noise=True, generator=torch.Generator().manual_seed(3))
        c = net(x, randomize_noise=True, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - fixed).abs().max() > 1e-3 and (a - c).abs().max() > 1e-3
    # batch independence: each sample restored as if alone
    with torch.inference_mode():
        torch.testing.assert_close(net(x[1:]), fixed[1:], atol=1e-5, rtol=1e-5)


def test_fp16_autocast_stays_close_to_float32(tiny_gfpgan):
    """The enhancer's CUDA path runs under fp16 autocast; the same numerics checked here on CPU's fp16 autocast."""
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        ref = tiny_gfpgan(x)
        with torch.autocast("cpu", dtype=torch.float16):
            half = tiny_gfpgan(x)
    assert torch.isfinite(half).all()
    assert (half.float() - ref).abs().max() < 2e-2


def test_sft_half_modulates_only_the_second_half(tiny_gfpgan):
    """Conditions act as x * scale + shift on the second half of the channels after each resolution's first conv."""
    net = tiny_gfpgan
    dec_ch = [c.modulated_conv.out_channels for c in net.stylegan_decoder.style_convs[::2]]
    sft_ch = [seq[2].out_channels for seq in net.condition_scale]
    assert sft_ch == [c // 2 for c in dec_ch]
    decoder, torch_gen = net.stylegan_decoder, torch.Generator().manual_seed(5)
    latent = torch.randn(1, decoder.num_latent, TINY.num_style_feat, generator=torch_gen)
    noise = decoder.stored_noise()
    identity = [t for c in sft_ch for t in (torch.ones(1, c, 1, 1), torch.zeros(1, c, 1, 1))]
    with torch.inference_mode():
        plain = decoder(latent, [], noise)
        torch.testing.assert_close(decoder(latent, identity, noise), plain, rtol=0, atol=0)
        shifted = [t + 0.5 if i % 2 else t for i, t in enumerate(identity)]
        assert (decoder(latent, shifted, noise) - plain).abs().max() > 1e-3


def test_tiny_parsenet_forward():
    cfg = ParseNetConfig(in_size=64, out_size=64, min_feat_size=16, base_ch=8, res_depth=2, min_ch=8, max_ch=16)
    net = ParseNet(cfg).eval()
    with torch.inference_mode():
        logits, image = net(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert logits.shape == (2, 19, 64, 64) and image.shape == (2, 3, 64, 64)
    assert torch.isfinite(logits).all()
    # body blocks keep width (identity shortcut, no parameters); resampling blocks have a conv shortcut
    assert net.body[0].shortcut_func is None and net.encoder[1].shortcut_func is not None
