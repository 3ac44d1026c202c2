"""Reading the source portrait: EXIF orientation, any mode -> RGB uint8, with size limits and clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sadtalker.errors import ImageError

DEFAULT_MAX_SIDE = 4096
MIN_SIDE = 32


def load_image(path: Path, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """RGB uint8 (H, W, 3). Transparent pixels are composited on white; EXIF rotation is applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image file not found: {path.name}")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.width > max_side or img.height > max_side:
                raise ImageError(
                    f"the image is too large ({img.width}x{img.height}; the limit is {max_side} px per side)"
                )
            if img.width < MIN_SIDE or img.height < MIN_SIDE:
                raise ImageError(f"the image is too small ({img.width}x{img.height}; at least {MIN_SIDE} px per side)")
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, rgba)
            rgb = img.convert("RGB")
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"could not read the image file {path.name}: not a supported image ({exc})") from exc
    return np.asarray(rgb, dtype=np.uint8).copy()
