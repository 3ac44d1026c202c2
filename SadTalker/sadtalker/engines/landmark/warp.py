"""Dense face warp driven by the face mesh: a few precomputed displacement fields (jaw, lip width, blink, head
roll/shift/scale) restricted to the face region, mixed per frame and applied with one remap; the open mouth is
painted as a dark cavity with a hint of upper teeth."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

from sadtalker.engines.landmark.eyes import Eyelids
from sadtalker.landmarks import facemesh as fm

logger = logging.getLogger(__name__)

# Control order of the coefficient vector given to FaceWarper.render.
JAW, WIDTH, BLINK, ROLL, SHIFT_X, SHIFT_Y, SCALE = range(7)
NUM_CONTROLS = 7
# Inside the warper a negative width (rounded lips) drives a field of its own: WIDTH holds max(width, 0) (spread),
# ROUND max(-width, 0).
ROUND = 7
NUM_FIELDS = 8
HEAD = slice(ROLL, SCALE + 1)
LOCAL = [JAW, WIDTH, BLINK, ROUND]

JAW_UNIT = 0.05         # lower-lip drop at jaw coefficient 1 (calm speech's widest), fraction of the face height
UPPER_LIP_RISE = 0.12   # the upper lip moves up by this share of the jaw drop
SPLIT_SHARE = 0.8       # the lips part this far from the upper inner lip toward the lower one
CORNER_SHARE = 0.4      # the lip corners follow the jaw by this much
WIDTH_UNIT = 0.07       # lip-corner shift at width coefficient 1, fraction of the mouth width
ROUND_GATHER = 0.3      # rounded lips: the lips gather toward the middle by this share of their width (the skin
                        # around them less, with distance) ...
ROUND_POUT = 0.03       # ... and the outer lips move apart by this share of the mouth width (pout)
EDGE_RAMP = 0.3         # displacements fall to zero over this share of the face height toward the picture's edge
CAVITY_RGB = np.array([34, 12, 14], np.float32)       # deep inside the mouth
CAVITY_EDGE_RGB = np.array([96, 40, 42], np.float32)  # just inside the lips
TONGUE_RGB = np.array([150, 68, 72], np.float32)
TEETH_RGB = np.array([196, 188, 176], np.float32)


@dataclass(frozen=True)
class FaceGeometry:
    """Face axes and sizes from the mesh (image pixels)."""

    ex: np.ndarray      # (2,) unit vector from the person's right eye to the left eye
    ey: np.ndarray      # (2,) unit vector pointing down the face
    height: float       # forehead (10) to chin (152)
    mouth_width: float  # outer lip corners
    centre: np.ndarray  # (2,) mid-point of forehead and chin

    @classmethod
    def from_mesh(cls, xy: np.ndarray) -> "FaceGeometry":
        right = xy[[fm.RIGHT_EYE_OUTER, fm.RIGHT_EYE_INNER]].mean(0)
        left = xy[[fm.LEFT_EYE_OUTER, fm.LEFT_EYE_INNER]].mean(0)
        ex = (left - right) / max(np.linalg.norm(left - right), 1e-6)
        ey = np.array([-ex[1], ex[0]])
        height = float(np.linalg.norm(xy[fm.CHIN] - xy[fm.FOREHEAD]))
        mouth = float(np.linalg.norm(xy[291] - xy[61]))
        return cls(ex=ex, ey=ey, height=max(height, 8.0), mouth_width=max(mouth, 2.0),
                   centre=(xy[fm.CHIN] + xy[fm.FOREHEAD]) / 2)

    def local(self, xy: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = xy - origin
        return d @ self.ex, d @ self.ey


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


class FaceWarper:
    """Precomputes the control fields for one framed portrait, then renders frames from control coefficients.

    Fields are backward displacements (output pixel -> where to sample the portrait) on a grid `step` times coarser
    than the output, over the face region only; everything outside that region is the untouched portrait.
    """

    def __init__(self, image: np.ndarray, mesh: np.ndarray, step: int = 2) -> None:
        self.image = np.ascontiguousarray(image)
        if image.shape[0] % 2 or image.shape[1] % 2:
            raise ValueError(f"the framed portrait needs even dimensions; got {image.shape[1]}x{image.shape[0]}")
        if step not in (2, 4):
            raise ValueError(f"step must be 2 or 4; got {step}")
        self.xy = np.asarray(mesh, np.float64)[:, :2]
        self.geo = FaceGeometry.from_mesh(self.xy)
        self.step = step
        h, w = image.shape[:2]
        fh = self.geo.height
        # 1. the face region: the head (face, hair) and the neck around it, in whole steps
        corners = self.xy[list(fm.FACE_OVAL)]
        lo = corners.min(0) - np.array([0.75, 0.95]) * fh
        hi = corners.max(0) + np.array([0.75, 0.75]) * fh
        x0, y0 = (np.maximum(np.floor(lo / step) * step, 0)).astype(int)
        x1, y1 = np.minimum(np.ceil(hi / step) * step, [w, h]).astype(int)
        self.roi = (int(x0), int(y0), int(x1), int(y1))
        rw, rh = x1 - x0, y1 - y0
        gw, gh = -(-rw // step), -(-rh // step)
        # coarse grid points in image coordinates (matching cv2.resize's pixel-centre convention)
        gx = x0 + (np.arange(gw) + 0.5) * step - 0.5
        gy = y0 + (np.arange(gh) + 0.5) * step - 0.5
        self.grid = np.stack(np.meshgrid(gx, gy), axis=-1).astype(np.float32)  # (gh, gw, 2)
        self.full_shape = (rh, rw)
        pad_x = x0 + (np.arange(-1, gw + 1) + 0.5) * step - 0.5
        pad_y = y0 + (np.arange(-1, gh + 1) + 0.5) * step - 0.5
        self.coarse_abs = np.stack(np.meshgrid(pad_x, pad_y), axis=-1).astype(np.float32)  # (gh + 2, gw + 2, 2)
        self.yuv = cv2.cvtColor(self.image, cv2.COLOR_RGB2YUV_I420)
        planes = _planes(self.yuv, h, w)
        self.y_src, self.u_src, self.v_src = (np.ascontiguousarray(p) for p in planes)
        # 2. the line the lips part along: between the inner lips, near the lower one (a smile that shows the upper
        # teeth keeps them with the upper jaw); two rows of support points just above and below it let the field
        # split there sharply
        upper, lower = list(fm.UPPER_INNER_LIP), list(fm.LOWER_INNER_LIP)
        self.split = (self.xy[upper] + SPLIT_SHARE * (self.xy[lower] - self.xy[upper])).astype(np.float32)  # (11, 2)
        rest_gap = float(np.linalg.norm(self.xy[14] - self.xy[13]))
        split_rows = []
        if rest_gap > 2.0:
            eps = min(0.5, 0.1 * rest_gap) * self.geo.ey
            split_rows = [self.split[1:-1] - eps, self.split[1:-1] + eps]
        n_split = sum(len(r) for r in split_rows)
        # 3. mesh over the region: landmarks, split rows, a ring around the face and the region border (fixed)
        self.points = np.concatenate([self.xy, *split_rows, self._support_points()])
        self.triangles = Delaunay(self.points).simplices.astype(np.int32)
        # 4. fields, (K, gh, gw, 2) backward, and the forward motion of the inner-lip points per control
        disp = np.zeros((NUM_FIELDS, len(self.points), 2))
        disp[JAW, :468] = self._jaw_displacement()
        disp[WIDTH, :468] = self._width_displacement()
        disp[ROUND, :468] = self._round_displacement()
        if n_split:
            n = n_split // 2
            disp[:, 468:468 + n] = disp[:, upper[1:-1]]
            disp[:, 468 + n:468 + 2 * n] = disp[:, lower[1:-1]]
        fields = np.zeros((NUM_FIELDS, gh, gw, 2), np.float32)
        for k in (JAW, WIDTH, ROUND):
            fields[k] = self._backward_field(disp[k])
        head_fields, head_disp = self._head_fields()
        fields[HEAD] = head_fields
        disp[HEAD, :468] = head_disp
        fields *= self._edge_taper(self.grid)[None, ..., None]  # the picture's edge stays put: nothing smears in
        fields[np.abs(fields) < 1e-3] = 0.0  # no denormals (they make the per-frame sum 100x slower)
        self.fields = fields.reshape(NUM_FIELDS, -1)
        self.head_fields = np.ascontiguousarray(self.fields[HEAD])
        self.local_fields = np.ascontiguousarray(self.fields[LOCAL])
        self.coarse_shape = (gh, gw)
        mouth = self.xy[list(fm.UPPER_OUTER_LIP + fm.LOWER_OUTER_LIP)]
        self._upsampled_cache: dict[int, np.ndarray] = {}
        self.details = [d for d in (self._detail(disp, mouth, 0.04 * fh + JAW_UNIT * fh * 1.2),) if d is not None]
        self._upsampled_cache = {}
        # blinks: an exact per-pixel map over each eye (the lids slide over the eye), moved with the head
        self.eyelids = Eyelids(self.image, self.xy, self.geo.ex, self.geo.ey, self.roi)
        # the gap opens along the split line: its upper side moves with the upper lip, its lower side with the lower
        self.lip_disp_upper = disp[:, upper].astype(np.float32)                         # (K, 11, 2)
        self.lip_disp_lower = disp[:, lower].astype(np.float32)
        self.rest_gap = float(np.linalg.norm(self.xy[14] - self.xy[13]))
        # a black-and-white portrait gets a grey mouth
        channels = self.image[::4, ::4].astype(np.int16)
        grey = float(np.abs(channels - channels.mean(2, keepdims=True)).mean()) < 2.0
        to_grey = (lambda c: np.full(3, c @ np.array([0.299, 0.587, 0.114]), np.float32)) if grey else (lambda c: c)
        self.palette = (to_grey(CAVITY_RGB), to_grey(CAVITY_EDGE_RGB), to_grey(TEETH_RGB), to_grey(TONGUE_RGB))
        # a portrait with the lips already apart shows its own teeth; the drawn hint is for closed mouths
        self.teeth_hint = float(np.clip(1.0 - (self.rest_gap / self.geo.height - 0.01) / 0.02, 0.0, 1.0))
        # ... and its teeth part first (stretching) before a dark gap shows between them; a thin dark line across
        # visible teeth reads as closed lips
        self.cavity_start = (1.0 - self.teeth_hint) * 0.15 * self.rest_gap
        self.cavity_ramp = max(2.5, 0.5 * self.cavity_start)

    # -- support mesh -------------------------------------------------------------------------------------------
    def _support_points(self) -> np.ndarray:
        """A ring around the face and points along the region border, all fixed."""
        x0, y0, x1, y1 = self.roi
        oval = self.xy[list(fm.FACE_OVAL)]
        centre = self.xy[fm.NOSE_TIP]
        ring = centre + (oval - centre) * 1.55
        n = 10
        xs = np.linspace(x0, x1 - 1, n)
        ys = np.linspace(y0, y1 - 1, n)
        border = np.concatenate([np.stack([xs, np.full(n, y0)], 1), np.stack([xs, np.full(n, y1 - 1)], 1),
                                 np.stack([np.full(n, x0), ys], 1), np.stack([np.full(n, x1 - 1), ys], 1)])
        ring = ring[(ring[:, 0] > x0 + 2) & (ring[:, 0] < x1 - 3) & (ring[:, 1] > y0 + 2) & (ring[:, 1] < y1 - 3)]
        return np.concatenate([ring, border])

    # -- per-vertex forward displacements at coefficient 1 --------------------------------------------------------
    def _jaw_displacement(self) -> np.ndarray:
        """Lower lip, chin and jaw drop along the face's down axis; the upper lip rises a little."""
        geo, xy = self.geo, self.xy
        mouth_c = (xy[78] + xy[308]) / 2
        u, v = geo.local(xy, mouth_c)
        up_u, up_v = geo.local(xy[list(fm.UPPER_INNER_LIP)], mouth_c)
        lo_u, lo_v = geo.local(xy[list(fm.LOWER_INNER_LIP)], mouth_c)
        order = np.argsort(up_u)
        line = np.interp(u, up_u[order], ((up_v + lo_v) / 2)[order])  # the lip line, flat beyond the corners
        half_mouth = geo.mouth_width / 2
        oval_u, _ = geo.local(xy[list(fm.FACE_OVAL)], mouth_c)
        jaw_half = max(float(np.abs(oval_u).max()), half_mouth * 1.2)
        across = np.clip(1.0 - (np.abs(u) / jaw_half) ** 2.5, 0.0, 1.0)
        outside = np.maximum(np.abs(u) - half_mouth, 0.0)
        band = np.maximum(outside * 1.2, 1e-3)
        below = np.where(outside > 0, _smoothstep(0.5 + (v - line) / (2 * band)), (v > line).astype(float))
        # right under the lips the drop follows the lens shape of the opening (corners anchored); further down the
        # jaw moves as one piece; a smooth blend between the two keeps the mesh from folding under the lip corners
        lens = CORNER_SHARE + (1.0 - CORNER_SHARE) * np.clip(1.0 - (u / half_mouth) ** 2, 0.0, 1.0)
        rigid = _smoothstep((v - line) / (0.2 * geo.height))
        weight = across * below * (lens + (1.0 - lens) * rigid)
        # the lips part most in the middle and stay joined at the corners (a lens-shaped opening)
        for lips, sign in ((fm.LOWER_INNER_LIP, 1.0), (fm.LOWER_OUTER_LIP, 1.0),
                           (fm.UPPER_INNER_LIP, -UPPER_LIP_RISE), (fm.UPPER_OUTER_LIP, -UPPER_LIP_RISE)):
            idx = list(lips[1:-1])
            taper = np.clip(1.0 - (np.abs(u[idx]) / half_mouth) ** 2, 0.0, 1.0)
            weight[idx] = sign * (CORNER_SHARE + (1.0 - CORNER_SHARE) * taper) if sign > 0 else sign * taper
        weight[[61, 291, 78, 308]] = CORNER_SHARE
        return weight[:, None] * geo.ey[None] * (JAW_UNIT * geo.height)

    def _width_displacement(self) -> np.ndarray:
        """Lip corners and the skin around them move outward (wide) along the eye axis."""
        geo, xy = self.geo, self.xy
        mouth_c = (xy[61] + xy[291]) / 2
        u, _ = geo.local(xy, mouth_c)
        sigma = 0.4 * geo.mouth_width
        d = np.minimum(np.linalg.norm(xy - xy[61], axis=1), np.linalg.norm(xy - xy[291], axis=1))
        weight = np.exp(-(d / sigma) ** 2) * np.sign(u)
        return weight[:, None] * geo.ex[None] * (WIDTH_UNIT * geo.mouth_width)

    def _round_displacement(self) -> np.ndarray:
        """Rounded lips (o, u): the lips gather toward the middle, corners and all, so the opening narrows into an
        oval; the lips pout a little (upper up, lower down); the cheeks beside them follow."""
        geo, xy = self.geo, self.xy
        mouth_c = (xy[61] + xy[291]) / 2
        u, v = geo.local(xy, mouth_c)
        half = geo.mouth_width / 2
        near = np.exp(-(np.maximum(np.hypot(np.maximum(np.abs(u) - half, 0.0), v) / (0.5 * half), 0.0)) ** 2)
        gather = ROUND_GATHER * near
        gather[list(fm.UPPER_INNER_LIP + fm.LOWER_INNER_LIP + fm.UPPER_OUTER_LIP + fm.LOWER_OUTER_LIP)] = ROUND_GATHER
        pout = np.zeros(len(xy))
        pout[list(fm.UPPER_OUTER_LIP[1:-1])] = -ROUND_POUT
        pout[list(fm.LOWER_OUTER_LIP[1:-1])] = ROUND_POUT
        taper = np.clip(1.0 - (u / half) ** 2, 0.0, 1.0)
        return (-(gather * u)[:, None] * geo.ex[None] + (pout * taper * geo.mouth_width)[:, None] * geo.ey[None])

    # -- fields -------------------------------------------------------------------------------------------------
    def _backward_field(self, disp: np.ndarray, grid: np.ndarray | None = None, origin: np.ndarray | None = None,
                        step: float | None = None) -> np.ndarray:
        """For each grid point of the output, where to sample the portrait minus where it is: the support mesh is
        drawn at its displaced (output) position and each triangle maps back affinely to its rest place.

        The grid defaults to the coarse one; another grid is given with the image point of its pixel (0, 0) and
        its spacing."""
        if grid is None:
            grid, step = self.grid, self.step
            origin = self.grid[0, 0]
        gh, gw = grid.shape[:2]
        field = np.zeros((gh, gw, 2), np.float32)
        moving = np.abs(disp).sum(1) > 1e-6
        tris = self.triangles[moving[self.triangles].any(1)]
        if len(tris) == 0:
            return field
        src = self.points
        dst = self.points + disp
        labels = np.zeros((gh, gw), np.int32)
        raster = (dst - np.asarray(origin, np.float64)) / step  # grid pixel coordinates of the displaced points
        corners = raster[tris]                                   # (T, 3, 2)
        inside = ((corners[..., 0].max(1) >= -1) & (corners[..., 0].min(1) <= gw) &
                  (corners[..., 1].max(1) >= -1) & (corners[..., 1].min(1) <= gh))
        tris, corners = tris[inside], corners[inside]
        if len(tris) == 0:
            return field
        fixed = np.round(corners * 16).astype(np.int32)          # 4 fractional bits for fillConvexPoly
        for t, pts in enumerate(fixed, start=1):
            cv2.fillConvexPoly(labels, pts, t, lineType=cv2.LINE_8, shift=4)
        ii, jj = np.nonzero(labels)
        tri = tris[labels[ii, jj] - 1]                                 # (M, 3)
        p = grid[ii, jj].astype(np.float64)                            # (M, 2) output points
        a, b, c = dst[tri[:, 0]], dst[tri[:, 1]], dst[tri[:, 2]]
        v0, v1, v2 = b - a, c - a, p - a
        den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
        ok = np.abs(den) > 1e-9
        den = np.where(ok, den, 1.0)
        beta = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
        gamma = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
        alpha = 1.0 - beta - gamma
        # grid points that the rasteriser put just outside a thin triangle would extrapolate wildly: clamp them to
        # the triangle
        bary = np.clip(np.stack([alpha, beta, gamma], axis=1), 0.0, 1.0)
        bary /= np.maximum(bary.sum(1, keepdims=True), 1e-9)
        alpha, beta, gamma = bary[:, 0], bary[:, 1], bary[:, 2]
        sample = alpha[:, None] * src[tri[:, 0]] + beta[:, None] * src[tri[:, 1]] + gamma[:, None] * src[tri[:, 2]]
        field[ii, jj] = np.where(ok[:, None], sample - p, 0.0)
        return field

    def _detail(self, disp: np.ndarray, box_points: np.ndarray, margin: float) -> tuple | None:
        """Full-resolution fields of the face's own controls (jaw, width, blink) in a box around `box_points`.

        The coarse field smears sharp edges (an eyelid closing over a few pixels, the parting lips) over a coarse
        step, and the face's controls must follow the head motion; in these boxes the per-frame map gets the exact
        fields, moved with the head, instead of the upsampled coarse ones. Returns ((x0, y0, x1, y1) in ROI pixels,
        active controls (A,), exact (A, h, w, 2), upsampled coarse (A, h, w, 2), feather (h, w, 2)) or None."""
        rx0, ry0, rx1, ry1 = self.roi
        lo = np.floor(box_points.min(0) - margin).astype(int)
        hi = np.ceil(box_points.max(0) + margin).astype(int)
        bx0, by0 = max(int(lo[0]), rx0), max(int(lo[1]), ry0)
        bx1, by1 = min(int(hi[0]), rx1), min(int(hi[1]), ry1)
        if bx1 - bx0 < 16 or by1 - by0 < 16:
            return None
        grid = np.stack(np.meshgrid(np.arange(bx0, bx1, dtype=np.float32), np.arange(by0, by1, dtype=np.float32)),
                        axis=-1)
        rh, rw = self.full_shape
        gh, gw = self.coarse_shape
        exact = np.zeros((NUM_FIELDS, by1 - by0, bx1 - bx0, 2), np.float32)
        coarse = np.zeros_like(exact)
        for k in LOCAL:
            exact[k] = self._backward_field(disp[k], grid, np.array([bx0, by0], np.float64), 1.0)
            exact[k] *= self._edge_taper(grid)[..., None]
            coarse[k] = self._upsampled(k)[by0 - ry0:by1 - ry0, bx0 - rx0:bx1 - rx0]
        ramp = 6.0
        fy = np.clip(np.minimum(np.arange(by1 - by0), np.arange(by1 - by0)[::-1]) / ramp, 0.0, 1.0)
        fx = np.clip(np.minimum(np.arange(bx1 - bx0), np.arange(bx1 - bx0)[::-1]) / ramp, 0.0, 1.0)
        feather = np.repeat((fy[:, None] * fx[None, :])[..., None], 2, axis=2).astype(np.float32)
        # keep only the controls that act in this box (the eyelids in an eye box, jaw and lips in the mouth box)
        active = [k for k in LOCAL if np.abs(exact[k]).max() > 0.05 or np.abs(coarse[k]).max() > 0.05]
        if not active:
            return None
        return ((bx0 - rx0, by0 - ry0, bx1 - rx0, by1 - ry0), np.array(active), np.ascontiguousarray(exact[active]),
                np.ascontiguousarray(coarse[active]), feather)

    def _edge_taper(self, points: np.ndarray) -> np.ndarray:
        """0 within a grid step of the picture's edge, rising smoothly to 1 over EDGE_RAMP face heights: motion
        fades out toward the edge instead of pulling pixels in from beyond it (streaks in the hair in a tight
        crop). points: (..., 2) image px -> (...)."""
        h, w = self.image.shape[:2]
        x, y = points[..., 0], points[..., 1]
        dist = np.minimum(np.minimum(x + 0.5, w - 0.5 - x), np.minimum(y + 0.5, h - 0.5 - y))
        ramp = max(EDGE_RAMP * self.geo.height, 6.0 * self.step)
        return _smoothstep((dist - 1.5 * self.step) / ramp).astype(np.float32)

    def _upsampled(self, k: int) -> np.ndarray:
        """Control k's coarse field upsampled over the region, as the per-frame map does it (cached)."""
        cache = self._upsampled_cache
        if k not in cache:
            gh, gw = self.coarse_shape
            rh, rw = self.full_shape
            cache[k] = cv2.resize(self.fields[k].reshape(gh, gw, 2), (rw, rh), interpolation=cv2.INTER_LINEAR)
        return cache[k]

    def _head_mask(self, xy: np.ndarray) -> np.ndarray:
        """1 over the head (face and hair), falling smoothly to 0 around it."""
        geo = self.geo
        centre = geo.centre - 0.12 * geo.height * geo.ey
        u, v = geo.local(xy, centre)
        r = np.sqrt((u / (0.62 * geo.height)) ** 2 + (v / (0.78 * geo.height)) ** 2)
        return 1.0 - _smoothstep((r - 1.0) / 0.45)

    def _head_fields(self) -> tuple[np.ndarray, np.ndarray]:
        """Backward fields (4, gh, gw, 2) and forward vertex motion (4, 468, 2) for roll (1 radian), shift x/y
        (1 face height) and scale (+100%), about a pivot in the neck, fading out around the head."""
        geo = self.geo
        pivot = self.xy[fm.CHIN] + 0.25 * geo.height * geo.ey

        def forward(xy: np.ndarray) -> np.ndarray:
            d = xy - pivot
            mask = self._head_mask(xy)[..., None]
            roll = np.stack([-d[..., 1], d[..., 0]], axis=-1)
            shift_x = np.broadcast_to(geo.ex * geo.height, d.shape)
            shift_y = np.broadcast_to(geo.ey * geo.height, d.shape)
            return np.stack([roll * mask, shift_x * mask, shift_y * mask, d * mask])

        grid = self.grid.astype(np.float64)
        return (-forward(grid)).astype(np.float32), forward(self.xy)

    # -- rendering ----------------------------------------------------------------------------------------------
    def render(self, coeffs: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Draw one RGB frame into `out` (a copy of the portrait, (H, W, 3) uint8; only the face region is written).

        coeffs: (7,) jaw 0..~1.6, width -1..1, blink 0..1, roll (radians), shift x, shift y (face heights), scale.
        """
        coeffs = _expand(coeffs)
        x0, y0, x1, y1 = self.roi
        maps, head = self._fine_map(coeffs)
        out[y0:y1, x0:x1] = cv2.remap(self.image, maps, None, interpolation=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE)
        self._paint_lashes(out, coeffs, head)
        box = self._mouth_box(coeffs, out.shape[:2])
        if box is not None:
            (bx0, by0, bx1, by1), lips, gap = box
            out[by0:by1, bx0:bx1] = self._paint_mouth(out[by0:by1, bx0:bx1], lips - (bx0, by0), gap)
        return out

    def start_yuv(self) -> np.ndarray:
        """The portrait as I420 planes, (H * 3 // 2, W) uint8: the buffer `render_yuv` draws into."""
        return self.yuv.copy()

    def render_yuv(self, coeffs: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Like `render`, straight into I420 planes (the encoder's input): the luma is warped at full resolution,
        the chroma at half with the same map averaged over each 2x2 block, which costs about half of an RGB warp
        and spares the colour conversion."""
        coeffs = _expand(coeffs)
        h, w = self.image.shape[:2]
        x0, y0, x1, y1 = self.roi
        y_plane, u_plane, v_plane = _planes(out, h, w)
        maps, head = self._fine_map(coeffs)
        y_plane[y0:y1, x0:x1] = cv2.remap(self.y_src, maps, None, interpolation=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REPLICATE)
        # chroma pixel (i, j) covers luma pixels (2i..2i+1, 2j..2j+1); its source is their mean position, halved
        cmap = cv2.resize(maps, ((x1 - x0) // 2, (y1 - y0) // 2), interpolation=cv2.INTER_AREA)
        cmap = cv2.addWeighted(cmap, 0.5, cmap, 0.0, -0.25)
        cmap1, cmap2 = cv2.convertMaps(cmap, None, cv2.CV_16SC2)
        cy0, cx0, cy1, cx1 = y0 // 2, x0 // 2, y1 // 2, x1 // 2
        u_plane[cy0:cy1, cx0:cx1] = cv2.remap(self.u_src, cmap1, cmap2, interpolation=cv2.INTER_LINEAR,
                                              borderMode=cv2.BORDER_REPLICATE)
        v_plane[cy0:cy1, cx0:cx1] = cv2.remap(self.v_src, cmap1, cmap2, interpolation=cv2.INTER_LINEAR,
                                              borderMode=cv2.BORDER_REPLICATE)
        self._paint_lashes(y_plane, coeffs, head)
        box = self._mouth_box(coeffs, (h, w), align=4)
        if box is not None:
            (bx0, by0, bx1, by1), lips, gap = box
            bh, bw = by1 - by0, bx1 - bx0
            patch = np.concatenate([y_plane[by0:by1, bx0:bx1],
                                    u_plane[by0 // 2:by1 // 2, bx0 // 2:bx1 // 2].reshape(-1, bw),
                                    v_plane[by0 // 2:by1 // 2, bx0 // 2:bx1 // 2].reshape(-1, bw)])
            rgb = self._paint_mouth(cv2.cvtColor(patch, cv2.COLOR_YUV2RGB_I420), lips - (bx0, by0), gap)
            yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
            y_plane[by0:by1, bx0:bx1] = yuv[:bh]
            u_plane[by0 // 2:by1 // 2, bx0 // 2:bx1 // 2] = yuv[bh:bh + bh // 4].reshape(bh // 2, bw // 2)
            v_plane[by0 // 2:by1 // 2, bx0 // 2:bx1 // 2] = yuv[bh + bh // 4:].reshape(bh // 2, bw // 2)
        return out

    def _coarse_field(self, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The frame's backward field on the coarse grid, (gh, gw, 2) px, and its head-motion part."""
        gh, gw = self.coarse_shape
        head = _weighted_sum(coeffs[HEAD], self.head_fields).reshape(gh, gw, 2)   # (gh, gw, 2)
        local = _weighted_sum(coeffs[LOCAL], self.local_fields).reshape(gh, gw, 2)
        return cv2.add(head, local), head

    def _head_at(self, head: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The head's backward displacement (2,) at the centre of a box given in ROI pixels."""
        gh, gw = self.coarse_shape
        x0, y0, x1, y1 = box
        ci = min(max(int((y0 + y1) / 2 / self.step), 0), gh - 1)
        cj = min(max(int((x0 + x1) / 2 / self.step), 0), gw - 1)
        return head[ci, cj].astype(np.float64)

    def _fine_map(self, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Absolute sample positions (rh, rw, 2) over the ROI, every one inside the portrait, and the coarse head
        field (gh, gw, 2) they were made with."""
        total, head = self._coarse_field(coeffs)
        gh, gw = self.coarse_shape
        rh, rw = self.full_shape
        h, w = self.image.shape[:2]
        rx0, ry0 = self.roi[:2]
        # absolute sample positions on a coarse grid padded by one cell (zero motion there), upsampled: bilinear
        # interpolation of the grid's linear positions is exact, so this equals upsampling the motion alone
        padded = self.coarse_abs.copy()  # a copy per frame: frames may render in parallel threads
        padded[1:-1, 1:-1] = cv2.add(total, self.grid)
        # never sample beyond the portrait: the grid is clamped inside it, and the padding ring (at rest) only
        # meets grid points that the edge taper keeps at rest, so the interpolated map stays inside too
        _clamp(padded[1:-1, 1:-1], w, h)
        s = self.step
        maps = cv2.resize(padded, ((gw + 2) * s, (gh + 2) * s), interpolation=cv2.INTER_LINEAR)
        maps = maps[s:s + rh, s:s + rw]                                        # (rh, rw, 2)
        for (x0, y0, x1, y1), active, exact, upsampled, feather in self.details:
            local = coeffs[active]
            if not local.any():
                continue
            # the face's own deformation is defined on the face at rest; the head carries it: local(x + head(x)),
            # with the head motion taken at the box centre (whole and sub-pixel)
            hx, hy = -self._head_at(head, (x0, y0, x1, y1))
            if len(active) == 1:
                wanted, current = exact[0] * local[0], upsampled[0] * local[0]
            else:
                wanted, current = _weighted_sum(local, exact), _weighted_sum(local, upsampled)
            if hx or hy:
                wanted = cv2.warpAffine(wanted, np.array([[1, 0, hx], [0, 1, hy]]), (x1 - x0, y1 - y0),
                                        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            maps[y0:y1, x0:x1] += cv2.multiply(cv2.subtract(wanted, current), feather)
            _clamp(maps[y0:y1, x0:x1], w, h)
        closure = float(coeffs[BLINK])
        if closure > 0.0:
            for eye in self.eyelids.eyes:
                bx0, by0, bx1, by1 = eye.box
                box = (bx0 - rx0, by0 - ry0, bx1 - rx0, by1 - ry0)
                region = maps[box[1]:box[3], box[0]:box[2]]
                region += self.eyelids.displacement(eye, closure, self._head_at(head, box))
                _clamp(region, w, h)
        return maps, head

    def _paint_lashes(self, out: np.ndarray, coeffs: np.ndarray, head: np.ndarray) -> None:
        """Darken the line where the closing lids meet toward the portrait's lash tone (RGB or luma, in place)."""
        closure = float(coeffs[BLINK])
        if closure <= 0.3:
            return
        rx0, ry0 = self.roi[:2]
        for eye in self.eyelids.eyes:
            bx0, by0, bx1, by1 = eye.box
            at = self._head_at(head, (bx0 - rx0, by0 - ry0, bx1 - rx0, by1 - ry0))
            mask = self.eyelids.lash_mask(eye, closure, at)
            region = out[by0:by1, bx0:bx1]
            # darker in proportion (the skin's hue kept) toward the portrait's lash tone
            gain = 1.0 - mask * (1.0 - eye.lash_ratio)
            if region.ndim == 3:
                gain = gain[..., None]
            out[by0:by1, bx0:bx1] = np.clip(region * gain + 0.5, 0, 255).astype(np.uint8)

    def opening_size(self, coeffs: np.ndarray) -> tuple[float, float]:
        """The lip opening for these controls, (width between its corners, height in its middle) in px."""
        c = _expand(coeffs)
        upper = self.split + (c[:, None, None] * self.lip_disp_upper).sum(0)
        lower = self.split + (c[:, None, None] * self.lip_disp_lower).sum(0)
        mid = len(upper) // 2
        return (float(np.linalg.norm(upper[-1] - upper[0])),
                max(0.0, float(((lower[mid] - upper[mid]) * self.geo.ey).sum())))

    def _mouth_box(self, coeffs: np.ndarray, shape: tuple[int, int], align: int = 1):
        """Where the mouth gap is in this frame: box (x0, y0, x1, y1) aligned to `align`, the gap outline (the
        upper side, then the lower side backwards) in image px, and the gap height; None while it is closed."""
        upper = self.split + (coeffs[:, None, None] * self.lip_disp_upper).sum(0)  # (11, 2)
        lower = self.split + (coeffs[:, None, None] * self.lip_disp_lower).sum(0)
        mid = len(upper) // 2
        gap = float(((lower[mid] - upper[mid]) * self.geo.ey).sum())
        if gap < max(0.6, self.cavity_start):
            return None
        lips = np.concatenate([upper, lower[-2:0:-1]])
        h, w = shape
        lo = (np.floor(lips.min(0)).astype(int) - 4) // align * align
        hi = -(-(np.ceil(lips.max(0)).astype(int) + 5) // align) * align
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, [w - w % align, h - h % align])
        if np.any(hi - lo < max(align, 2)):
            return None
        return (int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])), lips, gap

    def _paint_mouth(self, patch: np.ndarray, lips: np.ndarray, gap: float) -> np.ndarray:
        """The inside of the open mouth, in the gap outline (patch px): a dark cavity, darkest at the back and in
        the upper lip's shadow; the tongue low behind the lower teeth; upper teeth (for portraits with closed lips;
        others keep their own) and lower teeth once the mouth is open enough, lit less the narrower the opening
        and toward the corners, with faint gaps between the teeth."""
        n_up = len(self.split)
        bh, bw = patch.shape[:2]
        mw = self.geo.mouth_width
        strength = float(np.clip((gap - self.cavity_start) / self.cavity_ramp, 0.0, 1.0))
        mask = np.zeros((bh, bw), np.uint8)
        cv2.fillPoly(mask, [np.round(lips * 4).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=2)
        cavity = mask.astype(np.float32) * (1.0 / 255.0)
        # per column: the upper and lower edge of the gap; q: -1..1 across the opening
        upper = lips[:n_up]
        lower = np.concatenate([upper[:1], lips[n_up:][::-1], upper[-1:]])
        xs = np.arange(bw, dtype=np.float32)
        top = np.interp(xs, *_increasing(upper[:, 0], upper[:, 1]))
        bottom = np.interp(xs, *_increasing(lower[:, 0], lower[:, 1]))
        centre_x = (upper[0, 0] + upper[-1, 0]) / 2
        inner_half = max(abs(float(upper[-1, 0] - upper[0, 0])) / 2, 1.0)
        q = np.clip((xs - centre_x) / inner_half, -1.0, 1.0)[None, :]                  # (1, bw)
        ys = np.arange(bh, dtype=np.float32)[:, None]
        below_top = ys - top[None, :]                                                  # (bh, bw) px under the upper edge
        above_bottom = bottom[None, :] - ys                                            # px over the lower edge
        height = np.maximum(bottom - top, 1e-3)[None, :]
        inner, edge, teeth_rgb, tongue_rgb = self.palette
        open_light = 0.55 + 0.45 * float(np.clip(gap / (0.25 * mw), 0.0, 1.0))    # a wider opening lets light in
        # 1. the cavity: lighter and redder just inside the lips and at the corners, dark at the back, darker still
        # in the upper lip's shadow
        middle = 1.0 - q * q
        depth = np.clip(middle * np.clip(np.minimum(below_top, above_bottom) / (0.2 * height + 1.0), 0.0, 1.0), 0, 1)
        shadow = np.exp(-np.clip(below_top, 0.0, None) / (0.3 * height + 1.0))
        colour = edge + (inner - edge) * depth[..., None]
        colour = colour * (1.0 - 0.45 * shadow)[..., None]
        # 2. the tongue: a low rounded hump over the middle of the floor, lit on its top
        tongue_h = 0.38 * height * np.sqrt(np.clip(1.0 - (q / 0.8) ** 2, 0.0, 1.0))
        tongue_vis = float(np.clip((gap - 0.05 * mw) / (0.08 * mw), 0.0, 1.0))
        if tongue_vis > 0:
            into = (tongue_h - above_bottom + 0.5)                                      # px into the hump
            tongue = np.clip(into, 0.0, 1.0) * tongue_vis
            lit = np.clip(1.0 - into / (tongue_h + 1.0), 0.0, 1.0)                    # its upper surface
            tongue_colour = tongue_rgb * (0.6 + 0.5 * lit)[..., None] * open_light
            colour = colour + (tongue_colour - colour) * tongue[..., None]
        # 3. teeth: upper under the upper lip (portraits with closed lips), lower over the lower lip
        teeth = np.zeros((bh, bw), np.float32)
        shade = np.zeros((bh, bw), np.float32)
        upper_h = min(0.4 * gap, 0.12 * mw) * self.teeth_hint
        if upper_h > 0.5:
            band = np.clip(upper_h - below_top + 0.5, 0.0, 1.0) * np.clip(below_top + 0.5, 0.0, 1.0)
            band *= np.clip((0.85 - np.abs(q)) / 0.25, 0.0, 1.0)
            teeth = np.maximum(teeth, band)
            shade = np.where(band > 0, 1.0 - 0.25 * np.clip(below_top / upper_h, 0.0, 1.0), shade)
        lower_h = min(0.22 * gap, 0.07 * mw) * float(np.clip((gap - 0.07 * mw) / (0.05 * mw), 0.0, 1.0))
        if lower_h > 0.5:
            band = np.clip(lower_h - above_bottom + 0.5, 0.0, 1.0) * np.clip(above_bottom + 0.5, 0.0, 1.0)
            band *= np.clip((0.6 - np.abs(q)) / 0.2, 0.0, 1.0)
            teeth = np.maximum(teeth, band)
            shade = np.where(band > 0, 0.95 - 0.15 * np.clip(above_bottom / lower_h, 0.0, 1.0), shade)
        if teeth.any():
            # faint gaps where the incisors and canines meet (at these fractions of the half opening)
            gaps = np.zeros_like(q)
            for at in (0.0, 0.3, -0.3, 0.56, -0.56, 0.78, -0.78):
                gaps = np.maximum(gaps, np.clip(1.0 - np.abs(q - at) * inner_half / 0.7, 0.0, 1.0))
            light = shade * (1.0 - 0.4 * q * q) * (1.0 - 0.3 * gaps) * open_light
            colour = colour + (teeth_rgb * light[..., None] - colour) * teeth[..., None]
        # the gap narrows into the lip corners instead of spilling past them
        corner_fade = np.clip((1.0 - np.abs(q)) / 0.25, 0.0, 1.0)
        a = (cavity * corner_fade * strength)[..., None]
        out = patch.astype(np.float32) * (1.0 - a) + colour * a
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _increasing(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x)
    return x[order], y[order]


def _expand(coeffs: np.ndarray) -> np.ndarray:
    """The 7 controls -> the warper's 8 field weights (width split into spread and round)."""
    out = np.zeros(NUM_FIELDS, np.float32)
    out[:NUM_CONTROLS] = np.asarray(coeffs, np.float32)[:NUM_CONTROLS]
    out[WIDTH], out[ROUND] = max(out[WIDTH], 0.0), max(-out[WIDTH], 0.0)
    return out


def _weighted_sum(coeffs: np.ndarray, arrays: np.ndarray) -> np.ndarray:
    """sum_k coeffs[k] * arrays[k] with OpenCV's single-pass kernels: a BLAS call here would wake OpenBLAS's
    spinning worker threads every frame and take the CPU the video encoder needs."""
    out = np.zeros(arrays.shape[1:], np.float32)
    for c, a in zip(coeffs.tolist(), arrays):
        if c != 0.0:
            out = cv2.scaleAdd(a, c, out)
    return out


def _clamp(maps: np.ndarray, w: int, h: int) -> None:
    """Keep absolute sample positions (..., 2) inside a w x h picture, in place."""
    np.clip(maps[..., 0], 0.0, w - 1.0, out=maps[..., 0])
    np.clip(maps[..., 1], 0.0, h - 1.0, out=maps[..., 1])


def _planes(buf: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y (h, w), U and V (h/2, w/2) planes of an I420 buffer (h * 3 // 2, w)."""
    flat = buf.reshape(-1)
    y = flat[: h * w].reshape(h, w)
    u = flat[h * w: h * w + h * w // 4].reshape(h // 2, w // 2)
    v = flat[h * w + h * w // 4:].reshape(h // 2, w // 2)
    return y, u, v
