"""Source portrait -> what every frame reuses (the original's AvatarRegistrar + Source2Info, image sources).

1. a 512x512 crop aligned on the eyes-to-lip axis (scale 2.3, shifted up by 0.125 of its size) and its inverse
   transform M_c2o for the paste-back; 2. eye-open / eye-ball conditions from 478 face landmarks of the crop;
3. the crop at 256 (INTER_AREA); 4. the motion extractor's pose/expression/keypoints and the appearance volume f_s.
The crop geometry reproduces the original's arithmetic (float32 where it uses float32) so that the same landmarks
give the same pixels.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from math import acos, cos, sin
from typing import Protocol

import cv2
import numpy as np
import torch

from sadtalker.engines.ditto.face_landmarks import CropLandmarks
from sadtalker.nets.ditto.appearance_extractor import AppearanceFeatureExtractor
from sadtalker.nets.ditto.motion_extractor import MotionExtractor

logger = logging.getLogger(__name__)

F32 = np.float32


@dataclass(frozen=True)
class CropOptions:
    """The original's defaults (StreamSDK.setup: crop_scale, crop_vy_ratio, crop_flag_do_rot)."""

    size: int = 512
    scale: float = 2.3
    vy_ratio: float = -0.125   # (the original also takes crop_vx_ratio but never passes it on: always 0)
    rotate: bool = True


def fit_source_image(image: np.ndarray, max_dim: int = 1920) -> np.ndarray:
    """The original loader's resizing: the longer side down to `max_dim` (if larger), then both sides made even
    (cv2.resize, bilinear). The result is the frame that paste-back draws into."""
    h, w = image.shape[:2]
    new_h, new_w = h, w
    if max_dim > 0 and max(h, w) > max_dim:
        if h > w:
            new_h, new_w = max_dim, round(w * max_dim / h)
        else:
            new_h, new_w = round(h * max_dim / w), max_dim
    new_h, new_w = new_h - new_h % 2, new_w - new_w % 2
    if (new_h, new_w) == (h, w):
        return image
    return cv2.resize(image, (new_w, new_h))


def landmarks203_reference(points: np.ndarray) -> CropLandmarks:
    """The original's reading of its 203-point landmarks: eye centres from points 0/6/12/18 and 24/30/36/42, lip
    centre from 48 and 66, extent from all points."""
    return CropLandmarks(points=points, eye_left=np.mean(points[[0, 6, 12, 18]], axis=0),
                         eye_right=np.mean(points[[24, 30, 36, 42]], axis=0), lip=(points[48] + points[66]) / 2)


def crop_rect(ref: CropLandmarks, scale: float, vx_ratio: float, vy_ratio: float) -> tuple[np.ndarray, np.floating,
                                                                                             float]:
    """Centre, side and roll angle (radians) of the square crop: y axis from the eyes' midpoint to the lip centre,
    side = the larger extent of the points in that frame x scale, centre shifted by (vx, vy) x side."""
    eyes = (ref.eye_left + ref.eye_right) / 2
    uy = ref.lip - eyes
    length = np.linalg.norm(uy)
    uy = np.array([0, 1], dtype=F32) if length <= 1e-3 else uy / length
    ux = np.array((uy[1], -uy[0]), dtype=F32)
    angle = acos(ux[0]) if ux[1] >= 0 else -acos(ux[0])
    frame = np.array([ux, uy])                                        # rows: the crop's x and y axes
    centre0 = np.mean(ref.points, axis=0)
    local = (ref.points - centre0) @ frame.T
    lo, hi = np.min(local, axis=0), np.max(local, axis=0)
    mid = (lo + hi) / 2
    side = np.max(hi - lo) * scale
    centre = centre0 + ux * mid[0] + uy * mid[1]
    centre = centre + ux * (vx_ratio * side) + uy * (vy_ratio * side)
    return centre, side, angle


def crop_transform(ref: CropLandmarks, options: CropOptions = CropOptions()) -> np.ndarray:
    """(2, 3) float32 affine from the image to the crop (the original's M_INV / M_o2c[:2])."""
    centre, side, angle = crop_rect(ref, options.scale, 0.0, options.vy_ratio)
    s = options.size / side
    tc = np.array([options.size / 2, options.size / 2], dtype=F32)
    cx, cy = centre[0], centre[1]
    if options.rotate:
        c, n = cos(angle), sin(angle)
        rows = [[s * c, s * n, tc[0] - s * (c * cx + n * cy)], [-s * n, s * c, tc[1] - s * (-n * cx + c * cy)]]
    else:
        rows = [[s, 0, tc[0] - s * cx], [0, s, tc[1] - s * cy]]
    return np.array(rows, dtype=F32)


@dataclass(frozen=True)
class SourceCrop:
    image: np.ndarray     # (512, 512, 3) uint8 RGB
    M_o2c: np.ndarray     # (3, 3) float32 image -> crop
    M_c2o: np.ndarray     # (3, 3) float32 crop -> image (paste-back)


def crop_source(image: np.ndarray, ref: CropLandmarks, options: CropOptions = CropOptions()) -> SourceCrop:
    m = crop_transform(ref, options)
    crop = cv2.warpAffine(image, m, (options.size, options.size), flags=cv2.INTER_LINEAR)
    m_o2c = np.vstack([m, np.array([0, 0, 1], dtype=F32)])
    return SourceCrop(image=crop, M_o2c=m_o2c, M_c2o=np.linalg.inv(m_o2c))


def eye_conditions(lmk478: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eye openness (1, 2) and iris displacement (1, 6) from (1, 478, 3) normalised landmarks (the original's
    EyeAttrUtilsByMP: LR_open, LR_ball_move), first the person's right eye (mesh 33/133, iris 468), then the left."""
    pts = np.asarray(lmk478)

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return ((a - b) ** 2).sum(-1) ** 0.5

    def direction(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a - b) / (dist(a, b)[:, None] + 1e-8)

    def one_eye(outer: int, inner: int, lids: tuple[tuple[int, int], ...], iris: int) -> tuple[np.ndarray, np.ndarray]:
        width = dist(pts[:, outer], pts[:, inner])
        heights = [dist(pts[:, lower], pts[:, upper]) for lower, upper in lids]
        openness = (heights[0] + heights[1] + heights[2]) / (width + 1e-8)
        centre = (pts[:, outer] + pts[:, inner]) * 0.5
        ball = pts[:, iris]
        move = (direction(ball, centre) - direction(pts[:, outer], pts[:, inner])) * dist(ball, centre)[:, None]
        return openness, move

    r_open, r_move = one_eye(33, 133, ((145, 159), (144, 160), (153, 158)), 468)
    l_open, l_move = one_eye(263, 362, ((374, 386), (373, 387), (380, 385)), 473)
    return np.stack([r_open, l_open], -1).reshape(-1, 2), np.stack([r_move, l_move], -1).reshape(-1, 6)


def crop_to_input(crop: np.ndarray) -> np.ndarray:
    """(512, 512, 3) uint8 -> (1, 3, 256, 256) float32 in 0..1 (INTER_AREA resize)."""
    small = cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA)
    return (small.astype(F32) / 255.0)[None].transpose(0, 3, 1, 2)


class Landmarker(Protocol):
    def crop_landmarks(self, image: np.ndarray) -> CropLandmarks: ...

    def landmarks478(self, image: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class SourceInfo:
    """Everything the later stages read from the source (the original's source_info for one image)."""

    frame: np.ndarray                 # (H, W, 3) uint8 RGB source image
    crop: SourceCrop
    rgb256: np.ndarray                # (1, 3, 256, 256) float32
    motion: dict[str, np.ndarray]     # pitch/yaw/roll (1, 66), t (1, 3), exp (1, 63), scale (1, 1), kp (1, 63)
    f_s: torch.Tensor                 # (1, 32, 16, 64, 64) float32
    eye_open: np.ndarray              # (1, 2)
    eye_ball: np.ndarray              # (1, 6)

    @property
    def sc(self) -> np.ndarray:
        """(63,) source keypoints: the motion model's 'sc' condition."""
        return self.motion["kp"].reshape(-1)


class SourceEncoder:
    """Motion extractor + appearance extractor on the 256 input, landmarks through a Landmarker."""

    def __init__(self, motion_extractor: MotionExtractor, appearance_extractor: AppearanceFeatureExtractor,
                 landmarker: Landmarker | None = None, crop_options: CropOptions = CropOptions()) -> None:
        self.motion_extractor = motion_extractor
        self.appearance_extractor = appearance_extractor
        self._landmarker = landmarker
        self.crop_options = crop_options

    @property
    def landmarker(self) -> Landmarker:
        if self._landmarker is None:
            from sadtalker.engines.ditto.face_landmarks import MeshLandmarker

            self._landmarker = MeshLandmarker()
        return self._landmarker

    @torch.inference_mode()
    def features(self, rgb256: np.ndarray) -> tuple[dict[str, np.ndarray], torch.Tensor]:
        """(1, 3, 256, 256) input -> (motion dict of float32 arrays, f_s)."""
        device = next(self.motion_extractor.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(rgb256)).to(device)
        motion = {k: v.float().cpu().numpy().reshape(v.shape[0], -1)
                  for k, v in self.motion_extractor(x)._asdict().items()}
        return motion, self.appearance_extractor(x).float()

    def __call__(self, image: np.ndarray, landmarks: CropLandmarks | None = None,
                 lmk478: np.ndarray | None = None) -> SourceInfo:
        """RGB uint8 image -> SourceInfo. `landmarks` / `lmk478` override the landmark models (tests, callers that
        already have them). Raises NoFaceError when no face is found."""
        ref = landmarks if landmarks is not None else self.landmarker.crop_landmarks(image)
        crop = crop_source(image, ref, self.crop_options)                         # 1. crop + M_c2o
        lmk = lmk478 if lmk478 is not None else self.landmarker.landmarks478(crop.image)
        eye_open, eye_ball = eye_conditions(lmk)                                  # 2. eye conditions
        rgb256 = crop_to_input(crop.image)                                        # 3. 256 input
        motion, f_s = self.features(rgb256)                                       # 4. motion + appearance
        return SourceInfo(frame=image, crop=crop, rgb256=rgb256, motion=motion, f_s=f_s, eye_open=eye_open,
                          eye_ball=eye_ball)
