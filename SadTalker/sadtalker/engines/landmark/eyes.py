"""Blinks as an occlusion, not a squeeze: the upper lid slides down over the eye (its skin, up to the brow, stretched
from the portrait), the lower lid rises a little, and at full closure nothing of the eye opening is sampled."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from sadtalker.landmarks import facemesh as fm

logger = logging.getLogger(__name__)

UPPER_MARGIN = (-0.6, 0.25, 0.3)  # the upper lid margin (under the lashes) is found in the picture within this
                                  # range of the mesh's upper contour, in eye openings; the last value if not found
LOWER_MARGIN = 0.3      # the lower lid margin is this share of the opening below the mesh's lower contour
LOWER_LID_RISE = 0.2    # in a blink the lower lid rises this share of the opening; the upper lid comes down the rest
LOWER_REACH = 1.6       # the lower lid's skin stretches back to rest this many openings below its margin
LASH_BAND = 0.15        # the lid's dark lash band narrows to this many eye openings as it closes
LASH_WIDTH = 0.12       # the closed lids' lash line, in eye openings (at least one pixel)
LASH_STRENGTH = 0.6     # ... darkened this share of the way to the portrait's lash tone


@dataclass(frozen=True)
class _Eye:
    """One eye's blink map in a box of the image (x0, y0, x1, y1), and per-pixel eye coordinates in it."""

    box: tuple[int, int, int, int]
    origin: np.ndarray      # (2,) eye-axis origin in image px
    u: np.ndarray           # (h, w) along the eye (px)
    v: np.ndarray           # (h, w) down the face (px)
    u_knots: np.ndarray     # (N,) positions along the eye where the lid curves are tabulated
    brow: np.ndarray        # (N,) where the lid skin starts (fixed), v
    lash_top: np.ndarray    # (N,) top of the upper lid's lash band at rest, v
    top: np.ndarray         # (N,) the upper lid margin (bottom of the lash band) at rest, v
    lower: np.ndarray       # (N,) true lower lid margin at rest, v
    across: np.ndarray      # (N,) 1 over the eye, 0 beyond its corners
    lash_ratio: float       # the lash line's luma over the lid skin's


class Eyelids:
    """Per-frame backward displacement of both eyes for a closure 0..1 (added to the frame's map), and the lash
    line painted along the closed lids.

    The map is exact per output pixel: above the moving lid edge the lid skin between the brow and the lid margin
    is stretched down to it; between the two lid edges the eye stays where it is (the lids slide over it); below
    the lower lid edge the lower lid skin is moved up. At closure 1 the two edges meet."""

    def __init__(self, image: np.ndarray, xy: np.ndarray, ex: np.ndarray, ey: np.ndarray, roi: tuple) -> None:
        self.ex, self.ey = np.asarray(ex, np.float64), np.asarray(ey, np.float64)
        luma = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        self.eyes = [e for e in (self._eye(luma, xy, fm.RIGHT_EYE_UPPER, fm.RIGHT_EYE_LOWER, fm.RIGHT_BROW, roi),
                                 self._eye(luma, xy, fm.LEFT_EYE_UPPER, fm.LEFT_EYE_LOWER, fm.LEFT_BROW, roi))
                     if e is not None]

    def _eye(self, luma: np.ndarray, xy: np.ndarray, upper: tuple, lower: tuple, brow: tuple, roi: tuple):
        origin = (xy[upper[0]] + xy[upper[-1]]) / 2
        uu, uv = self._local(xy[list(upper)], origin)
        lu, lv = self._local(xy[list(lower)], origin)
        bu, bv = self._local(xy[list(brow[5:])], origin)  # the lower edge of the brow
        u0, u1 = float(min(uu.min(), lu.min())), float(max(uu.max(), lu.max()))
        width = u1 - u0
        if width < 4.0:
            return None
        knots = np.linspace(u0 - 0.35 * width, u1 + 0.35 * width, 48)
        lid = np.interp(knots, *_sorted(uu, uv))
        low = np.interp(knots, *_sorted(lu, lv))
        opening = np.clip(low - lid, 0.0, None)
        open_max = float(opening.max())
        if open_max < 1.0:
            return None
        inside = np.clip(1.0 - np.abs(knots - (u0 + u1) / 2) / (width / 2), 0.0, 1.0) ** 0.5
        band_top, band_bottom = self._upper_lid(luma, origin, uu, uv, open_max)
        top = lid + band_bottom * open_max * inside
        lash_top = lid + band_top * open_max * inside
        bottom = low + LOWER_MARGIN * open_max * inside
        brow_v = np.minimum(np.interp(knots, *_sorted(bu, bv)), lash_top - 0.5 * open_max)
        across = np.clip(1.0 - (np.abs(knots - (u0 + u1) / 2) - width / 2) / (0.3 * width), 0.0, 1.0)
        across = across * across * (3 - 2 * across)
        # the box: brow to well under the lower lid, corner to corner and a little beyond
        corners = []
        for cu in (knots[0], knots[-1]):
            for cv in (float(brow_v.min()) - 2, float(bottom.max() + LOWER_REACH * open_max) + 2):
                corners.append(origin + cu * self.ex + cv * self.ey)
        corners = np.array(corners)
        rx0, ry0, rx1, ry1 = roi
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), (rx0, ry0))
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, (rx1, ry1))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
        u, v = self._local(np.stack([gx, gy], -1), origin)
        # the lash tone: the darkest pixels around the upper contour
        contour = np.interp(u, knots, lid)
        band = (np.abs(u - (u0 + u1) / 2) < width / 3) & (v > contour - 0.6 * open_max) & (v < contour + 0.3 * open_max)
        values = luma[y0:y1, x0:x1][band]
        lash = float(np.percentile(values, 10)) if values.size else float(luma[y0:y1, x0:x1].min())
        skin = float(np.percentile(luma[y0:y1, x0:x1], 75))
        lash_ratio = 1.0 - LASH_STRENGTH * (1.0 - min(lash / max(skin, 1.0), 1.0))
        return _Eye(box=(int(x0), int(y0), int(x1), int(y1)), origin=origin, u=u.astype(np.float32),
                    v=v.astype(np.float32), u_knots=knots, brow=brow_v, lash_top=lash_top, top=top, lower=bottom, across=across,
                    lash_ratio=lash_ratio)

    def _upper_lid(self, luma: np.ndarray, origin: np.ndarray, uu: np.ndarray, uv: np.ndarray,
                   open_max: float) -> tuple[float, float]:
        """The upper lid's dark lash band, (top, bottom) relative to the mesh's upper contour, in eye openings (the
        contour wanders between the lashes and the iris from face to face). Measured in columns over the eye white
        on both sides of the iris: the darkest point above the contour is the lash line; the band ends where the
        brightness is half way back to the skin above it and to the eye white below it."""
        low, high, default = UPPER_MARGIN
        tops, bottoms = [], []
        order = np.argsort(uu)
        for frac in (0.2, 0.28, 0.72, 0.8):
            u = uu.min() + frac * (uu.max() - uu.min())
            contour = float(np.interp(u, uu[order], uv[order]))
            vs = contour + np.arange(low - 0.8, high + 0.6, 0.05) * open_max
            pts = (origin + u * self.ex + vs[:, None] * self.ey).astype(np.float32)
            profile = cv2.remap(luma, pts[:, None, 0], pts[:, None, 1], cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)[:, 0].astype(np.float32)
            search = (vs >= contour + low * open_max) & (vs <= contour + high * open_max)
            darkest = int(np.flatnonzero(search)[np.argmin(profile[search])])
            dark = float(profile[darkest])
            white, skin = float(profile[darkest:].max()), float(profile[:darkest + 1].max())
            if white - dark < 40.0 or skin - dark < 30.0:  # no eye white under the lashes, or no skin above
                continue
            after = np.flatnonzero(profile[darkest:] >= dark + 0.5 * (white - dark))
            before = np.flatnonzero(profile[:darkest + 1] >= dark + 0.5 * (skin - dark))
            bottoms.append((vs[darkest + int(after[0])] - contour) / open_max - 0.08)
            tops.append((vs[int(before[-1])] - contour) / open_max)
        if len(bottoms) < 2:
            return -default - LASH_BAND, -default
        bottom = float(np.clip(np.median(bottoms), low, high))
        return float(np.clip(np.median(tops), bottom - 1.0, bottom - LASH_BAND)), bottom

    def _local(self, xy: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = np.asarray(xy, np.float64) - origin
        return d @ self.ex, d @ self.ey

    def boxes(self) -> list[tuple[int, int, int, int]]:
        return [e.box for e in self.eyes]

    def displacement(self, eye: _Eye, closure: float, head: np.ndarray) -> np.ndarray:
        """Backward displacement (h, w, 2) px over the eye's box at `closure`, for a face moved by the head's
        backward displacement `head` (2,) at the eye."""
        u = eye.u + float(head @ self.ex)
        v = eye.v + float(head @ self.ey)
        brow, lash_top, top, lower, across = (np.interp(u, eye.u_knots, c).astype(np.float32)
                                              for c in (eye.brow, eye.lash_top, eye.top, eye.lower, eye.across))
        opening = lower - top
        meet = lower - LOWER_LID_RISE * opening
        edge = top + closure * (meet - top)                  # the upper lid's edge now
        low_edge = lower - closure * LOWER_LID_RISE * opening  # the lower lid's edge now
        reach = LOWER_REACH * np.maximum(opening, 1.0)
        src = v.copy()
        # the lid: its lash band narrows to a line as it comes down; the skin between it and the brow stretches
        band_src = top - lash_top
        band = band_src + closure * (LASH_BAND * opening - band_src)
        lashes = (v >= edge - band) & (v < edge)
        src[lashes] = (top - (edge - v) * band_src / np.maximum(band, 1e-3))[lashes]
        skin = (v >= brow) & (v < edge - band)
        scale = (lash_top - brow) / np.maximum(edge - band - brow, 1e-3)
        src[skin] = (brow + (v - brow) * scale)[skin]
        below = (v >= low_edge) & (v < lower + reach)
        stretch = reach / np.maximum(lower + reach - low_edge, 1e-3)
        src[below] = (lower + (v - low_edge) * stretch)[below]
        shift = (src - v) * across
        return shift[..., None] * self.ey.astype(np.float32)[None, None, :]

    def lash_mask(self, eye: _Eye, closure: float, head: np.ndarray) -> np.ndarray:
        """0..1 (h, w): a soft dark line along the moving upper lid's edge. It hides the edge's pixel steps (the map
        switches from lid to eye between two pixels) and marks where the lids meet at full closure."""
        u = eye.u + float(head @ self.ex)
        v = eye.v + float(head @ self.ey)
        top, lower, across = (np.interp(u, eye.u_knots, c).astype(np.float32)
                              for c in (eye.top, eye.lower, eye.across))
        opening = lower - top
        edge = top + closure * (lower - LOWER_LID_RISE * opening - top)
        half = np.maximum(LASH_WIDTH * opening, 1.0)
        line = np.clip(1.0 - np.abs(v - edge) / half, 0.0, 1.0)
        fade = np.clip(opening / (0.5 * float(opening.max()) + 1e-3), 0.0, 1.0)  # thin toward the corners
        return line * across * fade * float(np.clip(closure / 0.2, 0.0, 1.0))


def _sorted(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(keys)
    return keys[order], values[order]
