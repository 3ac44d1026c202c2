"""The offline audio-to-motion loop: clip fusing, smoothing, cutting, seeds, and the motion layout."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ditto_motion_factory import source_inputs, tiny_lmdm, write_tiny_lmdm

from sadtalker.engines.ditto.motion import (
    MOTION_DIM,
    AudioToMotion,
    DrivingMotion,
    MotionOptions,
    MotionSequence,
    motion_vector,
    smooth,
)
from sadtalker.engines.ditto.sampler import DDIMSchedule
from sadtalker.errors import InvalidInputError

FAST = MotionOptions(steps=2)


def _reference_smooth(seq: np.ndarray, s: int, e: int, k: int = 3) -> np.ndarray:
    """The original's rule, written plainly: centred mean over k rows of the values before the call, dims :202."""
    out, before = seq.copy(), seq.copy()
    for i in range(s, e):
        out[i, :202] = np.mean(before[max(0, i - k // 2) : min(len(seq), i + k // 2 + 1), :202], axis=0)
    return out


@pytest.mark.parametrize("span, k", [((0, 30), 3), ((5, 12), 3), ((28, 30), 3), ((0, 30), 5), ((3, 9), 4), ((0, 30), 1)])
def test_smooth_matches_the_rule(span, k):
    seq = np.random.RandomState(1).randn(30, MOTION_DIM).astype(np.float32)
    ours = torch.from_numpy(seq.copy())
    smooth(ours, *span, window=k)
    np.testing.assert_array_equal(ours.numpy(), _reference_smooth(seq, *span, k))


def test_sequence_fuses_overlaps():
    rs = np.random.RandomState(2)
    clips = [torch.from_numpy(rs.randn(80, MOTION_DIM).astype(np.float32)) for _ in range(3)]
    seq = MotionSequence(3, smooth_window=1)
    assert seq.buffer.shape == (80 + 70 * 2, MOTION_DIM)  # preallocated, linear in the clip count
    seq.add(clips[0])
    assert torch.equal(seq.condition_frame()[0], clips[0][69])
    seq.add(clips[1])
    alpha = torch.arange(10, dtype=torch.float32)[:, None] / 10
    assert torch.equal(seq.rows[70:80], clips[0][70:80] * (1 - alpha) + clips[1][:10] * alpha)
    assert torch.equal(seq.rows[80:150], clips[1][10:])
    assert torch.equal(seq.condition_frame()[0], clips[1][69])  # row 139 = clip 1's frame 69
    seq.add(clips[2])
    assert seq.length == 220 and torch.equal(seq.rows[150:], clips[2][10:])
    assert seq.finish(100).shape == (100, MOTION_DIM)


def test_motion_vector_layout_and_roundtrip():
    motion, _ = source_inputs()
    vec = motion_vector(motion)
    assert vec.shape == (265,) and vec.dtype == np.float32
    assert np.isclose(vec[0], 0.02)  # scale stored minus 1
    np.testing.assert_array_equal(vec[1:67], motion["pitch"][0])
    np.testing.assert_array_equal(vec[202:], motion["exp"].reshape(63))
    back = DrivingMotion.from_rows(vec[None])
    assert np.isclose(back.scale[0, 0], 1.02) and np.array_equal(back.exp[0], vec[202:])
    assert {k: v.shape for k, v in back.frame(0).items()} == {
        "scale": (1, 1), "pitch": (1, 66), "yaw": (1, 66), "roll": (1, 66), "t": (1, 3), "exp": (1, 63)}
    with pytest.raises(InvalidInputError, match="'t'"):
        motion_vector({**motion, "t": np.zeros(2)})


@pytest.fixture(scope="module")
def engine() -> AudioToMotion:
    return AudioToMotion(tiny_lmdm())


@pytest.mark.parametrize("frames", [1, 70, 71, 151])
def test_generate_lengths(engine, frames):
    motion, source = source_inputs()
    audio = np.random.RandomState(frames).randn(frames, 1024).astype(np.float32)
    seen = []
    out = engine.generate(audio, motion, source, FAST, generator=torch.Generator().manual_seed(0),
                          progress=lambda f, stage: seen.append((f, stage)))
    assert len(out) == frames and out.exp.shape == (frames, 63) and out.pitch.shape == (frames, 66)
    assert all(np.isfinite(getattr(out, k)).all() for k in ("scale", "pitch", "yaw", "roll", "t", "exp"))
    clips = -(-frames // 70)
    assert [f for f, _ in seen] == [(k + 1) / clips for k in range(clips)] and seen[-1] == (1.0, "motion")


def test_seed_reproduces_and_noise_can_be_given(engine):
    motion, source = source_inputs()
    audio = np.random.RandomState(0).randn(90, 1024).astype(np.float32)
    a = engine.generate(audio, motion, source, FAST, generator=torch.Generator().manual_seed(5))
    b = engine.generate(audio, motion, source, FAST, generator=torch.Generator().manual_seed(5))
    c = engine.generate(audio, motion, source, FAST, generator=torch.Generator().manual_seed(6))
    step_noise, x_T = engine.draw_noise(90, FAST.steps, torch.Generator().manual_seed(5))
    assert step_noise.shape == (1, 1, 80, 265) and x_T.shape == (2, 1, 80, 265)
    d = engine.generate(audio, motion, source, FAST, step_noise=step_noise, x_T=x_T)
    assert np.array_equal(a.exp, b.exp) and np.array_equal(a.exp, d.exp) and not np.array_equal(a.exp, c.exp)
    with pytest.raises(InvalidInputError, match="initial noises"):
        engine.generate(audio, motion, source, FAST, step_noise=step_noise, x_T=x_T[:1])


def test_refusals(engine, tmp_path):
    motion, source = source_inputs()
    nan_steps = next((n for n in range(1, 61) if not torch.isfinite(DDIMSchedule.unchecked(n).c).all()), None)
    if nan_steps is None:  # 5 on our CPUs
        pytest.skip("no step count up to 60 has a NaN schedule on this platform")
    with pytest.raises(InvalidInputError, match="NaN"):
        engine.generate(np.zeros((10, 1024), np.float32), motion, source, MotionOptions(steps=nan_steps))
    with pytest.raises(InvalidInputError, match="no audio frames"):
        engine.generate(np.zeros((0, 1024), np.float32), motion, source, FAST)
    with pytest.raises(InvalidInputError, match="overlap"):
        engine.generate(np.zeros((10, 1024), np.float32), motion, source, MotionOptions(steps=2, overlap=80))
    with pytest.raises(InvalidInputError, match="only supported on CUDA"):
        AudioToMotion.from_checkpoint(tmp_path / "x.pth", "cpu", torch.float16)


def test_from_checkpoint(tmp_path):
    from ditto_motion_factory import TINY

    engine = AudioToMotion.from_checkpoint(write_tiny_lmdm(tmp_path / "lmdm.pth"), config=TINY)
    assert engine.config == TINY and not engine.lmdm.training
