"""Checking uploads and options before anything is stored: headers first (an image's size, a clip's length), then
decoding within those bounds with the model library's own readers, so the front and the model service agree on
what is valid. File names are never trusted: formats come from the content."""
from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Mapping

from sadtalker.errors import AudioError, ImageError, InvalidInputError
from sadtalker.io.audio import MIN_SECONDS, SILENCE_PEAK
from sadtalker.io.image import load_image
from sadtalker.io.limits import InputLimits
from sadtalker.options import GenerationOptions

from .errors import ApiError
from .media import ImageTooLargeError, read_audio_header, read_image_header, scan_audio
from .models import MAX_SEED

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "GIF": "gif", "TIFF": "tiff"}
OPTION_NAMES = ("preprocess", "still_mode", "enhancer", "batch_size", "size", "pose_style", "expression_scale",
                "seed", "engine")
MAX_IMAGE_SIDE = InputLimits().max_image_side  # the model service's limit
MIN_AUDIO_SECONDS = MIN_SECONDS  # as the model service's check_audio
ESTIMATE_SLACK_SECONDS = 1.0  # ffmpeg's container durations may be estimates (e.g. mp3 from its bit rate)
INTEGER = re.compile(r"[+-]?\d{1,40}")


@dataclass(frozen=True)
class ImageInfo:
    format: str
    extension: str
    width: int
    height: int


@dataclass(frozen=True)
class AudioInfo:
    extension: str
    seconds: float


def check_image(path: Path, max_side: int = MAX_IMAGE_SIDE) -> ImageInfo:
    """The header's size against the limit, then one decode (as the model service will). Raises ApiError(400,
    field='image')."""
    try:
        header = read_image_header(path)
    except ImageTooLargeError as exc:
        raise ApiError(400, f"image: the image is too large ({exc.size}; the limit is {max_side} px per side)",
                       field="image") from exc
    except ImageError as exc:
        raise ApiError(400, "image: the file is not an image that can be read (PNG, JPEG, WebP, BMP, GIF or TIFF)",
                       field="image") from exc
    if header.format not in IMAGE_EXTENSIONS:
        raise ApiError(400, f"image: the {header.format or 'unknown'} format is not accepted; use PNG, JPEG, WebP, "
                            "BMP, GIF or TIFF", field="image")
    if header.width > max_side or header.height > max_side:
        raise ApiError(400, f"image: the image is too large ({header.width}x{header.height}; the limit is "
                            f"{max_side} px per side)", field="image")
    try:
        pixels = load_image(path, InputLimits(max_image_side=max_side, max_image_pixels=max_side * max_side))
    except ImageError as exc:
        raise ApiError(400, f"image: {exc}", field="image") from exc
    height, width = pixels.shape[:2]
    return ImageInfo(format=header.format, extension=IMAGE_EXTENSIONS[header.format], width=int(width),
                     height=int(height))


def check_audio_file(path: Path, max_seconds: float, field: str = "audio") -> AudioInfo:
    """The header's length against the limit, then at most `max_seconds` decoded for the length and silence
    checks of the model service. Raises ApiError(400, field=field)."""
    try:
        seconds = _checked_seconds(path, max_seconds)
    except AudioError as exc:
        message = str(exc).replace(path.name, "the upload")
        raise ApiError(400, f"{field}: {message}", field=field) from exc
    return AudioInfo(extension=sniff_audio_extension(path), seconds=seconds)


def _checked_seconds(path: Path, max_seconds: float) -> float:
    header = read_audio_header(path)
    if header is not None:
        slack = 0.0 if header.exact else ESTIMATE_SLACK_SECONDS
        if header.seconds > max_seconds + slack:
            raise AudioError(f"the audio is too long ({header.seconds:.1f} s; the limit is {max_seconds:g} s)")
    scan = scan_audio(path, max_seconds)
    if scan.truncated:
        raise AudioError(f"the audio is too long (more than {max_seconds:g} s; the limit is {max_seconds:g} s)")
    if scan.seconds == 0:
        raise AudioError(f"the audio file {path.name} contains no audio samples")
    if scan.seconds < MIN_AUDIO_SECONDS:
        raise AudioError(f"the audio is too short ({scan.seconds:.2f} s; at least {MIN_AUDIO_SECONDS:g} s is needed)")
    if scan.peak < SILENCE_PEAK:
        raise AudioError("the audio is silent: no sound to animate the face with")
    return scan.seconds


def sniff_audio_extension(path: Path) -> str:
    """The container, from its first bytes (only called after the clip decoded)."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    return "audio"


def parse_options(form: Mapping[str, Any]) -> GenerationOptions:
    """Options from form fields, JSON or a job row; unknown fields are ignored here (the form carries others).
    Every number's range is checked here, before anything touches the disk or the database."""
    values = {name: form[name] for name in OPTION_NAMES if name in form}
    seed = parse_seed(values.pop("seed", None))
    try:
        options = GenerationOptions.from_mapping(values)
    except InvalidInputError as exc:
        field = next((name for name in OPTION_NAMES if str(exc).startswith(name)), None)
        raise ApiError(400, str(exc), field=field) from exc
    # GenerationOptions reads integers through float (exact only up to 2**53): the seed is set as parsed here
    return dataclasses.replace(options, seed=seed)


def parse_seed(raw: Any) -> int:
    """0..2**63-1 (the database column's range), exactly; '', None -> 0. Raises ApiError(400, field='seed')."""
    if raw is None or raw == "":
        return 0
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and INTEGER.fullmatch(raw.strip()):
        value = int(raw.strip())
    elif isinstance(raw, (str, float)) and not isinstance(raw, bool) and len(str(raw)) <= 64:
        try:  # '12.0', '1e3': integral decimals, compared exactly (never through a float)
            number = Decimal(str(raw).strip())
        except InvalidOperation:
            number = None
        if number is not None and number.is_finite() and number == number.to_integral_value():
            if not 0 <= number <= MAX_SEED:
                raise ApiError(400, f"seed must be between 0 and {MAX_SEED}; got {raw!r}", field="seed")
            value = int(number)
    if value is None:
        raise ApiError(400, f"seed must be an integer between 0 and {MAX_SEED}; got {str(raw)[:64]!r}", field="seed")
    if not 0 <= value <= MAX_SEED:
        raise ApiError(400, f"seed must be between 0 and {MAX_SEED}; got {value}", field="seed")
    return value
