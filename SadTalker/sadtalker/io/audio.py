"""Reading the driving audio: any common format -> 16 kHz mono float32, with clear errors."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from sadtalker.errors import AudioError, FFmpegError
from sadtalker.io.video import decode_audio

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
DEFAULT_MAX_SECONDS = 300.0
SILENCE_PEAK = 1e-3  # full scale is 1.0; below this everywhere, the clip carries no speech


def load_audio(path: Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode to mono float32 at `sample_rate`, shape (N,).

    WAV/FLAC/OGG go through libsndfile and are resampled with soxr's high-quality mode (librosa's default, which
    the original uses); everything else (mp3, m4a/aac, webm, ...) through ffmpeg.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path.name}")
    try:
        import soundfile

        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        samples = data.mean(axis=1)
        if rate != sample_rate:
            import soxr

            samples = soxr.resample(samples, rate, sample_rate, quality="HQ").astype(np.float32)
    except Exception as sf_error:  # libsndfile reports unknown formats with several exception types
        logger.debug("libsndfile could not read %s (%s); trying ffmpeg", path.name, sf_error)
        try:
            samples = decode_audio(path, sample_rate)
        except FFmpegError as exc:
            raise AudioError(f"could not read the audio file {path.name}: not a supported audio format") from exc
    if samples.size == 0:
        raise AudioError(f"the audio file {path.name} contains no audio samples")
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"the audio file {path.name} contains invalid (non-finite) samples")
    return np.ascontiguousarray(samples, dtype=np.float32)


def check_audio(samples: np.ndarray, sample_rate: int = SAMPLE_RATE, max_seconds: float = DEFAULT_MAX_SECONDS,
                min_seconds: float = 0.1, allow_silent: bool = False) -> float:
    """Reject clips that cannot drive a face: too short, too long, or silent. Returns the length in seconds."""
    seconds = len(samples) / sample_rate
    if seconds < min_seconds:
        raise AudioError(f"the audio is too short ({seconds:.2f} s; at least {min_seconds:g} s is needed)")
    if seconds > max_seconds:
        raise AudioError(f"the audio is too long ({seconds:.1f} s; the limit is {max_seconds:g} s)")
    if not allow_silent and float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise AudioError("the audio is silent: no sound to animate the face with")
    return seconds
