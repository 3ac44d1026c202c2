"""Mouth controls per video frame from the sound, causal (each frame sees its own 40 ms of audio and nothing later):
opening from loudness (saturating) x vowel height (first formant), closed lips for nasal murmurs (m, n) and
closures (b, p: silence); shape from the formants: spread for i/e (high F2), rounded for o/u (low F1 and F2)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

SILENCE_DB = -55.0        # frames quieter than this (dBFS RMS) are silence: the mouth closes
DYNAMIC_RANGE_DB = 30.0   # loudness maps [reference - 30 dB, reference] onto 0..1
REFERENCE_DB = -22.0      # the loudness reference before any speech; it follows the loudest frames ...
REFERENCE_FALL_DB = 0.12  # ... and falls back this much per frame
SATURATION = 2.5          # opening = (1 - exp(-k x)) / (1 - exp(-k)) of the loudness x: loud speech saturates smoothly
ATTACK = 0.8              # fraction of the gap to the target closed per frame when opening
RELEASE = 0.65            # ... when closing (b, p and pauses close the mouth within two frames)
SHAPE_SMOOTHING = 0.55    # the lip shape moves this share of the way to its target per frame
F1_RANGE = (250.0, 800.0)     # first formant of close (i, u) and open (a) vowels, Hz
F2_SPREAD_ABOVE = 1.12        # F2 above this multiple of the speaker's running mean F2 spreads the lips
F2_SPAN = (0.25, 0.15)        # ... fully at this relative distance above it; below it the lips round (when not
                              # open), fully at the second distance below
F2_MEAN_START = 1650.0        # running mean F2 before any vowel (Hz) ...
F2_MEAN_RATE = 0.02           # ... updated by this share per voiced frame
NASAL_DB = (-12.0, -18.0)     # energy 1.5-4 kHz over 0.1-0.5 kHz: at the first value lips start to close, at the
                              # second they are shut (nasal murmur: m, n; also w) ...
NASAL_QUIET_DB = (5.0, 10.0)  # ... when the frame is also this much under the loudness reference (a murmur is
                              # quieter than the vowels; a loud dark vowel such as u keeps its opening)
UNVOICED_OPENING = 0.35       # s, f, t, sh: teeth nearly together
LPC_RATE = 8000               # formants are found at this rate (F1, F2 < 3.5 kHz), LPC of order 10
LPC_ORDER = 10
BLOCK_FRAMES = 250            # mouth_track measures this many frames at a time


@dataclass(frozen=True)
class MouthTrack:
    """Per-frame controls, each (T,): opening 0..1, width -1 (rounded) .. 1 (spread), loudness 0..1."""

    opening: np.ndarray
    width: np.ndarray
    loudness: np.ndarray


@dataclass(frozen=True)
class MouthFrame:
    """One frame's controls and the measures they came from (formants in Hz, nan when not voiced)."""

    opening: float
    width: float
    loudness: float
    f1: float
    f2: float
    nasal: float


class MouthAnalyzer:
    """Streaming mouth analysis: `push` one video frame's audio (sample_rate / fps samples, the audio shown while
    that frame is on screen) and get its controls at once. Per-frame measures depend on that frame's audio only
    (and a few samples before it, for the resampling filter); the state carried between frames is a loudness
    reference, the speaker's mean F2 and the smoothed controls. `features` measures many frames at once (the same
    numbers), so a whole clip costs a few ms per second of audio."""

    def __init__(self, sample_rate: int = 16000, fps: int = 25) -> None:
        if sample_rate % LPC_RATE:
            raise ValueError(f"sample_rate must be a multiple of {LPC_RATE}; got {sample_rate}")
        self.sample_rate, self.fps = sample_rate, fps
        self.hop = sample_rate // fps
        self.decimate = sample_rate // LPC_RATE
        taps = 8 * self.decimate + 1
        n = np.arange(taps) - (taps - 1) / 2
        cutoff = 0.45 / self.decimate
        self.fir = (2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(taps)).astype(np.float64)
        self.history = np.zeros(taps - 1, np.float64)
        self.n_fft = 1 << int(np.ceil(np.log2(self.hop)))
        freqs = np.fft.rfftfreq(self.n_fft, 1.0 / sample_rate)
        self.low = (freqs >= 100) & (freqs < 500)
        self.high = (freqs >= 1500) & (freqs < 4000)
        self.voice_band = (freqs >= 80) & (freqs <= 1000)
        self.all_band = (freqs >= 80) & (freqs <= 8000)
        self.window = np.hanning(self.hop)
        self.reference = REFERENCE_DB
        self.f2_mean = F2_MEAN_START
        self.opening = 0.0
        self.width = 0.0

    def push(self, chunk: np.ndarray) -> MouthFrame:
        x = np.zeros(self.hop, np.float64)
        x[: min(len(chunk), self.hop)] = np.asarray(chunk, np.float64)[: self.hop]
        feats = self.features(x[None, :], self.history)
        self.history = x[-len(self.history):].copy()
        return self.step(*(float(f[0]) for f in feats))

    def features(self, chunks: np.ndarray, history: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Per frame, (T,) each: level (dBFS), voicing 0..1, spectral tilt (dB, 1.5-4 kHz over 0.1-0.5 kHz), F1, F2
        (Hz, nan where not voiced). chunks: (T, hop) consecutive frames; history: the samples before the first."""
        chunks = np.asarray(chunks, np.float64)
        num = len(chunks)
        history = np.zeros(len(self.fir) - 1) if history is None else history
        db = 10.0 * np.log10(np.mean(chunks * chunks, axis=1) + 1e-18)
        power = np.abs(np.fft.rfft(chunks * self.window, n=self.n_fft, axis=1)) ** 2
        voiced = np.clip(power[:, self.voice_band].sum(1) / (power[:, self.all_band].sum(1) + 1e-18), 0.0, 1.0)
        tilt = 10.0 * np.log10((power[:, self.high].sum(1) + 1e-18) / (power[:, self.low].sum(1) + 1e-18))
        signal = np.concatenate([history, chunks.reshape(-1)])
        narrow = np.convolve(signal, self.fir, mode="valid").reshape(num, self.hop)[:, :: self.decimate]
        voiced = np.maximum(voiced, periodicity(narrow, LPC_RATE))
        f1 = np.full(num, np.nan)
        f2 = np.full(num, np.nan)
        loud = db > SILENCE_DB + 10.0
        rows = np.flatnonzero((voiced > 0.3) & loud)
        if rows.size:
            f1[rows], f2[rows] = formants(narrow[rows], LPC_RATE)
        return db, voiced, tilt, f1, f2

    def step(self, db: float, voiced: float, tilt: float, f1: float, f2: float) -> MouthFrame:
        """Advance the state by one frame with its measures (see `features`)."""
        # 1. loudness against a reference that follows the loudest frames
        self.reference = max(db, self.reference - REFERENCE_FALL_DB) if db > SILENCE_DB else self.reference
        loudness = _clip((db - (self.reference - DYNAMIC_RANGE_DB)) / DYNAMIC_RANGE_DB, 0.0, 1.0)
        if db <= SILENCE_DB:
            loudness = 0.0
        # 2. nasal murmur: little energy above 1.5 kHz and quieter than the vowels
        quiet = _clip((self.reference - db - NASAL_QUIET_DB[0]) / (NASAL_QUIET_DB[1] - NASAL_QUIET_DB[0]), 0.0, 1.0)
        nasal = _clip((NASAL_DB[0] - tilt) / (NASAL_DB[0] - NASAL_DB[1]), 0.0, 1.0) * quiet * voiced
        if loudness <= 0.15:
            f1 = f2 = math.nan
        # 3. targets: opening = loudness (saturating) x vowel height, shut for nasals; shape from the formants
        loud_open = (1.0 - math.exp(-SATURATION * loudness)) / (1.0 - math.exp(-SATURATION))
        if f1 == f1:
            height = _clip((f1 - F1_RANGE[0]) / (F1_RANGE[1] - F1_RANGE[0]), 0.0, 1.0)
            shape = 0.3 + 0.7 * height
            width = 0.0
            if f2 == f2:
                self.f2_mean += F2_MEAN_RATE * (f2 - self.f2_mean)
                relative = f2 / (F2_SPREAD_ABOVE * self.f2_mean) - 1.0
                spread = relative / F2_SPAN[0] if relative > 0 else relative / F2_SPAN[1]
                width = _clip(spread, -1.0, 1.0)
                if width < 0:
                    width *= 1.0 - height  # open vowels (a) are not rounded
        else:
            shape, width = UNVOICED_OPENING, 0.0
        shape = voiced * shape + (1.0 - voiced) * UNVOICED_OPENING
        target = loud_open * shape * (1.0 - nasal)
        # 4. smoothing: quick to open, a little slower to close; the shape eases
        self.opening += (target - self.opening) * (ATTACK if target > self.opening else RELEASE)
        width_target = width * min(1.0, 3.0 * loud_open) * (1.0 - nasal)
        self.width += (width_target - self.width) * SHAPE_SMOOTHING
        return MouthFrame(opening=self.opening, width=self.width, loudness=loudness, f1=float(f1), f2=float(f2),
                          nasal=nasal)


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def periodicity(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """(T, n) frames -> (T,) 0..1: the normalised autocorrelation peak over pitch periods of 60-400 Hz (voiced
    sound is periodic)."""
    x = x - x.mean(axis=1, keepdims=True)
    n = x.shape[1]
    energy = (x * x).sum(1)
    r = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * n, axis=1)) ** 2, axis=1)[:, :n]
    lo, hi = int(sample_rate / 400), min(int(sample_rate / 60), n // 2)
    overlap = (n - np.arange(lo, hi)) / n  # the lag's shorter overlap
    peak = (r[:, lo:hi] / overlap).max(1)
    return np.where(energy > 1e-12, np.clip(peak / np.maximum(energy, 1e-12), 0.0, 1.0), 0.0)


def formants(x: np.ndarray, sample_rate: int, order: int = LPC_ORDER) -> tuple[np.ndarray, np.ndarray]:
    """The first two formants (Hz) of short voiced frames (T, n) from the roots of their LPC polynomials
    (pre-emphasis, Hamming window, autocorrelation method, Levinson-Durbin); nan where none is found."""
    num, n = x.shape
    y = np.concatenate([x[:, :1], x[:, 1:] - 0.94 * x[:, :-1]], axis=1) * np.hamming(n)
    r = np.fft.irfft(np.abs(np.fft.rfft(y, 2 * n, axis=1)) ** 2, axis=1)[:, :order + 1]
    valid = r[:, 0] > 1e-12
    r[:, 0] = np.where(valid, r[:, 0] * 1.0001, 1.0)  # a little white-noise correction keeps the recursion stable
    a = np.zeros((num, order + 1))
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    for i in range(1, order + 1):  # Levinson-Durbin, all frames at once
        k = -(r[:, i] + (a[:, 1:i] * r[:, i - 1:0:-1]).sum(1)) / err
        a[:, 1:i + 1] = a[:, 1:i + 1] + k[:, None] * np.concatenate([a[:, i - 1:0:-1], np.ones((num, 1))], axis=1)
        err *= 1.0 - k * k
    companion = np.zeros((num, order, order))
    companion[:, 0, :] = -a[:, 1:]
    companion[:, np.arange(1, order), np.arange(order - 1)] = 1.0
    roots = np.linalg.eigvals(companion)                                              # (T, order)
    freq = np.angle(roots) * sample_rate / (2 * np.pi)
    bandwidth = -np.log(np.abs(roots) + 1e-12) * sample_rate / np.pi
    ok = (np.imag(roots) > 0) & (freq > 200) & (freq < 3500) & (bandwidth < 600) & valid[:, None]
    freq = np.sort(np.where(ok, freq, np.inf), axis=1)
    f1 = freq[:, 0]
    later = np.where(freq > f1[:, None] + 250, freq, np.inf).min(1)
    return np.where(np.isfinite(f1), f1, np.nan), np.where(np.isfinite(later), later, np.nan)


def frame_samples(samples: np.ndarray, num_frames: int, sample_rate: int, fps: int) -> np.ndarray:
    """(T, hop) audio chunks, one per video frame, zero-padded at the end."""
    hop = sample_rate // fps
    need = num_frames * hop
    x = np.zeros(need, np.float32)
    n = min(need, len(samples))
    x[:n] = samples[:n]
    return x.reshape(num_frames, hop)


def mouth_track(samples: np.ndarray, num_frames: int, sample_rate: int = 16000, fps: int = 25) -> MouthTrack:
    """Mouth controls for `num_frames` frames of audio (float32 mono), frame by frame as the live mode would."""
    analyzer = MouthAnalyzer(sample_rate, fps)
    chunks = frame_samples(samples, num_frames, sample_rate, fps)
    frames, history = [], None
    for start in range(0, num_frames, BLOCK_FRAMES):  # blocks of frames: memory does not grow with the clip
        block = chunks[start:start + BLOCK_FRAMES]
        measures = analyzer.features(block, history)
        history = block.reshape(-1)[-(len(analyzer.fir) - 1):].astype(np.float64)
        frames += [analyzer.step(*values) for values in zip(*(m.tolist() for m in measures))]
    return MouthTrack(opening=np.array([f.opening for f in frames], np.float32),
                      width=np.array([f.width for f in frames], np.float32),
                      loudness=np.array([f.loudness for f in frames], np.float32))
