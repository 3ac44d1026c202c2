"""The original's 68-point landmarks (SadTalker's `KeypointExtractor` over facexlib): RetinaFace-ResNet50 finds the
face, the AWing FAN puts 98 WFLW points on the box's crop, and a fixed table reduces them to the iBUG 68.
Used when `detection_Resnet50_Final.pth` and `alignment_WFLW_4HG.pth` are present (loaded unchanged).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from sadtalker.errors import NoFaceError
from sadtalker.landmarks.mesh68 import pick_largest
from sadtalker.nets.awing import HEATMAP_SIZE, INPUT_SIZE, AWingFAN
from sadtalker.nets.retinaface import RetinaFace
from sadtalker.weights import CheckpointLocations, load

logger = logging.getLogger(__name__)

# RetinaFace's configuration for the ResNet-50 weights (facexlib cfg_re50).
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
BGR_MEAN = (104.0, 117.0, 123.0)
CONF_THRESHOLD = 0.97   # SadTalker's threshold
NMS_THRESHOLD = 0.4


def prior_boxes(height: int, width: int) -> torch.Tensor:
    """(P, 4) anchors (cx, cy, w, h) relative to the image, cell-major per level, float32."""
    rows = []
    for sizes, step in zip(MIN_SIZES, STEPS):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        i, j = np.meshgrid(np.arange(fh, dtype=np.float64), np.arange(fw, dtype=np.float64), indexing="ij")
        cx = (j + 0.5) * step / width
        cy = (i + 0.5) * step / height
        per_size = [np.stack([cx, cy, np.full_like(cx, s / width), np.full_like(cy, s / height)], axis=-1)
                    for s in sizes]
        rows.append(np.stack(per_size, axis=2).reshape(-1, 4))  # (fh*fw*len(sizes), 4)
    return torch.from_numpy(np.concatenate(rows).astype(np.float32))


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """(P, 4) regressions -> (P, 4) boxes (x0, y0, x1, y1) relative to the image (SSD decoding)."""
    centre = priors[:, :2] + loc[:, :2] * VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[:, 2:] * VARIANCES[1])
    corner = centre - size / 2
    return torch.cat([corner, size + corner], dim=1)


def decode_points(pre: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """(P, 10) regressions -> 5 points (x, y) each, relative to the image."""
    return torch.cat([priors[:, :2] + pre[:, 2 * k: 2 * k + 2] * VARIANCES[0] * priors[:, 2:] for k in range(5)], dim=1)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS with torchvision.ops.nms semantics (boxes sorted by score; IoU > threshold suppressed)."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    suppressed = np.zeros(len(boxes), bool)
    for idx in order:
        if suppressed[idx]:
            continue
        keep.append(int(idx))
        xx0 = np.maximum(boxes[idx, 0], boxes[:, 0])
        yy0 = np.maximum(boxes[idx, 1], boxes[:, 1])
        xx1 = np.minimum(boxes[idx, 2], boxes[:, 2])
        yy1 = np.minimum(boxes[idx, 3], boxes[:, 3])
        inter = np.clip(xx1 - xx0, 0, None) * np.clip(yy1 - yy0, 0, None)
        iou = inter / (areas[idx] + areas - inter)
        suppressed |= iou > threshold
    return keep


def wflw98_to_ibug68(lm98: np.ndarray) -> np.ndarray:
    """(98, 2) WFLW points -> (68, 2) float32 iBUG points (facexlib's landmark_98_to_68 table)."""
    lm98 = np.asarray(lm98)
    out = np.zeros((68, 2), dtype=np.float32)
    out[0:17] = lm98[0:33:2]                       # jaw: every other contour point
    out[27:36] = lm98[51:60]                       # nose
    out[48:68] = lm98[76:96]                       # mouth
    out[17] = lm98[33]                             # eyebrows: upper/lower contour averages
    for k, (a, b) in enumerate(((34, 41), (35, 40), (36, 39), (37, 38)), start=18):
        out[k] = (lm98[a] + lm98[b]) / 2
    for k, (a, b) in enumerate(((42, 50), (43, 49), (44, 48), (45, 47)), start=22):
        out[k] = (lm98[a] + lm98[b]) / 2
    out[26] = lm98[46]
    out[36:42] = lm98[[60, 61, 63, 64, 65, 67]]    # eyes: WFLW has 8 per eye, iBUG 6
    out[42:48] = lm98[[68, 69, 71, 72, 73, 75]]
    return out


def heatmap_points(heatmaps: np.ndarray) -> np.ndarray:
    """(B, N, 64, 64) -> (B, N, 2) points in heatmap pixels: argmax + 0.5, moved a quarter pixel towards the
    larger neighbour (facexlib's calculate_points, including its whole-batch rule at the top/bottom rows).

    Where the original would index past the heatmap (a peak on the very last pixel) the neighbour is clamped.
    """
    b, n, h, w = heatmaps.shape
    flat = heatmaps.reshape(b * n, h * w)
    idx = np.argmax(flat, axis=1)
    rows = np.arange(b * n)
    preds = np.stack([idx % w, idx // w], axis=1).astype(np.float64)
    right = flat[rows, np.minimum(idx + 1, h * w - 1)]
    left = flat[rows, idx - 1]  # idx 0 wraps to the last pixel, as numpy indexing does in the original
    below = flat[:, h * w - 1] if np.any(idx + w >= h * w) else flat[rows, idx + w]
    above = flat[:, 0] if np.any(idx - w <= 0) else flat[rows, idx - w]
    preds += np.sign(np.stack([right - left, below - above], axis=1)) * 0.25
    preds += 0.5
    return preds.reshape(b, n, 2)


@dataclass(frozen=True)
class Detection:
    """One RetinaFace detection in image pixels."""

    box: np.ndarray      # (4,) x0, y0, x1, y1
    score: float
    points: np.ndarray   # (5, 2)

    @property
    def side(self) -> float:
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


class RetinaFaceDetector:
    """RetinaFace at the picture's own size (facexlib's detect_faces with use_origin_size=True)."""

    def __init__(self, net: RetinaFace, device: torch.device) -> None:
        self.net = net.to(device).eval()
        self.device = device

    @torch.inference_mode()
    def raw(self, bgr: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loc, scores, landmarks) for one image whose channels are treated as BGR, plus the priors."""
        x = torch.from_numpy(np.ascontiguousarray(bgr.astype(np.float32).transpose(2, 0, 1)))[None].to(self.device)
        x = x - torch.tensor(BGR_MEAN, device=self.device).view(1, 3, 1, 1)
        loc, conf, landms = self.net(x)
        return loc, conf, landms, prior_boxes(*bgr.shape[:2]).to(self.device)

    def detect(self, bgr: np.ndarray, threshold: float = CONF_THRESHOLD,
               nms_threshold: float = NMS_THRESHOLD) -> np.ndarray:
        """(N, 15): box, score, 5 points (x, y), best first after NMS."""
        h, w = bgr.shape[:2]
        loc, conf, landms, priors = self.raw(bgr)
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
        boxes = (decode_boxes(loc[0], priors) * scale / 1.0).cpu().numpy()
        points = (decode_points(landms[0], priors) * scale.repeat(3)[:10] / 1.0).cpu().numpy()
        scores = conf[0, :, 1].cpu().numpy()
        keep = np.where(scores > threshold)[0]
        boxes, points, scores = boxes[keep], points[keep], scores[keep]
        order = scores.argsort()[::-1]
        boxes, points, scores = boxes[order], points[order], scores[order]
        dets = np.hstack([boxes, scores[:, None]]).astype(np.float32, copy=False)
        kept = nms(dets[:, :4], dets[:, 4], nms_threshold)
        return np.concatenate([dets[kept], points[kept]], axis=1)


class AWingAligner:
    """98 WFLW points on a face crop (facexlib's FAN.get_landmarks)."""

    def __init__(self, net: AWingFAN, device: torch.device) -> None:
        self.net = net.to(device).eval()
        self.device = device

    @staticmethod
    def prepare(crop: np.ndarray) -> torch.Tensor:
        """(h, w, 3) uint8 -> (1, 3, 256, 256) float32: resized (bilinear), channels reversed, / 255."""
        img = cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE))[..., ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()
        return (x / 255.0)[None]

    @torch.inference_mode()
    def heatmaps(self, crop: np.ndarray) -> np.ndarray:
        """(1, 99, 64, 64) last-stack heatmaps."""
        return self.net(self.prepare(crop).to(self.device))[-1].float().cpu().numpy()

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        """(98, 2) float64 points in crop pixels."""
        h, w = crop.shape[:2]
        points = heatmap_points(self.heatmaps(crop)[:, :-1]).reshape(-1, 2)
        return points * (w / HEATMAP_SIZE, h / HEATMAP_SIZE)


class RetinaFaceAWingLandmarker:
    """The original's landmarks: largest RetinaFace detection -> AWing on its box -> 68 points in image pixels."""

    name = "retinaface+awing"

    def __init__(self, detector: RetinaFaceDetector, aligner: AWingAligner, min_face_px: int = 40) -> None:
        self.detector = detector
        self.aligner = aligner
        self.min_face_px = min_face_px

    @classmethod
    def from_checkpoint(cls, locations: CheckpointLocations, device: torch.device | str = "cpu",
                        min_face_px: int = 40) -> "RetinaFaceAWingLandmarker":
        device = torch.device(device)
        retina = load(RetinaFace(), "retinaface", locations)
        awing = load(AWingFAN(), "awing", locations)
        return cls(RetinaFaceDetector(retina, device), AWingAligner(awing, device), min_face_px)

    def __call__(self, image: np.ndarray, channels_as_given: bool = False) -> np.ndarray:
        """RGB uint8 -> (68, 2) float32. `channels_as_given` feeds the RGB array to RetinaFace as if it were BGR,
        as the original's crop step does on the full picture (its second detection converts correctly)."""
        bgr = image if channels_as_given else image[..., ::-1]
        dets = self.detector.detect(np.ascontiguousarray(bgr))
        if len(dets) == 0:
            raise NoFaceError()
        faces = [Detection(d[:4], float(d[4]), d[5:15].reshape(5, 2)) for d in dets]
        face = pick_largest(faces, self.min_face_px, image.shape)
        x0, y0 = max(int(face.box[0]), 0), max(int(face.box[1]), 0)
        crop = image[y0:int(face.box[3]), x0:int(face.box[2])]
        if crop.shape[0] < 2 or crop.shape[1] < 2:
            raise NoFaceError("no face found in the image (the detected box lies outside the picture)")
        lm = wflw98_to_ibug68(self.aligner(crop))
        lm[:, 0] += x0
        lm[:, 1] += y0
        return lm
