"""Blinks at natural random intervals and a small smooth head motion (larger while speaking), seeded."""
from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

BLINK_CLOSE_S = 0.1    # a blink closes in ~100 ms (eased) ...
BLINK_OPEN_S = 0.15    # ... and opens in ~150 ms
MEAN_BLINK_INTERVAL_S = 3.2
MIN_BLINK_INTERVAL_S = 1.4
FIRST_BLINK_S = (0.4, 2.2)

# Head motion amplitudes (idle, extra while speaking): roll in radians, translation and scale as a fraction of
# the face height.
ROLL = (0.006, 0.03)
SHIFT_X = (0.004, 0.016)
SHIFT_Y = (0.003, 0.012)
SCALE = (0.002, 0.01)
NOD = 0.02  # downward shift per unit of mouth opening on emphasis (fraction of face height)


def blink_profile(fps: int) -> np.ndarray:
    """Eyelid closure per frame of one blink, (n,): eased closing over BLINK_CLOSE_S, fully closed (1.0) in the
    peak frame, eased opening over BLINK_OPEN_S (at 25 fps: 0.10 0.65 1.00 0.82 0.45 0.10)."""
    t = np.arange(-int(BLINK_CLOSE_S * fps), int(np.ceil(BLINK_OPEN_S * fps)) + 1) / fps
    closing = 1.0 - _ease(-t / BLINK_CLOSE_S)
    opening = 1.0 - _ease(t / BLINK_OPEN_S)
    profile = np.where(t < 0, closing, opening)
    return profile[profile > 0.02].astype(np.float32)


def _ease(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def blink_track(num_frames: int, fps: int, rng: np.random.Generator) -> np.ndarray:
    """Eyelid closure 0..1 per frame, (T,). Intervals ~ gamma around 3.2 s, never shorter than 1.4 s."""
    closure = np.zeros(num_frames, np.float32)
    profile = blink_profile(fps)
    t = rng.uniform(*FIRST_BLINK_S)
    while True:
        start = int(round(t * fps))
        if start >= num_frames:
            break
        stop = min(num_frames, start + len(profile))
        closure[start:stop] = np.maximum(closure[start:stop], profile[: stop - start])
        t += max(MIN_BLINK_INTERVAL_S, rng.gamma(4.0, MEAN_BLINK_INTERVAL_S / 4.0))
    return closure


def smooth_noise(num_frames: int, fps: int, rng: np.random.Generator, components: int = 3,
                 freq_hz: tuple[float, float] = (0.08, 0.5)) -> np.ndarray:
    """A smooth random curve of roughly unit amplitude, (T,): a sum of a few slow sinusoids."""
    t = np.arange(num_frames, dtype=np.float64) / fps
    freqs = rng.uniform(*freq_hz, size=components)
    phases = rng.uniform(0, 2 * np.pi, size=components)
    weights = rng.uniform(0.5, 1.0, size=components)
    curve = (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0)
    return (curve / weights.sum() * 1.6).astype(np.float32)


def speaking_envelope(opening: np.ndarray, fps: int) -> np.ndarray:
    """How much the person is talking around each frame, 0..1, smoothed over ~1 s."""
    if opening.size == 0:
        return opening
    k = max(1, fps)
    kernel = np.hanning(k + 2)[1:-1]
    kernel /= kernel.sum()
    padded = np.pad(opening, (k // 2, k - 1 - k // 2), mode="edge")
    env = np.convolve(padded, kernel, mode="valid")
    return np.clip(env * 2.5, 0.0, 1.0).astype(np.float32)


def head_track(num_frames: int, fps: int, opening: np.ndarray, rng: np.random.Generator,
               still: bool = False) -> np.ndarray:
    """(T, 4): roll (radians), shift x, shift y (fraction of face height), scale change. Zeros in still mode."""
    if still:
        return np.zeros((num_frames, 4), np.float32)
    env = speaking_envelope(opening, fps)
    channels = []
    for idle, talk in (ROLL, SHIFT_X, SHIFT_Y, SCALE):
        channels.append(smooth_noise(num_frames, fps, rng) * (idle + talk * env))
    motion = np.stack(channels, axis=1)
    # a slight nod with the emphasis of the speech (smoothed opening, delayed by the smoothing)
    nod = np.convolve(np.pad(opening, (3, 3), mode="edge"), np.hanning(9)[1:-1] / np.hanning(9)[1:-1].sum(),
                      mode="valid")
    motion[:, 2] += NOD * nod[:num_frames]
    return motion.astype(np.float32)
