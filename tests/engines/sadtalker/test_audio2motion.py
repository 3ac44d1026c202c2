"""AudioToMotion: loading the official checkpoint layouts, and the behaviour of generate()."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sadtalker.engines.sadtalker.motion import AudioToMotion, blink_sequence, pose_windows, smooth_pose, tile_frames
from sadtalker.engines.sadtalker.random_weights import group_shapes, random_tensors, write_official_file
from sadtalker.errors import CheckpointError, InvalidInputError
from sadtalker.nets.audio2exp import Audio2Exp
from sadtalker.nets.audio2pose import Audio2Pose
from sadtalker.weights import SADTALKER_FILES, CheckpointLocations, forget_open_checkpoints, open_checkpoint

SR = 16000
NAME = SADTALKER_FILES[256]


def _audio(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(len(t))
            ).astype(np.float32)


def _source(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.2, 73).astype(np.float32)


def _random_nets(seed: int = 0) -> AudioToMotion:
    """Random-weight nets with non-trivial batch-norm statistics and style biases."""
    torch.manual_seed(seed)
    exp, pose = Audio2Exp(), Audio2Pose()
    for net in (exp, pose):
        state = {k: (torch.randn_like(v) * 0.05 if v.is_floating_point() else v) for k, v in net.state_dict().items()}
        for k in state:
            if k.endswith("running_var"):
                state[k] = state[k].abs() + 0.5
            elif k.startswith("netG.decoder.") and ("MLP" in k or "classbias" in k or "pose_linear" in k):
                state[k] = state[k] * 20  # latents and styles must visibly move the pose
        net.load_state_dict(state)
    return AudioToMotion(exp, pose, torch.device("cpu"))


@pytest.fixture(scope="module")
def motion() -> AudioToMotion:
    return _random_nets()


def _small_sadtalker_file(folder: Path, rename: str | None = None, drop: str | None = None) -> Path:
    """Only the audio2exp/audio2pose groups of the official safetensors layout (optionally damaged)."""
    from safetensors.torch import save_file

    tensors = {**random_tensors(group_shapes(NAME, "audio2exp"), 1), **random_tensors(group_shapes(NAME, "audio2pose"), 2)}
    if rename:
        tensors[rename + ".renamed"] = tensors.pop(rename)
    if drop:
        tensors.pop(drop)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / NAME))
    forget_open_checkpoints()
    return folder / NAME


# --- loading ---------------------------------------------------------------------------------------------------

def test_loads_official_safetensors_strictly(official_checkpoints):
    model = AudioToMotion.from_checkpoint(official_checkpoints, torch.device("cpu"))
    contents = open_checkpoint(official_checkpoints.sadtalker_file(256))
    for prefix, net in (("audio2exp.", model.audio2exp), ("audio2pose.", model.audio2pose)):
        state = net.state_dict()
        assert len(state) == sum(k.startswith(prefix) for k in contents)
        for key in list(state)[:3] + list(state)[-3:]:
            torch.testing.assert_close(state[key], contents[prefix + key], rtol=0, atol=0)
    out = model.generate(_audio(1.0), _source(), pose_style=3, still=False, idle=False, use_blink=True,
                         ref_eyeblink=None, ref_pose=None, seed=0)
    assert out.shape == (25, 70) and np.isfinite(out).all()


def test_loads_legacy_pth_files(tmp_path):
    for name in ("auido2exp_00300-model.pth", "auido2pose_00140-model.pth"):
        write_official_file(name, tmp_path, seed=5)
    forget_open_checkpoints()
    model = AudioToMotion.from_checkpoint(CheckpointLocations(checkpoint_dir=tmp_path), "cpu")
    legacy = torch.load(tmp_path / "auido2exp_00300-model.pth", weights_only=True)["model"]
    torch.testing.assert_close(model.audio2exp.mapping1.weight, legacy["mapping1.weight"], rtol=0, atol=0)


def test_renamed_key_names_file_and_keys(tmp_path):
    path = _small_sadtalker_file(tmp_path, rename="audio2pose.netG.decoder.pose_linear.weight")
    with pytest.raises(CheckpointError) as err:
        AudioToMotion.from_checkpoint(CheckpointLocations(checkpoint_dir=tmp_path), "cpu")
    msg = str(err.value)
    assert str(path.resolve()) in msg and "audio2pose" in msg
    assert "missing keys: netG.decoder.pose_linear.weight" in msg
    assert "unexpected keys: netG.decoder.pose_linear.weight.renamed" in msg
    assert "download_models.sh" in msg


def test_missing_key_and_truncated_file(tmp_path):
    _small_sadtalker_file(tmp_path / "a", drop="audio2exp.mapping1.bias")
    with pytest.raises(CheckpointError, match=r"missing keys: mapping1\.bias"):
        AudioToMotion.from_checkpoint(CheckpointLocations(checkpoint_dir=tmp_path / "a"), "cpu")
    path = _small_sadtalker_file(tmp_path / "b")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    forget_open_checkpoints()
    with pytest.raises(CheckpointError, match="truncated"):
        AudioToMotion.from_checkpoint(CheckpointLocations(checkpoint_dir=tmp_path / "b"), "cpu")


def test_no_checkpoint_at_all(tmp_path):
    with pytest.raises(CheckpointError, match=r"not found: .*SadTalker_V0\.0\.2_256\.safetensors.*download_models"):
        AudioToMotion.from_checkpoint(CheckpointLocations(checkpoint_dir=tmp_path), "cpu")


# --- generate ---------------------------------------------------------------------------------------------------

def test_shapes_and_determinism(motion):
    audio = _audio(2.3)
    out = motion.generate(audio, _source(), pose_style=0, seed=7)
    assert out.shape == (int(len(audio) / 640), 70) and out.dtype == np.float32
    np.testing.assert_array_equal(out, motion.generate(audio, _source(), pose_style=0, seed=7))
    other = motion.generate(audio, _source(), pose_style=0, seed=8)
    assert np.abs(other[:, 64:] - out[:, 64:]).max() > 1e-4   # different latents


def test_raw_pose_starts_at_source_and_uses_one_latent_per_window(motion):
    from sadtalker.engines.sadtalker.mel import audio_windows
    from sadtalker.engines.sadtalker.motion import predict_pose

    windows = torch.from_numpy(audio_windows(_audio(2.0)))             # 50 frames -> 49 = 32 + 17: two windows
    ref = torch.from_numpy(_source()[64:70])
    noise = torch.randn(2, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        raw = predict_pose(motion.audio2pose, windows, ref, 0, noise)
        changed = predict_pose(motion.audio2pose, windows, ref, 0, torch.stack([noise[0], -noise[1]]))
    assert raw.shape == (50, 6)
    torch.testing.assert_close(raw[0], ref, rtol=0, atol=0)
    torch.testing.assert_close(raw[:33], changed[:33], rtol=0, atol=0)   # second latent only touches the tail
    assert (raw[33:] - changed[33:]).abs().max() > 1e-4
    with pytest.raises(InvalidInputError, match="noise"):
        predict_pose(motion.audio2pose, windows, ref, 0, noise[:1])


def test_pose_style_range(motion):
    audio = _audio(1.5)
    a = motion.generate(audio, _source(), pose_style=45, seed=1)
    b = motion.generate(audio, _source(), pose_style=0, seed=1)
    assert a.shape == b.shape and np.abs(a[:, 64:] - b[:, 64:]).max() > 1e-5
    np.testing.assert_array_equal(a[:, :64], b[:, :64])   # style only changes the pose
    with pytest.raises(InvalidInputError, match="pose_style"):
        motion.generate(audio, _source(), pose_style=46, seed=1)


def test_still_mode_keeps_source_pose(motion):
    audio, src = _audio(1.5), _source(3)
    still = motion.generate(audio, src, pose_style=2, still=True, seed=0)
    moving = motion.generate(audio, src, pose_style=2, still=False, seed=0)
    np.testing.assert_array_equal(still[:, 64:], np.repeat(src[None, 64:70], len(still), axis=0))
    np.testing.assert_array_equal(still[:, :64], moving[:, :64])
    assert np.abs(moving[:, 64:] - src[64:70]).max() > 1e-4


def test_idle_mode_ignores_audio_content(motion):
    a = motion.generate(_audio(2.0, seed=1), _source(), idle=True, seed=0)
    b = motion.generate(np.zeros(2 * SR, np.float32), _source(), idle=True, seed=0)
    assert a.shape == (50, 70)
    np.testing.assert_array_equal(a, b)


def test_blink_switch_and_reference_eyeblink(motion):
    audio = _audio(3.0)
    with_blink = motion.generate(audio, _source(), use_blink=True, seed=0)
    no_blink = motion.generate(audio, _source(), use_blink=False, seed=0)
    assert np.abs(with_blink[:, :64] - no_blink[:, :64]).max() > 1e-5
    ref = np.random.default_rng(4).normal(0, 0.3, (7, 73)).astype(np.float32)
    r1 = motion.generate(audio, _source(), ref_eyeblink=ref, use_blink=True, seed=0)
    r2 = motion.generate(audio, _source(), ref_eyeblink=ref, use_blink=False, seed=5)
    np.testing.assert_array_equal(r1[:, :64], r2[:, :64])   # reference replaces the random blinks
    assert np.abs(r1[:, :64] - no_blink[:, :64]).max() > 1e-5


def test_reference_pose_adds_relative_motion(motion):
    audio = _audio(2.0)
    ref = np.random.default_rng(5).normal(0, 0.3, (9, 73)).astype(np.float32)
    base = motion.generate(audio, _source(), seed=0)
    with_ref = motion.generate(audio, _source(), ref_pose=ref, seed=0)
    tiled = ref[np.arange(len(base)) % 9, 64:70]
    np.testing.assert_allclose(with_ref[:, 64:] - base[:, 64:], tiled - tiled[:1], atol=1e-6)
    np.testing.assert_array_equal(with_ref[:, :64], base[:, :64])


def test_blink_sequence_rules():
    assert not blink_sequence(20, random.Random(0)).any()
    ratio = blink_sequence(300, random.Random(0))
    assert ratio.shape == (300, 1) and ratio.max() == 1.0
    np.testing.assert_array_equal(ratio, blink_sequence(300, random.Random(0)))
    onsets = np.flatnonzero((ratio[:, 0] == 0.5) & (np.r_[0, ratio[:-1, 0]] == 0))
    assert len(onsets) >= 3 and all(np.allclose(ratio[o:o + 5, 0], [0.5, 0.9, 1.0, 0.9, 0.5]) for o in onsets)


def test_helpers():
    assert [pose_windows(t, 32) for t in (1, 2, 33, 34, 97)] == [0, 1, 1, 2, 3]
    np.testing.assert_array_equal(tile_frames(np.arange(6).reshape(3, 2), 5)[:, 0], [0, 2, 4, 0, 2])
    short = np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32)
    np.testing.assert_array_equal(smooth_pose(short), short)  # too few frames to smooth
    assert smooth_pose(np.random.default_rng(0).normal(size=(40, 6))).shape == (40, 6)


def test_precision_reaches_both_audio_networks():
    """bf16 (the setting, on the CPU here) runs ExpNet and PoseVAE under autocast; fp32 stays float32; the
    coefficients come back float32 either way."""
    model = _random_nets()
    seen: dict[str, list[torch.dtype]] = {"audio2exp": [], "audio2pose": []}
    for name in seen:
        layer = next(m for m in getattr(model, name).modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
        layer.register_forward_hook(lambda m, i, o, name=name: seen[name].append(o.dtype))
    reference = model.generate(_audio(0.6), _source(), pose_style=0, seed=7)
    assert all(dtypes == [torch.float32] * len(dtypes) and dtypes for dtypes in seen.values())
    for dtypes in seen.values():
        dtypes.clear()
    model.precision = "bf16"
    reduced = model.generate(_audio(0.6), _source(), pose_style=0, seed=7)
    assert all(torch.bfloat16 in dtypes for dtypes in seen.values()), seen
    assert reduced.dtype == np.float32 and reduced.shape == reference.shape and np.isfinite(reduced).all()
