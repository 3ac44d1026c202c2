"""Keypoint transformation of face-vid2vid as SadTalker uses it: pose bins -> degrees -> rotation, then
kp = R kp_canonical + t (t_x, t_z zeroed) + expression deltas.

Constants are the original's: 66 bins of 3 degrees from -99, and 3.14 (not pi) for degrees -> radians.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sadtalker.nets.mapping import HeadMotion

NUM_BINS = 66
BIN_DEGREES = 3.0
BIN_OFFSET = 99.0
PI_APPROX = 3.14  # the original's value; using math.pi would rotate heads differently


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """(B, 66) logits -> (B,) degrees: softmax expectation of the bin index, x3 - 99."""
    index = torch.arange(logits.shape[1], dtype=logits.dtype, device=logits.device)
    return torch.sum(F.softmax(logits, dim=1) * index, 1) * BIN_DEGREES - BIN_OFFSET


def rotation_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees (B,) each -> (B, 3, 3) = R_pitch(x axis) @ R_yaw(y axis) @ R_roll(z axis)."""
    yaw, pitch, roll = (a / 180 * PI_APPROX for a in (yaw, pitch, roll))
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)

    def mat(*rows: torch.Tensor) -> torch.Tensor:
        return torch.stack(rows, dim=1).view(-1, 3, 3)

    r_pitch = mat(one, zero, zero, zero, torch.cos(pitch), -torch.sin(pitch), zero, torch.sin(pitch), torch.cos(pitch))
    r_yaw = mat(torch.cos(yaw), zero, torch.sin(yaw), zero, one, zero, -torch.sin(yaw), zero, torch.cos(yaw))
    r_roll = mat(torch.cos(roll), -torch.sin(roll), zero, torch.sin(roll), torch.cos(roll), zero, zero, zero, one)
    return torch.einsum("bij,bjk,bkm->bim", r_pitch, r_yaw, r_roll)


def transform_keypoints(kp_canonical: torch.Tensor, motion: HeadMotion, yaw: torch.Tensor | None = None,
                        pitch: torch.Tensor | None = None, roll: torch.Tensor | None = None) -> torch.Tensor:
    """Canonical keypoints (B, K, 3) + mapping outputs -> posed keypoints (B, K, 3).

    `yaw`/`pitch`/`roll` (B,) in degrees replace the predicted angles when given (the original's input_yaw etc.).
    The mapping's translation is not modified in place (the original zeroes t[:, 0] and t[:, 2] of its input).
    """
    yaw_deg = bins_to_degrees(motion.yaw) if yaw is None else yaw.to(kp_canonical)
    pitch_deg = bins_to_degrees(motion.pitch) if pitch is None else pitch.to(kp_canonical)
    roll_deg = bins_to_degrees(motion.roll) if roll is None else roll.to(kp_canonical)
    rot = rotation_matrix(yaw_deg, pitch_deg, roll_deg)                     # (B, 3, 3)
    rotated = torch.einsum("bmp,bkp->bkm", rot, kp_canonical)               # (B, K, 3)
    t = motion.t * torch.tensor([0.0, 1.0, 0.0], dtype=motion.t.dtype, device=motion.t.device)  # keep t_y only
    return rotated + t[:, None, :] + motion.exp.view(motion.exp.shape[0], -1, 3)
