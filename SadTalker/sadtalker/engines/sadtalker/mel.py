"""SadTalker's audio features: the Wav2Lip-style mel spectrogram and the per-video-frame 16-frame mel windows.

Settings are the original's hparams (pre-emphasis 0.97, 800-point STFT hop 200, 80 mel bands 55-7600 Hz,
dB - 20 scaled symmetrically into [-4, 4]). Everything is vectorized; no per-frame Python loop.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

from sadtalker.errors import AudioError

logger = logging.getLogger(__name__)

FPS = 25
WINDOW_FRAMES = 16     # mel frames per video frame window (syncnet_mel_step_size)
MEL_PER_SECOND = 80    # 16000 / hop 200


@dataclass(frozen=True)
class MelConfig:
    """hparams of the original (src/utils/hparams.py)."""

    sample_rate: int = 16000
    n_fft: int = 800
    hop: int = 200
    win: int = 800
    n_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    min_level_db: float = -100.0
    ref_level_db: float = 20.0
    max_abs_value: float = 4.0


@functools.lru_cache(maxsize=4)
def _mel_basis(config: MelConfig) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                               fmin=config.fmin, fmax=config.fmax)


def samples_per_frame(config: MelConfig = MelConfig()) -> float:
    return config.sample_rate / FPS


def num_video_frames(num_samples: int, config: MelConfig = MelConfig()) -> int:
    """Video frames at 25 fps for a clip, truncated as the original does (int(len / 640))."""
    return int(num_samples / samples_per_frame(config))


def fit_to_frames(wav: np.ndarray, config: MelConfig = MelConfig()) -> tuple[np.ndarray, int]:
    """Cut or zero-pad the clip to a whole number of video frames; returns (samples, T)."""
    t = num_video_frames(len(wav), config)
    length = int(t * samples_per_frame(config))
    if len(wav) >= length:
        return wav[:length], t
    return np.pad(wav, (0, length - len(wav))), t


def melspectrogram(wav: np.ndarray, config: MelConfig = MelConfig()) -> np.ndarray:
    """(N,) samples -> (mel_frames, 80) float64 normalized log-mel (rows = time)."""
    import librosa
    from scipy.signal import lfilter

    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise AudioError(f"mel features need mono samples; got an array of shape {wav.shape}")
    emphasized = lfilter([1.0, -config.preemphasis], [1.0], wav)
    spec = np.abs(librosa.stft(y=emphasized, n_fft=config.n_fft, hop_length=config.hop, win_length=config.win))
    mel = _mel_basis(config) @ spec                                           # (80, frames)
    floor = np.exp(config.min_level_db / 20 * np.log(10))
    db = 20 * np.log10(np.maximum(floor, mel)) - config.ref_level_db
    m = config.max_abs_value
    norm = np.clip(2 * m * ((db - config.min_level_db) / -config.min_level_db) - m, -m, m)
    return norm.T                                                             # (frames, 80)


def frame_windows(mel: np.ndarray, num_frames: int) -> np.ndarray:
    """Per video frame i, mel rows int(80 * (i - 2) / 25) + 0..15 (clamped to the clip), as (T, 80, 16) float32."""
    if len(mel) == 0:
        raise AudioError("the audio is too short to compute mel features")
    i = np.arange(num_frames, dtype=np.float64)
    start = np.trunc(float(MEL_PER_SECOND) * ((i - 2) / float(FPS))).astype(np.int64)   # int() truncates to 0
    rows = np.clip(start[:, None] + np.arange(WINDOW_FRAMES), 0, len(mel) - 1)          # (T, 16)
    return np.ascontiguousarray(mel[rows].transpose(0, 2, 1), dtype=np.float32)         # (T, 80, 16)


def audio_windows(wav: np.ndarray, config: MelConfig = MelConfig()) -> np.ndarray:
    """16 kHz mono samples -> (T, 80, 16) mel windows, T = number of 25 fps video frames."""
    cut, t = fit_to_frames(np.asarray(wav, dtype=np.float32), config)
    if t == 0:
        raise AudioError(f"the audio is too short: {len(wav)} samples is less than one video frame (40 ms)")
    return frame_windows(melspectrogram(cut, config), t)
