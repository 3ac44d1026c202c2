"""Reading the source portrait: size checked from the header first, then decoded once (EXIF orientation, any mode
-> RGB uint8), with clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sadtalker.errors import ImageError
from sadtalker.io.limits import InputLimits

MIN_SIDE = 32


def image_size(path: Path, limits: InputLimits = InputLimits()) -> tuple[int, int]:
    """(width, height) from the file's header, refused before any pixel is decoded when over the limits."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image file not found: {path.name}")
    try:
        with Image.open(path) as img:  # reads the header only
            width, height = img.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"could not read the image file {path.name}: not a supported image ({exc})") from exc
    _check_size(width, height, limits)
    return width, height


def _check_size(width: int, height: int, limits: InputLimits) -> None:
    if width > limits.max_image_side or height > limits.max_image_side:
        raise ImageError(f"the image is too large ({width}x{height}; the limit is {limits.max_image_side} px per "
                         "side)")
    if width * height > limits.max_image_pixels:
        raise ImageError(f"the image is too large ({width}x{height} = {width * height} pixels; the limit is "
                         f"{limits.max_image_pixels})")
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageError(f"the image is too small ({width}x{height}; at least {MIN_SIDE} px per side)")


def load_image(path: Path, limits: InputLimits = InputLimits()) -> np.ndarray:
    """RGB uint8 (H, W, 3). Transparent pixels are composited on white; EXIF rotation is applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    image_size(path, limits)
    try:
        with Image.open(path) as img:
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)                 # an animated image: its first frame
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, rgba)
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"could not read the image file {path.name}: not a supported image ({exc})") from exc
    return np.asarray(rgb, dtype=np.uint8).copy()
