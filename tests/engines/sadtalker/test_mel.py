"""Mel features and per-frame windows (Wav2Lip-style settings of the original)."""
from __future__ import annotations

import numpy as np
import pytest

from sadtalker.engines.sadtalker import mel
from sadtalker.errors import AudioError


def _loop_windows(spec: np.ndarray, frames: int) -> np.ndarray:
    """The original's per-frame definition, written as a plain loop for comparison."""
    out = []
    for i in range(frames):
        start = int(80.0 * ((i - 2) / 25.0))
        rows = [min(max(r, 0), len(spec) - 1) for r in range(start, start + 16)]
        out.append(spec[rows].T)
    return np.asarray(out, dtype=np.float32)


def test_frame_count_and_cut():
    wav = np.random.default_rng(0).standard_normal(16000 * 3 + 100).astype(np.float32)
    cut, frames = mel.fit_to_frames(wav)
    assert frames == 75 and len(cut) == 75 * 640


def test_mel_range_and_shape():
    rng = np.random.default_rng(1)
    wav = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    spec = mel.melspectrogram(wav)
    assert spec.shape == (16000 // 200 + 1, 80)
    assert spec.min() >= -4.0 and spec.max() <= 4.0
    silent = mel.melspectrogram(np.zeros(16000, np.float32))
    np.testing.assert_allclose(silent, -4.0)  # floor -100 dB maps to -max_abs


def test_windows_match_loop_definition():
    rng = np.random.default_rng(2)
    wav = (0.1 * rng.standard_normal(16000 * 2 + 333)).astype(np.float32)
    windows = mel.audio_windows(wav)
    cut, frames = mel.fit_to_frames(wav)
    np.testing.assert_array_equal(windows, _loop_windows(mel.melspectrogram(cut), frames))
    assert windows.shape == (50, 80, 16) and windows.dtype == np.float32


def test_too_short_audio_is_an_error():
    with pytest.raises(AudioError, match="too short"):
        mel.audio_windows(np.zeros(100, np.float32))
    with pytest.raises(AudioError, match="mono"):
        mel.melspectrogram(np.zeros((2, 1000), np.float32))


def test_real_speech_file(speech_path):
    from sadtalker.io.audio import load_audio

    windows = mel.audio_windows(load_audio(speech_path, sample_rate=16000))
    assert windows.shape[1:] == (80, 16) and len(windows) > 50
    assert np.isfinite(windows).all() and windows.std() > 0.1
