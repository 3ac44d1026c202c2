"""Reading the driving audio: length checked from the header first, then at most the allowed length decoded to
16 kHz mono float32, with clear errors."""
from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

import numpy as np

from sadtalker.errors import AudioError, FFmpegError
from sadtalker.io.limits import InputLimits
from sadtalker.io.video import decode_audio, ffmpeg_exe

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SILENCE_PEAK = 1e-3  # full scale is 1.0; below this everywhere, the clip carries no speech
MIN_SECONDS = 0.1


def audio_seconds(path: Path) -> float | None:
    """The clip's length from its header (libsndfile, else ffmpeg's reading of the container), without decoding
    the samples; None when the header does not say (then decoding is capped instead)."""
    path = Path(path)
    try:
        import soundfile

        info = soundfile.info(str(path))
        if info.samplerate > 0 and info.frames >= 0:
            return info.frames / info.samplerate
    except Exception:  # not a libsndfile format: ask ffmpeg
        pass
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True,
                          check=False, timeout=60)
    text = proc.stderr.decode("utf-8", "replace")
    if not re.search(r"Stream #\S+.*?Audio:", text):
        raise AudioError(f"could not read the audio file {path.name}: not a supported audio format")
    match = re.search(r"Duration: (\d+):(\d+):([\d.]+)", text)
    if not match:
        return None
    return int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3))


def _too_long(seconds: float, limits: InputLimits) -> AudioError:
    return AudioError(f"the audio is too long ({seconds:.1f} s; the limit is {limits.max_audio_seconds:g} s)")


def load_audio(path: Path, limits: InputLimits = InputLimits(), sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode to mono float32 at `sample_rate`, shape (N,); a clip longer than the limit is refused from its header,
    before decoding (and decoding never goes past the limit).

    WAV/FLAC/OGG go through libsndfile and are resampled with soxr's high-quality mode (librosa's default, which
    the original uses); everything else (mp3, m4a/aac, webm, ...) through ffmpeg.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path.name}")
    seconds = audio_seconds(path)
    if seconds is not None and seconds > limits.max_audio_seconds:
        raise _too_long(seconds, limits)
    cap = limits.max_audio_seconds + 1.0  # a header that understates the length cannot make us decode more
    try:
        import soundfile

        with soundfile.SoundFile(str(path)) as f:
            rate = f.samplerate
            data = f.read(frames=int(cap * rate), dtype="float32", always_2d=True)
        samples = data.mean(axis=1)
        if rate != sample_rate:
            import soxr

            samples = soxr.resample(samples, rate, sample_rate, quality="HQ").astype(np.float32)
    except Exception as sf_error:  # libsndfile reports unknown formats with several exception types
        logger.debug("libsndfile could not read %s (%s); trying ffmpeg", path.name, sf_error)
        try:
            samples = decode_audio(path, sample_rate, max_seconds=cap)
        except FFmpegError as exc:
            raise AudioError(f"could not read the audio file {path.name}: not a supported audio format") from exc
    if samples.size == 0:
        raise AudioError(f"the audio file {path.name} contains no audio samples")
    if len(samples) > limits.max_audio_seconds * sample_rate:
        raise _too_long(len(samples) / sample_rate, limits)
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"the audio file {path.name} contains invalid (non-finite) samples")
    return np.ascontiguousarray(samples, dtype=np.float32)


def check_audio(samples: np.ndarray, limits: InputLimits = InputLimits(), sample_rate: int = SAMPLE_RATE,
                allow_silent: bool = False) -> float:
    """Reject clips that cannot drive a face: too short, too long, or silent. Returns the length in seconds."""
    seconds = len(samples) / sample_rate
    if seconds < MIN_SECONDS:
        raise AudioError(f"the audio is too short ({seconds:.2f} s; at least {MIN_SECONDS:g} s is needed)")
    if seconds > limits.max_audio_seconds:
        raise _too_long(seconds, limits)
    if not allow_silent and float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise AudioError("the audio is silent: no sound to animate the face with")
    return seconds
