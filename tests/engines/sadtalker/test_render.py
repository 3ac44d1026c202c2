"""Face renderer stage: network layouts against the official files, coefficient plumbing, streaming render."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from renderer_factory import tiny_renderer

from sadtalker.engines.sadtalker.random_weights import LAYOUT_PATH as LAYOUT


def _layout(file: str, group: str, prefix: str = "") -> dict[str, list[int]]:
    files = json.loads(LAYOUT.read_text())["files"]
    return {k[len(prefix):]: v[0] for k, v in files[file]["groups"][group]["tensors"].items()}


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def test_default_configs_build_the_official_layouts():
    """The frozen config defaults are facerender.yaml's values: every key and shape of the official files."""
    from sadtalker.nets.generator import OcclusionAwareSPADEGenerator
    from sadtalker.nets.keypoint_detector import KPDetector
    from sadtalker.nets.mapping import MappingConfig, MappingNet

    st = "SadTalker_V0.0.2_256.safetensors"
    assert _shapes(KPDetector()) == _layout(st, "kp_extractor", "kp_extractor.")
    assert _shapes(OcclusionAwareSPADEGenerator()) == _layout(st, "generator", "generator.")
    assert _shapes(MappingNet()) == _layout("mapping_00229-model.pth.tar", "mapping")
    assert _shapes(MappingNet(MappingConfig(coeff_nc=73))) == _layout("mapping_00109-model.pth.tar", "mapping")


def test_rotation_is_pitch_yaw_roll_with_the_original_pi():
    from sadtalker.engines.sadtalker.keypoints import bins_to_degrees, rotation_matrix

    logits = torch.full((1, 66), -1e4)
    logits[0, 40] = 0.0
    assert bins_to_degrees(logits).item() == pytest.approx(40 * 3 - 99)
    yaw = torch.tensor([30.0])
    r = rotation_matrix(yaw, torch.zeros(1), torch.zeros(1))[0]
    a = 30 / 180 * 3.14
    assert torch.allclose(r, torch.tensor([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]],
                                          dtype=torch.float32), atol=1e-6)
    r = rotation_matrix(torch.zeros(1), torch.tensor([10.0]), torch.tensor([20.0]))[0]
    p, q = 10 / 180 * 3.14, 20 / 180 * 3.14
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(q), -np.sin(q), 0], [np.sin(q), np.cos(q), 0], [0, 0, 1]])
    assert np.allclose(r.numpy(), rx @ rz, atol=1e-6)


def test_translation_keeps_only_y_and_does_not_mutate_the_input():
    from sadtalker.engines.sadtalker.keypoints import transform_keypoints
    from sadtalker.nets.mapping import HeadMotion

    zeros = torch.zeros(1, 66)
    t = torch.tensor([[0.3, 0.2, 0.1]])
    motion = HeadMotion(zeros, zeros, zeros, t, torch.zeros(1, 6))
    kp = transform_keypoints(torch.zeros(1, 2, 3), motion, yaw=torch.zeros(1), pitch=torch.zeros(1), roll=torch.zeros(1))
    assert torch.equal(kp, torch.tensor([[[0.0, 0.2, 0.0]] * 2]))
    assert torch.equal(t, torch.tensor([[0.3, 0.2, 0.1]]))


def test_renderer_coefficients_modes_scale_and_still():
    from sadtalker.engines.sadtalker.render import coefficient_windows, renderer_coefficients

    rng = np.random.default_rng(0)
    coeffs = rng.normal(size=(5, 70)).astype(np.float32)
    source = rng.normal(size=73).astype(np.float32)
    target, src = renderer_coefficients(coeffs, source, "crop", expression_scale=2.0)
    assert target.shape == (5, 70) and src.shape == (70,)
    assert np.allclose(target[:, :64], coeffs[:, :64] * 2) and np.array_equal(target[:, 64:], coeffs[:, 64:])
    target, src = renderer_coefficients(coeffs, source, "extfull", still_mode=True)
    assert target.shape == (5, 73) and src.shape == (73,)
    assert np.array_equal(target[:, 64:], np.repeat(source[None, 64:], 5, 0))
    assert np.array_equal(target[:, :64], coeffs[:, :64])
    windows = coefficient_windows(target, 0, 5)
    assert windows.shape == (5, 73, 27)
    assert np.array_equal(windows[0, :, 0], target[0]) and np.array_equal(windows[0, :, 14], target[1])
    assert np.array_equal(windows[4, :, 26], target[4]) and np.array_equal(windows[2, :, 11], target[0])


def test_camera_degrees_hold_or_sweep():
    from sadtalker.engines.sadtalker.render import camera_degrees

    assert np.array_equal(camera_degrees([15], 4), np.full(4, 15.0, np.float32))
    sweep = camera_degrees([0, 20, 0], 9)
    assert sweep.tolist() == [0, 5, 10, 15, 20, 15, 10, 5, 5]  # 40 degrees of travel over 8 steps, then held


@pytest.fixture(scope="module")
def tiny():
    return tiny_renderer()


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(1)
    crop = (rng.uniform(size=(80, 80, 3)) * 255).astype(np.uint8)
    coeffs = rng.normal(scale=0.5, size=(5, 70)).astype(np.float32)
    source = rng.normal(scale=0.5, size=73).astype(np.float32)
    return crop, coeffs, source


def test_render_streams_uint8_frames_independent_of_batch_size(tiny, inputs):
    crop, coeffs, source = inputs
    seen = []
    frames = list(tiny.render(crop, coeffs, source, "crop", batch_size=2, progress=lambda d, n: seen.append((d, n))))
    assert len(frames) == 5 and all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in frames)
    assert seen == [(2, 5), (4, 5), (5, 5)]
    singles = list(tiny.render(crop, coeffs, source, "crop", batch_size=1))
    assert max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(frames, singles)) <= 1
    assert len({f.tobytes() for f in frames}) > 1  # the face moves


def test_still_mode_fixed_angles_and_expression_scale_change_the_keypoints(tiny, inputs):
    from sadtalker.engines.sadtalker.render import HeadAngles, renderer_coefficients, source_tensor

    crop, coeffs, source = inputs

    def keypoints(mode="crop", still=False, scale=1.0, angles=HeadAngles()):
        target, src = renderer_coefficients(coeffs, source, mode, scale, still)
        state = tiny.prepare_source(source_tensor(crop, 64), src, mode)
        return torch.cat([b.kp_driving for b in tiny.render_batches(state, target, mode, 5, angles)])

    base = keypoints()
    assert not torch.allclose(base, keypoints(scale=0.0))
    fixed = keypoints(angles=HeadAngles.from_lists(5, yaw=[20]))
    assert not torch.allclose(base, fixed)
    assert torch.allclose(keypoints(angles=HeadAngles.from_lists(5, yaw=[20])), fixed)
    full = keypoints("full")
    assert full.shape == base.shape and not torch.allclose(full, base)


def test_official_checkpoint_loads_and_renders_one_frame(official_checkpoints):
    """The random-weight 256 file in the official layout loads strictly and gives a frame (one forward, ~5 s)."""
    from sadtalker.engines.sadtalker.render import FaceRenderer

    renderer = FaceRenderer.from_checkpoint(official_checkpoints, size=256, device="cpu")
    rng = np.random.default_rng(2)
    crop = (rng.uniform(size=(256, 256, 3)) * 255).astype(np.uint8)
    frames = list(renderer.render(crop, rng.normal(scale=0.1, size=(1, 70)), rng.normal(scale=0.1, size=73),
                                  "full", batch_size=2))
    assert len(frames) == 1 and frames[0].shape == (256, 256, 3)
    assert "full" in renderer._mappings and "crop" not in renderer._mappings  # mapping files load lazily
