"""Optional: face boxes from InsightFace's SCRFD detector (`det_10g.onnx`), as the original Ditto finds the face.

Used only when the user has put the official file in place (its weights are for non-commercial research; our
default is the BlazeFace detector of the face mesh). The steps are the original's `InsightFaceDet.detect` and
`Source2Info._crop`'s choice: the portrait scaled to fit 512 x 512 (top-left, zero padded), a BGR blob
(x - 127.5) / 128, three strides of two anchors each decoded as distances from the anchor centres, score >= 0.5,
non-maximum suppression at IoU 0.4 (the +1 pixel area convention), and the largest box first.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from sadtalker.errors import CheckpointError, NoFaceError

logger = logging.getLogger(__name__)

INPUT_SIZE = 512
STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2
SCORE_THRESHOLD = 0.5
NMS_THRESHOLD = 0.4
MEAN, STD = 127.5, 128.0


def detector_input(image: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, float]:
    """RGB uint8 (H, W, 3) -> the (1, 3, size, size) float32 blob (BGR, normalised) and the image->input scale."""
    h, w = image.shape[:2]
    if h / w > 1.0:  # the square input's ratio
        new_h, new_w = size, int(size / (h / w))
    else:
        new_w, new_h = size, int(size * (h / w))
    scale = new_h / h
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
    blob = (canvas[:, :, ::-1].astype(np.float32) - np.float32(MEAN)) * np.float32(1.0 / STD)
    return np.ascontiguousarray(blob.transpose(2, 0, 1)[None]), scale


def anchor_centres(height: int, width: int, stride: int) -> np.ndarray:
    """(height * width * 2, 2) float32 x, y of each anchor (two per cell, the same centre), row-major."""
    ys, xs = np.mgrid[:height, :width]
    centres = (np.stack([xs, ys], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
    return np.repeat(centres, ANCHORS_PER_CELL, axis=0)


def nms(dets: np.ndarray, threshold: float = NMS_THRESHOLD) -> list[int]:
    """Indices kept by greedy non-maximum suppression of (N, 5) x0, y0, x1, y1, score rows, best score first."""
    x0, y0, x1, y1, scores = dets.T
    areas = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= threshold]
    return keep


def decode(outputs: Sequence[np.ndarray], scale: float, input_size: int = INPUT_SIZE,
           threshold: float = SCORE_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """The model's nine outputs (scores, box distances, keypoint offsets per stride, in that order) -> (N, 5) boxes
    with scores and (N, 5, 2) keypoints in image pixels, after suppression, best score first."""
    n = len(STRIDES)
    scores, boxes, points = [], [], []
    for i, stride in enumerate(STRIDES):
        cells = input_size // stride
        centres = anchor_centres(cells, cells, stride)
        score = outputs[i]
        distance = outputs[i + n] * stride
        offsets = outputs[i + 2 * n] * stride
        positive = np.where(score >= threshold)[0]
        box = np.stack([centres[:, 0] - distance[:, 0], centres[:, 1] - distance[:, 1],
                        centres[:, 0] + distance[:, 2], centres[:, 1] + distance[:, 3]], axis=-1)
        kps = np.stack([centres[:, k % 2] + offsets[:, k] for k in range(offsets.shape[1])], axis=-1)
        scores.append(score[positive])
        boxes.append(box[positive])
        points.append(kps.reshape(len(kps), -1, 2)[positive])
    score_all = np.vstack(scores)
    order = score_all.ravel().argsort()[::-1]
    dets = np.hstack((np.vstack(boxes) / scale, score_all)).astype(np.float32, copy=False)[order]
    kpss = (np.vstack(points) / scale)[order]
    keep = nms(dets)
    return dets[keep], kpss[keep]


def largest_first(dets: np.ndarray) -> np.ndarray:
    """The boxes ordered by area, largest first (the original takes the first as the face)."""
    return dets[np.argsort(-(dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1]))]


class InsightFaceDetector:
    """`det_10g.onnx` through onnxruntime: the largest face's box, as the original chooses it."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        if not Path(path).is_file():
            raise CheckpointError(f"optional Ditto face detector not found: {path}")
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        if len(self.session.get_outputs()) != 3 * len(STRIDES):
            raise CheckpointError(f"{path} has {len(self.session.get_outputs())} outputs; InsightFace's det_10g "
                                  f"has {3 * len(STRIDES)} (scores, boxes and keypoints per stride)")

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 image -> (N, 5) boxes with scores and (N, 5, 2) keypoints, best score first."""
        blob, scale = detector_input(image)
        return decode(self.session.run(None, {self.input_name: blob}), scale)

    def box(self, image: np.ndarray) -> np.ndarray:
        """x0, y0, x1, y1 of the largest face; NoFaceError when there is none."""
        dets, _ = self.detect(image)
        if len(dets) == 0:
            raise NoFaceError()
        return largest_first(dets)[0, :4]
