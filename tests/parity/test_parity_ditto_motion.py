"""Parity of Ditto's motion half (HuBERT chunking, conditions, LMDM DDIM sampling, the offline clip loop) with the
original code, on the golden data of shared/tools/ditto_parity (random official-layout weights; DITTO_PARITY_DIR).

Run with `pytest -s` to see the measured differences.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sadtalker.engines.ditto import audio_features
from sadtalker.engines.ditto.conditions import ConditionBuilder, SourceConditions, emotion_vector
from sadtalker.engines.ditto.motion import (
    MOTION_LAYOUT,
    AudioToMotion,
    MotionOptions,
    MotionSequence,
    motion_vector,
    smooth,
)
from sadtalker.engines.ditto.sampler import DDIMSampler, DDIMSchedule
from sadtalker.errors import InvalidInputError
from sadtalker.engines.ditto.weights import DittoCheckpoints, load_lmdm

pytestmark = pytest.mark.parity

TOLERANCE = 1e-4  # LMDM motion after sampling, and post-processed motion


def _golden(root, stage: str):
    path = root / "golden" / f"{stage}.npz"
    if not path.is_file():
        pytest.skip(f"{path} missing: regenerate the Ditto golden data")
    return np.load(path)


def _diff(name: str, ours, ref) -> float:
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} vs golden {ref.shape}"
    assert np.array_equal(np.isnan(ours), np.isnan(ref)), f"{name}: NaN positions differ"
    both = ~np.isnan(ref)
    diff = float(np.abs(ours[both] - ref[both]).max()) if both.any() else 0.0
    print(f"max abs diff {name}: {diff:.3g}" + (f" ({int((~both).sum())} NaN in both)" if not both.all() else ""))
    return diff


@pytest.fixture(scope="module")
def lmdm(ditto_parity_dir):
    return load_lmdm(DittoCheckpoints(root=ditto_parity_dir / "checkpoints").network_file("lmdm"))


@pytest.fixture(scope="module")
def source(ditto_parity_dir):
    return _golden(ditto_parity_dir, "source")


def test_wav2feat(ditto_parity_dir):
    g = _golden(ditto_parity_dir, "wav2feat")
    wav = g["in_wav"]
    assert audio_features.num_video_frames(len(wav)) == int(g["out_num_frames"])
    windows = np.stack(list(audio_features.windows(wav)))
    np.testing.assert_array_equal(windows, g["mid_hubert_input"])
    outputs = iter(g["in_hubert_out"])  # the HuBERT stand-in's answers, one per window, in order
    feat = audio_features.hubert_features(wav, lambda window: next(outputs))
    assert _diff("wav2feat features", feat, g["out_aud_feat"]) == 0.0


def test_condition(ditto_parity_dir):
    g = _golden(ditto_parity_dir, "condition")
    assert _diff("emotion vector", emotion_vector(int(g["in_emo"])), g["mid_emo_vector"]) < 1e-7
    builder = ConditionBuilder(SourceConditions(g["in_eye_open"], g["in_eye_ball"], g["in_sc"]), int(g["in_emo"]))
    rows = builder(g["in_aud_feat"], 0)
    assert rows.dtype == np.float32
    assert _diff("conditions", rows, g["out_aud_cond_all"]) < 1e-7
    # per-clip building (what the motion loop does) gives the same rows
    np.testing.assert_array_equal(builder(g["in_aud_feat"][70:], 70), g["out_aud_cond_all"][70:])


def test_lmdm_short(ditto_parity_dir, lmdm):
    g = _golden(ditto_parity_dir, "lmdm_short")
    steps = int(g["in_sampling_timesteps"])
    schedule = DDIMSchedule.unchecked(steps)
    np.testing.assert_array_equal(schedule.times.numpy(), g["mid_time_cond"])
    assert _diff("schedule sqrt(a_next)", schedule.alpha_next_sqrt, g["mid_alpha_next_sqrt"]) == 0.0
    assert _diff("schedule sigma", schedule.sigma, g["mid_sigma"]) == 0.0
    assert _diff("schedule c", schedule.c, g["mid_c"]) == 0.0
    original_nan = not np.isfinite(g["mid_c"]).all()
    if original_nan:  # the original's float32 schedule is NaN at this step count: we refuse it
        with pytest.raises(InvalidInputError, match="NaN"):
            DDIMSchedule.create(steps)
    else:
        DDIMSchedule.create(steps)
    kp, aud = torch.from_numpy(g["in_kp_cond"]), torch.from_numpy(g["in_aud_cond"])
    x_T, noise = torch.from_numpy(g["noise_x_T"]), torch.from_numpy(g["noise_step"])
    for batch in (False, True):
        record: list = []
        with torch.inference_mode():
            out = DDIMSampler(lmdm, schedule, batch_guidance=batch).sample(kp, aud, x_T, noise, record)
        label = "batched CFG" if batch else "sequential CFG"
        _diff(f"lmdm_short x_t ({label})", torch.stack([r[0] for r in record]), g["mid_x_t"])
        np.testing.assert_array_equal(torch.stack([r[1] for r in record]).numpy(), g["mid_t"])
        d_noise = _diff(f"lmdm_short pred_noise ({label})", torch.stack([r[2] for r in record]), g["mid_pred_noise"])
        d_x0 = _diff(f"lmdm_short x_start ({label})", torch.stack([r[3] for r in record]), g["mid_x_start"])
        d_out = _diff(f"lmdm_short output ({label})", out, g["out_pred_kp_seq"])
        assert max(d_noise, d_x0, d_out) < TOLERANCE
        if not batch:  # the same operations in the same order as the original
            assert d_x0 == 0.0


@pytest.mark.slow
def test_audio2motion(ditto_parity_dir, lmdm, source, monkeypatch):
    g = _golden(ditto_parity_dir, "audio2motion")
    cond = _golden(ditto_parity_dir, "condition")
    meta = json.loads((ditto_parity_dir / "golden" / "index.json").read_text())["meta"]
    steps = int(g["in_sampling_timesteps"])
    num_frames = len(g["in_aud_cond_all"])
    x_s = {key: source[f"out_x_s_{key}"] for key, _ in MOTION_LAYOUT}
    assert _diff("source motion (kp_cond)", motion_vector(x_s)[None], g["in_kp_cond_source"]) == 0.0

    engine = AudioToMotion(lmdm)
    # a seed reproduces the original's draws (global torch seed + 20 before Audio2Motion.setup)
    step_noise, x_T = engine.draw_noise(num_frames, steps, torch.Generator().manual_seed(meta["seed"] + 20))
    np.testing.assert_array_equal(step_noise.numpy(), g["noise_step"])
    np.testing.assert_array_equal(x_T.numpy(), g["noise_x_T"])

    # post-processing alone on the original's clips: fuse, per-clip smoothing, kp_cond, cut + smoothing
    clips = torch.from_numpy(g["mid_clip_pred_kp_seq"])[:, 0]  # (clips, 80, 265)
    seq = MotionSequence(len(clips))
    for k, clip in enumerate(clips):
        span = seq.fuse(clip)
        if k > 0:
            assert _diff(f"fused at clip {k} (0-based)", seq.rows, g[f"mid_fused_after_clip{k}"][0]) == 0.0
        smooth(seq.rows, *span)
        if k + 1 < len(clips):
            assert _diff(f"kp_cond for clip {k + 1}", seq.condition_frame(), g["mid_clip_kp_cond"][k + 1]) == 0.0
    post = seq.finish(num_frames).numpy()
    start = 0
    for key, size in MOTION_LAYOUT:
        ref = g[f"out_x_d_{key}"]
        part = post[:, start : start + size] + (1 if key == "scale" else 0)
        assert _diff(f"post-processing only: {key}", part, ref) == 0.0
        start += size

    # the whole loop with the golden noise, recording each clip's inputs and output
    calls = []
    original_sample = DDIMSampler.sample

    def recording_sample(self, cond_frame, aud_cond, x_T, step_noise, record=None):
        out = original_sample(self, cond_frame, aud_cond, x_T, step_noise, record)
        calls.append((cond_frame.clone(), aud_cond.clone(), out.clone()))
        return out
    monkeypatch.setattr(DDIMSampler, "sample", recording_sample)
    sources = SourceConditions(cond["in_eye_open"], cond["in_eye_ball"], cond["in_sc"])
    motion = engine.generate(cond["in_aud_feat"], x_s, sources, MotionOptions(steps=steps, emotion=int(cond["in_emo"])),
                             step_noise=step_noise, x_T=x_T)
    assert len(calls) == len(g["mid_clip_pred_kp_seq"])
    for k, (kp, aud, out) in enumerate(calls):
        assert _diff(f"clip {k} aud_cond", aud, g["mid_clip_aud_cond"][k]) == 0.0
        assert _diff(f"clip {k} kp_cond", kp, g["mid_clip_kp_cond"][k]) < TOLERANCE
        assert _diff(f"clip {k} LMDM output ({steps} steps)", out, g["mid_clip_pred_kp_seq"][k]) < TOLERANCE
    assert len(motion) == num_frames
    for key, _ in MOTION_LAYOUT:
        assert _diff(f"motion {key}", getattr(motion, key), g[f"out_x_d_{key}"]) < TOLERANCE
    assert (g["out_frame_idx"] == 0).all()  # an image source: every frame drives source frame 0
