"""Looking at uploads before paying for them: an image's format and size from its header (Pillow opens lazily), an
audio clip's length from its header (libsndfile, else ffmpeg's reading of the container), and the clip decoded
block by block up to a length bound, so a small file that decodes to gigabytes costs a bounded amount of memory."""
from __future__ import annotations

import logging
import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sadtalker.errors import AudioError, FFmpegError, ImageError

logger = logging.getLogger(__name__)

AUDIO_BLOCK_FRAMES = 1 << 16
FFMPEG_RATE = 16000  # formats libsndfile cannot read are decoded by ffmpeg at the model's rate
DURATION = re.compile(rb"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


class ImageTooLargeError(ImageError):
    """Pillow refused to open the image: its header states more pixels than twice its limit."""

    def __init__(self, size: str) -> None:
        super().__init__(f"the image is too large ({size})")
        self.size = size


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int


@dataclass(frozen=True)
class AudioHeader:
    seconds: float
    exact: bool  # libsndfile's frame count; ffmpeg's container duration may be an estimate


@dataclass(frozen=True)
class AudioScan:
    """What decoding at most `max_seconds` (plus one block) found."""

    seconds: float     # decoded length, capped near the bound
    peak: float        # largest absolute sample of the mono mix
    truncated: bool    # the clip goes on past the bound


def limit_pillow_pixels(max_side: int) -> None:
    """Pillow's own decompression-bomb guard at the front's image limit (it warns above, refuses at twice)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_side * max_side


def read_image_header(path: Path) -> ImageHeader:
    """Format and size without decoding a pixel. Raises ImageError for unreadable files and for sizes past
    Pillow's pixel limit (see `limit_pillow_pixels`)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return ImageHeader(format=(img.format or "").upper(), width=int(img.width), height=int(img.height))
    except Image.DecompressionBombError as exc:
        stated = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow: "Image size (N pixels) exceeds limit of ..."
        size = f"{int(stated.group(1))} pixels" if stated else f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels"
        raise ImageTooLargeError(size) from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError("not an image that can be read") from exc


def read_audio_header(path: Path) -> AudioHeader | None:
    """The clip's length as its header states it; None when neither reader finds one (e.g. a streamed WebM)."""
    import soundfile

    try:
        info = soundfile.info(str(path))
        if info.samplerate > 0 and info.frames >= 0:
            return AudioHeader(seconds=info.frames / info.samplerate, exact=True)
    except Exception as exc:  # libsndfile reports unknown formats with several exception types
        logger.debug("libsndfile has no header for %s (%s); asking ffmpeg", path.name, exc)
    from sadtalker.io.video import ffmpeg_exe

    try:  # without an output ffmpeg exits 1 after printing the input's description; that is all we need
        proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("ffmpeg could not read the header of %s: %s", path.name, exc)
        return None
    match = DURATION.search(proc.stderr)
    if match is None:
        return None
    hours, minutes, seconds = int(match.group(1)), int(match.group(2)), float(match.group(3))
    return AudioHeader(seconds=hours * 3600 + minutes * 60 + seconds, exact=False)


def scan_audio(path: Path, max_seconds: float) -> AudioScan:
    """Decode at most `max_seconds` of the clip (libsndfile block by block, else ffmpeg with `-t`), mixing to
    mono. Raises AudioError for unreadable or non-finite audio."""
    try:
        return _scan_with_libsndfile(path, max_seconds)
    except AudioError:
        raise
    except Exception as exc:  # not a libsndfile format (mp3 on old builds, m4a, webm, ...)
        logger.debug("libsndfile could not read %s (%s); trying ffmpeg", path.name, exc)
    return _scan_with_ffmpeg(path, max_seconds)


def _scan_with_libsndfile(path: Path, max_seconds: float) -> AudioScan:
    import soundfile

    with soundfile.SoundFile(str(path)) as sound:
        rate = sound.samplerate
        allowed = math.floor(max_seconds * rate)
        frames, peak = 0, 0.0
        while frames <= allowed:
            block = sound.read(min(AUDIO_BLOCK_FRAMES, allowed + 1 - frames), dtype="float32", always_2d=True)
            if len(block) == 0:
                break
            mono = block.mean(axis=1)
            peak = max(peak, _peak(mono))
            frames += len(block)
    return AudioScan(seconds=min(frames, allowed) / rate, peak=peak, truncated=frames > allowed)


def _scan_with_ffmpeg(path: Path, max_seconds: float) -> AudioScan:
    from sadtalker.io.video import run_ffmpeg

    allowed = math.floor(max_seconds * FFMPEG_RATE)
    try:
        proc = run_ffmpeg(["-i", str(path), "-vn", "-t", f"{max_seconds + 1:.3f}", "-ac", "1",
                           "-ar", str(FFMPEG_RATE), "-f", "f32le", "-acodec", "pcm_f32le", "-"],
                          f"decode the audio of {path.name}")
    except FFmpegError as exc:
        raise AudioError(f"could not read the audio file {path.name}: not a supported audio format") from exc
    samples = np.frombuffer(proc.stdout, dtype=np.float32)
    return AudioScan(seconds=min(len(samples), allowed) / FFMPEG_RATE, peak=_peak(samples),
                     truncated=len(samples) > allowed)


def _peak(samples: np.ndarray) -> float:
    if samples.size == 0:
        return 0.0
    if not np.all(np.isfinite(samples)):
        raise AudioError("the audio file contains invalid (non-finite) samples")
    return float(np.max(np.abs(samples)))
