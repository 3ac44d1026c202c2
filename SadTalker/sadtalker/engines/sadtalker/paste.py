"""Paste-back for the `full`/`extfull` modes (the original's paste_pic): each rendered face is resized to its
crop region and blended into the original picture with Poisson (seamless) cloning, so no box edge shows.

Unlike the original, frames are blended as they are rendered (no mp4 round trip of the face video), and the
result keeps the original picture's size, trimmed to even dimensions for H.264 yuv420p.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from sadtalker.errors import InvalidInputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CropInfo:
    """Where the face crop came from (the original's crop_info), in the source picture's pixels.

    size: (width, height) of the quad region; box: crop box (left, top, right, bottom); quad: (lx, ly, rx, ry)
    inside the box. `box`/`quad` are None for the resize mode.
    """

    size: tuple[int, int]
    box: tuple[int, int, int, int] | None = None
    quad: tuple[float, float, float, float] | None = None

    @classmethod
    def from_tuple(cls, info: Sequence) -> "CropInfo":
        """From the original's ((w, h), crop box, quad) tuple."""
        size, box, quad = info
        return cls(size=(int(size[0]), int(size[1])),
                   box=None if box is None or int(box[0]) < 0 and int(box[2]) < 0 else tuple(int(v) for v in box),
                   quad=None if quad is None or float(quad[0]) < 0 and float(quad[2]) < 0 else tuple(float(v) for v in quad))


def even(n: int) -> int:
    return max(2, n - n % 2)


def rendered_frame_size(size: int, crop_info: CropInfo | None) -> tuple[int, int]:
    """(width, height) of the face video: width `size`, height keeping the crop's aspect (the original's
    `size * crop_h / crop_w`), trimmed to even numbers."""
    if crop_info is None or not crop_info.size[0]:
        return size, size
    w, h = crop_info.size
    return even(size), even(int(size * h / w))


def paste_region(crop_info: CropInfo, extended: bool) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of the original picture covered by the rendered face."""
    if crop_info.box is None or crop_info.quad is None:
        raise InvalidInputError("paste-back needs the crop box and quad of a crop-based preprocess mode")
    clx, cly, crx, cry = crop_info.box
    if extended:
        return clx, cly, crx, cry
    lx, ly, rx, ry = (int(v) for v in crop_info.quad)
    return clx + lx, cly + ly, clx + rx, cly + ry


class PasteBack:
    """Blends rendered faces into the original picture; one instance per clip (the picture is kept once)."""

    def __init__(self, picture: np.ndarray, crop_info: CropInfo, extended: bool) -> None:
        if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
            raise InvalidInputError(f"the picture must be RGB uint8 (H, W, 3); got {picture.dtype} {picture.shape}")
        h, w = picture.shape[:2]
        self.height, self.width = even(h), even(w)
        self.picture = np.ascontiguousarray(picture[: self.height, : self.width])
        x1, y1, x2, y2 = paste_region(crop_info, extended)
        # The region must lie inside the picture for cv2.seamlessClone; clamp (the crop box already is).
        x1, y1 = max(0, x1), max(0, y1)
        x2, y2 = min(self.width, x2), min(self.height, y2)
        if x2 - x1 < 4 or y2 - y1 < 4:
            raise InvalidInputError(f"the face region ({x1}, {y1}, {x2}, {y2}) is too small to paste back")
        self.region = (x1, y1, x2, y2)
        self._mask = np.full((y2 - y1, x2 - x1, 3), 255, dtype=np.uint8)
        self._centre = ((x1 + x2) // 2, (y1 + y2) // 2)
        logger.debug("paste-back region %s into %dx%d", self.region, self.width, self.height)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the output frames."""
        return self.width, self.height

    def __call__(self, face: np.ndarray) -> np.ndarray:
        """Rendered face (h, w, 3) uint8 RGB -> the full picture with that face blended in, (H, W, 3) uint8 RGB."""
        x1, y1, x2, y2 = self.region
        patch = cv2.resize(face, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
        # seamlessClone's centre rounding: for an odd-sized patch the centre shifts it by half a pixel; it places
        # the patch at centre - size // 2, which equals (x1, y1) for the centre computed above.
        return cv2.seamlessClone(patch, self.picture, self._mask, self._centre, cv2.NORMAL_CLONE)
