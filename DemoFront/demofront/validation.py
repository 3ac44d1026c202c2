"""Checking uploads by decoding them with the model library's own readers, so the front and the model service
agree on what is valid. File names are never trusted: formats come from the decoded content."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sadtalker.io.audio import SAMPLE_RATE, check_audio, load_audio
from sadtalker.errors import AudioError, ImageError, InvalidInputError
from sadtalker.io.image import load_image
from sadtalker.options import GenerationOptions

from .errors import ApiError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "GIF": "gif", "TIFF": "tiff"}
OPTION_NAMES = ("preprocess", "still_mode", "enhancer", "batch_size", "size", "pose_style", "expression_scale",
                "seed", "engine")


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


def check_image(path: Path) -> ImageInfo:
    """Decode the whole image (as the model service will). Raises ApiError(400, field='image')."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            fmt = (img.format or "").upper()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ApiError(400, "image: the file is not an image that can be read (PNG, JPEG, WebP, BMP, GIF or TIFF)",
                       field="image") from exc
    if fmt not in IMAGE_EXTENSIONS:
        raise ApiError(400, f"image: the {fmt or 'unknown'} format is not accepted; use PNG, JPEG, WebP, BMP, GIF "
                            "or TIFF", field="image")
    try:
        pixels = load_image(path)
    except ImageError as exc:
        raise ApiError(400, f"image: {exc}", field="image") from exc
    height, width = pixels.shape[:2]
    return ImageInfo(format=fmt, extension=IMAGE_EXTENSIONS[fmt], width=int(width), height=int(height))


def check_audio_file(path: Path, max_seconds: float, field: str = "audio") -> AudioInfo:
    """Decode the clip (libsndfile, else ffmpeg) and apply the model service's length and silence checks."""
    try:
        samples = load_audio(path)
        seconds = check_audio(samples, SAMPLE_RATE, max_seconds=max_seconds)
    except AudioError as exc:
        message = str(exc).replace(path.name, "the upload")
        raise ApiError(400, f"{field}: {message}", field=field) from exc
    return AudioInfo(extension=sniff_audio_extension(path), seconds=float(seconds))


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


def parse_options(form: dict[str, str]) -> GenerationOptions:
    """Options from form fields or JSON; unknown fields are ignored here (the form carries others)."""
    values = {name: form[name] for name in OPTION_NAMES if name in form}
    try:
        return GenerationOptions.from_mapping(values)
    except InvalidInputError as exc:
        field = next((name for name in OPTION_NAMES if str(exc).startswith(name)), None)
        raise ApiError(400, str(exc), field=field) from exc
