"""Parity of the mel windows, ExpNet and PoseVAE with the original Audio2Coeff on the golden data of
shared/tools/parity (random official-layout weights, identical inputs and latents; PARITY_DIR)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sadtalker.engines.sadtalker import mel
from sadtalker.engines.sadtalker.motion import AudioToMotion, predict_pose

pytestmark = pytest.mark.parity

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def golden(parity_dir):
    return np.load(parity_dir / "golden" / "audio.npz")


@pytest.fixture(scope="module")
def motion(parity_locations) -> AudioToMotion:
    return AudioToMotion.from_checkpoint(parity_locations, "cpu")


def _report(name: str, diff: float) -> None:
    print(f"max abs diff {name}: {diff:.3g}")


def test_mel_and_windows(golden):
    cut, frames = mel.fit_to_frames(golden["in_wav"])
    assert frames == int(golden["out_num_frames"])
    np.testing.assert_array_equal(cut, golden["mid_wav_cut"])
    spec = mel.melspectrogram(cut)
    diff = float(np.abs(spec - golden["out_mel"]).max())
    _report("mel", diff)
    assert spec.shape == golden["out_mel"].shape and diff < 1e-9
    windows = mel.audio_windows(golden["in_wav"])
    wdiff = float(np.abs(windows - golden["out_mel_windows"]).max())
    _report("windows", wdiff)
    assert windows.shape == golden["out_mel_windows"].shape and wdiff < TOLERANCE


def test_expression_and_pose(golden, motion):
    source = np.concatenate([golden["in_ref"][0], np.zeros(3, np.float32)])
    out = motion.generate(golden["in_wav"], source, pose_style=int(golden["in_pose_style"]),
                          noise=golden["noise_pose_z"], blink=golden["in_blink_ratio"])
    assert out.shape == golden["out_coeffs"].shape
    exp_diff = float(np.abs(out[:, :64] - golden["out_exp"]).max())
    pose_diff = float(np.abs(out[:, 64:] - golden["out_coeffs"][:, 64:]).max())
    _report("expression", exp_diff)
    _report("pose (smoothed)", pose_diff)
    assert exp_diff < TOLERANCE and pose_diff < TOLERANCE
    with torch.inference_mode():
        raw = predict_pose(motion.audio2pose, torch.from_numpy(golden["out_mel_windows"]),
                           torch.from_numpy(golden["in_ref"][0, 64:70]), int(golden["in_pose_style"]),
                           torch.from_numpy(golden["noise_pose_z"]))
    raw_diff = float(np.abs(raw.numpy() - golden["out_pose_raw"]).max())
    _report("pose (raw)", raw_diff)
    assert raw_diff < TOLERANCE


def test_pose_short_clip(parity_dir, motion):
    short = np.load(parity_dir / "golden" / "audio2pose_short.npz")
    with torch.inference_mode():
        raw = predict_pose(motion.audio2pose, torch.from_numpy(short["in_mel_windows"]),
                           torch.from_numpy(short["in_ref"][0, 64:70]), int(short["in_pose_style"]),
                           torch.from_numpy(short["noise_pose_z"]))
    diff = float(np.abs(raw.numpy() - short["out_pose_raw"]).max())
    _report("pose short (raw, 20 frames)", diff)
    assert raw.shape == (20, 6) and diff < TOLERANCE
