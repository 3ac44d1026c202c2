"""Face crops for the preprocess modes (the original's `Preprocesser.align_face` + `crop`, and the resize step of
`CropAndExtract.generate`): an eye/mouth-oriented square (FFHQ-style) around the 68 landmarks, cut from the picture.

  crop / full        the quad's axis-aligned box inside the crop box (full pastes the face back afterwards)
  extcrop / extfull  the whole crop box (the quad plus a 10% border), likewise
  resize             the whole picture

Everything is pure geometry on numbers, so that for the same landmarks the boxes equal the original's exactly.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from sadtalker.engines.sadtalker.paste import CropInfo
from sadtalker.errors import InvalidInputError
from sadtalker.options import Preprocess

logger = logging.getLogger(__name__)

ALIGN_OUTPUT_SIZE = 512  # the original's `xsize`: only decides when a huge face is shrunk first


@dataclass(frozen=True)
class CropGeometry:
    """Where a face crop lies. All in pixels of the picture after the optional shrink (`resized`).

    resized: (w, h) the picture is resized to first (the original size unless the face is over ~2048 px);
    box: crop box (left, top, right, bottom), clamped to the picture; quad: (lx, ly, rx, ry) of the oriented
    square's bounding box, relative to the box (floats, as the original keeps them).
    """

    resized: tuple[int, int]
    box: tuple[int, int, int, int]
    quad: tuple[float, float, float, float]

    @property
    def quad_int(self) -> tuple[int, int, int, int]:
        lx, ly, rx, ry = self.quad
        return int(lx), int(ly), int(rx), int(ry)

    def crop_info(self) -> CropInfo:
        """The original's crop_info: ((w, h) of the quad region, crop box, quad)."""
        lx, ly, rx, ry = self.quad_int
        return CropInfo(size=(rx - lx, ry - ly), box=self.box, quad=self.quad)

    def region(self, extended: bool) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2) cut from the (resized) picture: the crop box, or the quad inside it."""
        left, top, right, bottom = self.box
        if extended:
            return left, top, right, bottom
        lx, ly, rx, ry = self.quad_int
        # numpy slicing semantics of the original: box[ly:ry] of a box of height bottom - top.
        x1, x2 = left + min(lx, right - left), left + min(rx, right - left)
        y1, y2 = top + min(ly, bottom - top), top + min(ry, bottom - top)
        return x1, y1, x2, y2


def oriented_square(lm68: np.ndarray) -> tuple[np.ndarray, float]:
    """The FFHQ-style oriented square around the face: (4, 2) corners and its side length."""
    lm = np.asarray(lm68)
    if lm.dtype not in (np.float32, np.float64):
        lm = lm.astype(np.float64)
    eye_left = np.mean(lm[36:42], axis=0)
    eye_right = np.mean(lm[42:48], axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    # Half-side vector along the eye line, tilted by the eye-to-mouth direction.
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    centre = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])
    return quad, float(np.hypot(*x) * 2)


def crop_geometry(lm68: np.ndarray, image_size: tuple[int, int], output_size: int = ALIGN_OUTPUT_SIZE) -> CropGeometry:
    """The crop box and quad for 68 landmarks (x, y) in a picture of `image_size` (w, h)."""
    lm68 = np.asarray(lm68)
    if lm68.shape != (68, 2) or not np.all(np.isfinite(lm68)):
        raise InvalidInputError(f"68 finite (x, y) landmarks are needed; got an array of shape {lm68.shape}")
    quad, qsize = oriented_square(lm68)
    width, height = image_size
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        resized = (int(np.rint(float(width) / shrink)), int(np.rint(float(height) / shrink)))
        quad /= shrink
        qsize /= shrink
    else:
        resized = (int(np.rint(float(width))), int(np.rint(float(height))))
    rw, rh = resized
    border = max(int(np.rint(qsize * 0.1)), 3)
    box = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
           int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    box = (max(box[0] - border, 0), max(box[1] - border, 0), min(box[2] + border, rw), min(box[3] + border, rh))
    if box[2] - box[0] < rw or box[3] - box[1] < rh:
        quad -= box[0:2]
    flat = (quad + 0.5).flatten()
    lx = max(min(flat[0], flat[2]), 0)
    ly = max(min(flat[1], flat[7]), 0)
    rx = min(max(flat[4], flat[6]), rw)
    ry = min(max(flat[3], flat[5]), rw)  # sic: the original clamps the bottom with the width
    return CropGeometry(resized=resized, box=box, quad=(float(lx), float(ly), float(rx), float(ry)))


def cut(image: np.ndarray, geometry: CropGeometry, extended: bool) -> np.ndarray:
    """The face region of an RGB picture (resized first when the geometry says so)."""
    h, w = image.shape[:2]
    if (w, h) != geometry.resized:
        image = cv2.resize(image, geometry.resized)
    x1, y1, x2, y2 = geometry.region(extended)
    region = image[y1:y2, x1:x2]
    if region.shape[0] < 1 or region.shape[1] < 1:
        raise InvalidInputError(f"the face crop {geometry.box} / {geometry.quad} is empty")
    return region


@dataclass(frozen=True)
class FaceCrop:
    """A preprocess mode's square face picture and where it came from."""

    image: np.ndarray           # (size, size, 3) uint8 RGB
    crop_info: CropInfo
    geometry: CropGeometry | None  # None for resize


def crop_face(image: np.ndarray, lm68: np.ndarray | None, preprocess: str, size: int) -> FaceCrop:
    """The mode's crop of `image` resized to size x size (cv2 INTER_LINEAR, as the original).

    `lm68` (68 landmarks in image pixels) is not used by `resize`.
    """
    mode = Preprocess.parse(preprocess)
    h, w = image.shape[:2]
    if mode is Preprocess.RESIZE:
        return FaceCrop(cv2.resize(image, (size, size)), CropInfo(size=(w, h)), None)
    if lm68 is None:
        raise InvalidInputError(f"the {mode} mode needs face landmarks")
    geometry = crop_geometry(lm68, (w, h))
    region = cut(image, geometry, extended=mode.extended)
    return FaceCrop(cv2.resize(region, (size, size)), geometry.crop_info(), geometry)


def map_to_region(lm68: np.ndarray, image_size: tuple[int, int], geometry: CropGeometry | None,
                  extended: bool, size: int) -> np.ndarray:
    """Image landmarks -> pixels of the size x size crop of `geometry` (the whole picture when None)."""
    w, h = image_size
    lm = np.asarray(lm68, dtype=np.float64)
    if geometry is None:
        return (lm * [size / w, size / h]).astype(np.float32)
    rw, rh = geometry.resized
    lm = lm * [rw / w, rh / h]
    x1, y1, x2, y2 = geometry.region(extended)
    lm = (lm - [x1, y1]) * [size / max(x2 - x1, 1), size / max(y2 - y1, 1)]
    return lm.astype(np.float32)
