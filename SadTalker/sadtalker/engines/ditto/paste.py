"""Paste-back of the 512x512 render into the source frame (the original's PutBack / PutBackNumpy).

The render is warped into the frame by the crop's inverse transform and blended with a mask that is 1 in the
central 90% of the crop and falls off linearly to 0 at its border (radially in the corners). For an image source
the frame and the transform never change, so the warped mask is computed once.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np

logger = logging.getLogger(__name__)

CROP_SIZE = 512
INNER_RATIO = 0.9


def paste_mask(size: int = CROP_SIZE, inner_ratio: float = INNER_RATIO) -> np.ndarray:
    """(size, size) float32 blend mask: 1 inside, linear ramps to 0 over the border band."""
    inner = int(size * inner_ratio)
    lo = (size - inner) // 2          # band width before the inner square
    hi = lo + inner                   # first index after it
    rising = np.linspace(0, 1, lo)            # outer edge 0 -> inner edge 1 (top, left)
    falling = np.linspace(1, 0, size - hi)    # inner edge 1 -> outer edge 0 (bottom, right)
    mask = np.ones((size, size), dtype=np.float32)
    mask[:lo, lo:hi] = rising[:, None]
    mask[hi:, lo:hi] = falling[:, None]
    mask[lo:hi, :lo] = rising[None, :]
    mask[lo:hi, hi:] = falling[None, :]

    def corner(dist_y: np.ndarray, dist_x: np.ndarray) -> np.ndarray:
        """1 minus the distance from the inner square's corner (each axis 0 at the inner edge, 1 at the border)."""
        return 1 - np.clip(np.sqrt(dist_x[None, :] ** 2 + dist_y[:, None] ** 2).astype(np.float32), 0, 1)

    out_lo, out_hi = np.linspace(1, 0, lo), np.linspace(0, 1, size - hi)   # distance into the band
    mask[:lo, :lo] = corner(out_lo, out_lo)
    mask[:lo, hi:] = corner(out_lo, out_hi)
    mask[hi:, :lo] = corner(out_hi, out_lo)
    mask[hi:, hi:] = corner(out_hi, out_hi)
    return mask


class PasteBack:
    """Blend renders (512x512 RGB float 0..255) into one source frame by the crop->frame affine `M_c2o`."""

    def __init__(self, frame_rgb: np.ndarray, M_c2o: np.ndarray, mask: np.ndarray | None = None) -> None:
        self.frame = np.ascontiguousarray(frame_rgb)
        self.affine = np.asarray(M_c2o)[:2, :]
        h, w = self.frame.shape[:2]
        template = paste_mask() if mask is None else mask
        warped = cv2.warpAffine(template, self.affine, dsize=(w, h), flags=cv2.INTER_LINEAR).clip(0, 1)
        self.mask = warped[:, :, None]                                   # (H, W, 1) float32
        self.keep = 1 - self.mask

    def __call__(self, render_rgb: np.ndarray) -> np.ndarray:
        """(512, 512, 3) float32 0..255 -> (H, W, 3) uint8 frame (blend clipped, then truncated like the original)."""
        h, w = self.frame.shape[:2]
        warped = cv2.warpAffine(render_rgb, self.affine, dsize=(w, h), flags=cv2.INTER_LINEAR)
        blended = self.mask * warped + self.keep * self.frame
        return np.clip(blended, 0, 255).astype(np.uint8)
