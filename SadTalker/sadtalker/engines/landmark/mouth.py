"""Mouth controls per video frame from the sound: opening (loudness x voicing, attack/release smoothed) and shape
(wide for bright vowels, rounded for dark ones, from the spectral centroid)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

SILENCE_DB = -55.0        # frames quieter than this (dBFS RMS) are silence: the mouth closes
DYNAMIC_RANGE_DB = 30.0   # loudness maps the range [loud - 30 dB, loud] onto 0..1
ATTACK = 0.7              # fraction of the gap to the target closed per frame when opening
RELEASE = 0.45            # ... when closing (slower, so the mouth does not flicker shut between syllables)
VOICED_BAND_HZ = (80.0, 1000.0)
SHAPE_BAND_HZ = (250.0, 4000.0)


@dataclass(frozen=True)
class MouthTrack:
    """Per-frame controls, each (T,): opening 0..1, width -1 (rounded) .. 1 (wide), raw loudness 0..1."""

    opening: np.ndarray
    width: np.ndarray
    loudness: np.ndarray


def frame_samples(samples: np.ndarray, num_frames: int, sample_rate: int, fps: int) -> np.ndarray:
    """(T, hop) audio chunks, one per video frame, zero-padded at the end."""
    hop = sample_rate // fps
    need = num_frames * hop
    x = np.zeros(need, np.float32)
    n = min(need, len(samples))
    x[:n] = samples[:n]
    return x.reshape(num_frames, hop)


def frame_rms_db(samples: np.ndarray, num_frames: int, sample_rate: int = 16000, fps: int = 25) -> np.ndarray:
    """RMS level of each video frame's audio in dBFS, (T,)."""
    chunks = frame_samples(samples, num_frames, sample_rate, fps)
    rms = np.sqrt(np.mean(chunks.astype(np.float64) ** 2, axis=1))
    return (20.0 * np.log10(rms + 1e-9)).astype(np.float32)


def smooth_attack_release(target: np.ndarray, attack: float = ATTACK, release: float = RELEASE) -> np.ndarray:
    """One-pole follower with a faster rise than fall. (T,) -> (T,); a short loop (25 steps per second of audio)."""
    out = np.empty_like(target)
    level = 0.0
    for i, value in enumerate(target.tolist()):
        level += (value - level) * (attack if value > level else release)
        out[i] = level
    return out


def mouth_track(samples: np.ndarray, num_frames: int, sample_rate: int = 16000, fps: int = 25) -> MouthTrack:
    """Mouth controls for `num_frames` frames of audio (float32 mono)."""
    chunks = frame_samples(samples, num_frames, sample_rate, fps).astype(np.float32)
    db = frame_rms_db(samples, num_frames, sample_rate, fps)
    active = db > SILENCE_DB
    if not active.any():
        zeros = np.zeros(num_frames, np.float32)
        return MouthTrack(opening=zeros, width=zeros.copy(), loudness=zeros.copy())
    loud_ref = float(np.percentile(db[active], 95))
    loudness = np.clip((db - (loud_ref - DYNAMIC_RANGE_DB)) / DYNAMIC_RANGE_DB, 0.0, 1.0)
    loudness[~active] = 0.0

    # 2. spectrum per frame: voicing (low-band share) and brightness (centroid)
    n_fft = 1024
    window = np.hanning(chunks.shape[1]).astype(np.float32)
    power = np.abs(np.fft.rfft(chunks * window, n=n_fft, axis=1)) ** 2  # (T, 513)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    band = (freqs >= VOICED_BAND_HZ[0]) & (freqs <= 8000)
    low = (freqs >= VOICED_BAND_HZ[0]) & (freqs <= VOICED_BAND_HZ[1])
    total = power[:, band].sum(1) + 1e-12
    voiced = np.clip(power[:, low].sum(1) / total, 0.0, 1.0)
    shape_band = (freqs >= SHAPE_BAND_HZ[0]) & (freqs <= SHAPE_BAND_HZ[1])
    centroid = (power[:, shape_band] * freqs[shape_band]).sum(1) / (power[:, shape_band].sum(1) + 1e-12)

    # 3. opening: loud voiced sound opens the mouth most; unvoiced consonants (s, f, t) keep it half open
    target = (loudness ** 0.8) * (0.45 + 0.55 * voiced)
    opening = smooth_attack_release(target.astype(np.float32))

    # 4. shape: bright spectrum (ee) -> wide, dark (oo) -> rounded, relative to this speaker's median
    speaking = active & (loudness > 0.2)
    width = np.zeros(num_frames, np.float32)
    if speaking.sum() >= 3:
        logc = np.log(centroid[speaking] + 1.0)
        z = (np.log(centroid + 1.0) - np.median(logc)) / (np.std(logc) + 1e-6)
        width = (np.tanh(0.8 * z) * np.minimum(1.0, 2.0 * opening)).astype(np.float32)
        width[~speaking] = 0.0
    width = smooth_attack_release(width, 0.5, 0.5)
    return MouthTrack(opening=opening.astype(np.float32), width=width.astype(np.float32),
                      loudness=loudness.astype(np.float32))
