"""A request's media read once: the portrait decoded after its header is checked, the audio decoded up to the
limit, reference videos checked; every limit checked here and only here."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from sadtalker.engines.base import GenerationInputs
from sadtalker.errors import AudioError, FFmpegError, InvalidInputError
from sadtalker.io.audio import SAMPLE_RATE, check_audio, load_audio
from sadtalker.io.image import load_image
from sadtalker.io.limits import InputLimits
from sadtalker.io.video import decode_audio, video_seconds
from sadtalker.options import GenerationOptions

logger = logging.getLogger(__name__)


def read_inputs(image: Path, audio: Path | None, options: GenerationOptions, limits: InputLimits = InputLimits(),
                ref_video: Path | None = None, ref_eyeblink_video: Path | None = None) -> GenerationInputs:
    """Decode and check everything a generation needs, before any model runs.

    The driving audio is the clip, or the reference video's own sound when it drives everything (ref_info 'all'),
    or nothing in idle mode.
    """
    refs = {}
    for what, path in (("reference video", ref_video), ("blink reference video", ref_eyeblink_video)):
        if path is not None:
            refs[what] = _check_video(Path(path), what, limits)
    picture = load_image(Path(image), limits)
    drives_all = ref_video is not None and options.ref_info == "all"
    samples: np.ndarray | None
    if drives_all:
        samples = _video_sound(Path(ref_video), limits)  # type: ignore[arg-type]
    elif options.idle_mode:
        if options.idle_seconds > limits.max_audio_seconds:
            raise InvalidInputError(f"idle_seconds is too long ({options.idle_seconds:g} s; the limit is "
                                    f"{limits.max_audio_seconds:g} s)")
        samples = None
    elif audio is None:
        raise AudioError("driven_audio is required: upload a voice clip (or use idle mode)")
    else:
        samples = load_audio(Path(audio), limits)
        check_audio(samples, limits)
    return GenerationInputs(image=picture, audio=samples, ref_video=None if ref_video is None else Path(ref_video),
                            ref_eyeblink_video=None if ref_eyeblink_video is None else Path(ref_eyeblink_video),
                            image_name=Path(image).name)


def _check_video(path: Path, what: str, limits: InputLimits) -> float:
    if not path.is_file():
        raise InvalidInputError(f"{what} not found: {path.name}")
    try:
        seconds = video_seconds(path)
    except FFmpegError as exc:
        raise InvalidInputError(f"the {what} {path.name} cannot be read as a video") from exc
    if seconds > limits.max_audio_seconds:
        raise InvalidInputError(f"the {what} is too long ({seconds:.1f} s; the limit is "
                                f"{limits.max_audio_seconds:g} s)")
    return seconds


def _video_sound(path: Path, limits: InputLimits) -> np.ndarray:
    """The reference video's sound at 16 kHz (empty when it has none: the clip is then silent)."""
    try:
        samples = decode_audio(path, SAMPLE_RATE, max_seconds=limits.max_audio_seconds)
    except FFmpegError:
        samples = np.zeros(0, np.float32)
    if samples.size == 0:
        logger.info("the reference video has no sound; the clip will be silent")
    return samples
