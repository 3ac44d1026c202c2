"""Driving keypoints from generated motion (the original's MotionStitch, image sources).

Each frame's motion (pose bins, translation, expression, from the motion stage) drives the source relative to the
first frame: x_s_info + (x_d_info - x_d_info[0]); the source keeps its scale and canonical keypoints, and only the
lip and eye keypoints take the driving expression. A small gaze correction follows the head turn, the implicit
keypoints are posed (s * (kp R + exp) + t_xy), and the stitching network aligns them with the source crop.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from sadtalker.errors import InvalidInputError
from sadtalker.nets.ditto.stitching_network import StitchingNetwork

logger = logging.getLogger(__name__)

NUM_KP = 21
NUM_BINS = 66
LIP_KEYPOINTS = (6, 12, 14, 17, 19, 20)
EYE_KEYPOINTS = (11, 13, 15, 16, 18)
DRIVEN_KEYS = ("exp", "pitch", "yaw", "roll", "t")   # an image source takes these from the driving motion
MOTION_KEYS = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")
# Gaze correction: eye-keypoint expression offsets per degree of head turn relative to the source.
GAZE_X_PER_DEGREE, GAZE_Y_PER_DEGREE = 0.26, 0.28


@dataclass(frozen=True)
class StitchOptions:
    """The original's defaults for an image source (StreamSDK.setup)."""

    relative: bool = True      # drive relative to the first frame's motion
    drive_eye: bool = True     # eye keypoints (and the gaze correction) follow the driving motion
    stitching: bool = True     # run the stitching network
    driven_keys: tuple[str, ...] = DRIVEN_KEYS   # the original's use_d_keys; ("exp",) keeps the source's head pose


def pose_degrees(bins: torch.Tensor) -> torch.Tensor:
    """(N, 66) pose bin logits -> (N,) degrees: softmax expectation over 3-degree bins centred from -97.5."""
    idx = torch.arange(NUM_BINS, dtype=bins.dtype, device=bins.device)
    return (torch.softmax(bins, dim=1) * idx).sum(dim=1) * 3 - 97.5


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees (N,) -> (N, 3, 3) = (Rz(roll) Ry(yaw) Rx(pitch))^T, applied to row vectors as kp @ R."""
    x, y, z = (a * (np.pi / 180) for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rx = torch.stack([one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos()], 1).view(-1, 3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], 1).view(-1, 3, 3)
    rz = torch.stack([z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one], 1).view(-1, 3, 3)
    return (rz @ ry @ rx).transpose(1, 2)


def transform_keypoints(info: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Posed implicit keypoints s * (kp R + exp) + (tx, ty, 0): (N, 21, 3) from per-frame motion (N, ...)."""
    n = info["kp"].shape[0]
    rot = rotation_matrix(pose_degrees(info["pitch"]), pose_degrees(info["yaw"]), pose_degrees(info["roll"]))
    kp = (info["kp"].reshape(n, NUM_KP, 3) @ rot + info["exp"].reshape(n, NUM_KP, 3)) * info["scale"].reshape(n, 1, 1)
    shift = torch.zeros_like(kp)
    shift[..., :2] = info["t"].reshape(n, 1, 3)[..., :2]
    return kp + shift


def _expression_mask(drive_eye: bool) -> torch.Tensor:
    """(63,) 1 where the expression comes from the driving motion (lips, and eyes when driven)."""
    mask = torch.zeros(NUM_KP, 3)
    mask[list(LIP_KEYPOINTS)] = 1
    if drive_eye:
        mask[list(EYE_KEYPOINTS)] = 1
    return mask.reshape(-1)


def as_motion(values: Mapping[str, object], keys: tuple[str, ...] = MOTION_KEYS,
              device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Per-frame motion as float32 tensors (N, dim) from arrays or tensors; keys not present are skipped."""
    out = {}
    for k in keys:
        if k in values:
            v = torch.as_tensor(np.asarray(values[k]) if not torch.is_tensor(values[k]) else values[k])
            out[k] = v.to(device=device, dtype=torch.float32).reshape(v.shape[0], -1)
    return out


class MotionStitcher:
    """Source motion (set once) + driving motion for all frames -> (x_s (1, 21, 3), x_d (N, 21, 3))."""

    def __init__(self, stitch_net: StitchingNetwork | None, options: StitchOptions = StitchOptions()) -> None:
        if options.stitching and stitch_net is None:
            raise InvalidInputError("stitching is on but no stitching network was given")
        self.stitch_net = stitch_net
        self.options = options

    @torch.inference_mode()
    def __call__(self, source: Mapping[str, object], driving: Mapping[str, object]) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
        """source: the motion extractor's output for the source (pitch, yaw, roll (1, 66), t (1, 3), exp, kp
        (1, 63), scale (1, 1)); driving: per-frame motion (N, ...) with at least the keys in DRIVEN_KEYS."""
        device = next(self.stitch_net.parameters()).device if self.stitch_net is not None else "cpu"
        s = as_motion(source, device=device)
        d = as_motion(driving, device=device)
        driven = self.options.driven_keys
        unknown = [k for k in driven if k not in DRIVEN_KEYS]
        if unknown:
            raise InvalidInputError(f"driven motion keys must be among {', '.join(DRIVEN_KEYS)}; got {unknown}")
        missing = [k for k in MOTION_KEYS if k not in s] + [k for k in driven if k not in d]
        if missing:
            raise InvalidInputError(f"motion lacks {', '.join(missing)}")
        x_s = transform_keypoints(s)                                     # (1, 21, 3)
        mixed = dict(s)
        for k in driven:                                                 # 1. relative driving from frame 0
            mixed[k] = s[k] + (d[k] - d[k][:1]) if self.options.relative else d[k]
        n = next(iter(d.values())).shape[0] if d else 0
        if n == 0:
            raise InvalidInputError("no driving motion frames")
        for k in MOTION_KEYS:                                            # the source's values, one per frame
            if mixed[k].shape[0] != n:
                mixed[k] = mixed[k].expand(n, -1)
        mask = _expression_mask(self.options.drive_eye).to(device)      # 2. lips (and eyes) driven
        mixed["exp"] = mixed["exp"] * mask + s["exp"] * (1 - mask)
        if self.options.drive_eye:                                       # 3. gaze follows the head turn
            mixed["exp"] = self._fix_gaze(s, mixed)
        x_d = transform_keypoints(mixed)                                 # (N, 21, 3)
        if self.options.stitching:                                       # 4. stitching network
            x_d = self.stitch_net(x_s.expand(n, -1, -1), x_d)
        return x_s, x_d

    @staticmethod
    def _fix_gaze(source: Mapping[str, torch.Tensor], mixed: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Shift the eye keypoints' expression against the head's yaw/pitch change (the original's _fix_gaze)."""
        dx = (pose_degrees(mixed["yaw"]).double() - pose_degrees(source["yaw"]).double()) * GAZE_X_PER_DEGREE
        dy = (pose_degrees(mixed["pitch"]).double() - pose_degrees(source["pitch"]).double()) * GAZE_Y_PER_DEGREE
        exp = mixed["exp"].clone()
        right = dx > 0
        exp[:, 33] += torch.where(right, dx * 0.0007, dx * 0.001).to(exp.dtype)
        exp[:, 45] += torch.where(right, dx * 0.001, dx * 0.0007).to(exp.dtype)
        exp[:, 34] += (dy * -0.001).to(exp.dtype)
        exp[:, 46] += (dy * -0.001).to(exp.dtype)
        return exp
