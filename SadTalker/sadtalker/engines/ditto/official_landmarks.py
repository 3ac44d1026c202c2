"""Optional: the original's landmark chain, face box -> 106 points (InsightFace 2d106det.onnx) -> 224 crop ->
203 points (LivePortrait landmark203.onnx), through onnxruntime when those official files are present.

The geometry around the two models is the original's (and is checked against the golden data with the models'
outputs given). The face box comes from InsightFace's det_10g.onnx when that file is in place too (face_detector.py,
the original's decoding), else from our BlazeFace detector (boxes drawn a little differently; the 106-point model
sees a 1.5x crop around the box and tolerates that).
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from sadtalker.engines.ditto.face_landmarks import CropLandmarks
from sadtalker.engines.ditto.source import CropOptions, crop_transform, landmarks203_reference
from sadtalker.errors import CheckpointError, NoFaceError

logger = logging.getLogger(__name__)

LMK106_SIZE = 192
LMK203_SIZE = 224
LMK203_CROP = CropOptions(size=LMK203_SIZE, scale=1.5, vy_ratio=-0.1, rotate=True)


def landmark106_input(image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(1, 3, 192, 192) float32 BGR blob of the box's 1.5x square crop, and its (2, 3) image->crop affine."""
    w, h = box[2] - box[0], box[3] - box[1]
    cx, cy = (box[2] + box[0]) / 2, (box[3] + box[1]) / 2
    s = LMK106_SIZE / (max(w, h) * 1.5)
    half = LMK106_SIZE / 2
    affine = np.array([[s, 0.0, half - cx * s], [0.0, s, half - cy * s]], dtype=np.float64)
    crop = cv2.warpAffine(image, affine, (LMK106_SIZE, LMK106_SIZE), borderValue=0.0)
    blob = np.ascontiguousarray(crop[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32)
    return blob, affine


def landmark106_points(raw: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The model's (1, 212) output in [-1, 1] of the crop -> (106, 2) float32 image pixels."""
    pts = raw.reshape(-1, 2)[-106:].astype(np.float32)
    pts = (pts + 1) * (LMK106_SIZE // 2)
    inverse = cv2.invertAffineTransform(affine)
    homogeneous = np.concatenate([pts, np.ones((len(pts), 1), np.float32)], axis=1)
    return (homogeneous.astype(np.float64) @ inverse.T).astype(np.float32)


def landmarks106_reference(points: np.ndarray) -> CropLandmarks:
    """The original's reading of 106 points: eye centres from 33/35/40/39 and 87/89/94/93, lip from 52 and 61."""
    return CropLandmarks(points=points, eye_left=np.mean(points[[33, 35, 40, 39]], axis=0),
                         eye_right=np.mean(points[[87, 89, 94, 93]], axis=0), lip=(points[52] + points[61]) / 2)


def landmark203_input(image: np.ndarray, lmk106: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(1, 3, 224, 224) float32 RGB 0..1 input of the 203-point model, and the crop->image (3, 3) affine."""
    affine = crop_transform(landmarks106_reference(lmk106), LMK203_CROP)
    crop = cv2.warpAffine(image, affine, (LMK203_SIZE, LMK203_SIZE), flags=cv2.INTER_LINEAR)
    m_o2c = np.vstack([affine, np.array([0, 0, 1], dtype=np.float32)])
    return (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None], np.linalg.inv(m_o2c)


def landmark203_points(raw: np.ndarray, m_c2o: np.ndarray) -> np.ndarray:
    """The model's (1, 406) output in 0..1 of the crop -> (203, 2) image pixels."""
    pts = raw[0].reshape(-1, 2) * LMK203_SIZE
    return pts @ m_c2o[:2, :2].T + m_c2o[:2, 2]


class OfficialLandmarker:
    """Crop landmarks from the official 106/203-point ONNX models, the face box from the official detector when
    given (else our BlazeFace); eye landmarks (478) from our face mesh + iris (the original's MediaPipe
    face_landmarker.task is not used)."""

    def __init__(self, landmark106_path: Path, landmark203_path: Path, detector_path: Path | None = None) -> None:
        import onnxruntime

        from sadtalker.engines.ditto.face_detector import InsightFaceDetector
        from sadtalker.engines.ditto.face_landmarks import MeshLandmarker

        for path in (landmark106_path, landmark203_path):
            if not Path(path).is_file():
                raise CheckpointError(f"optional Ditto landmark model not found: {path}")
        options = ["CPUExecutionProvider"]
        self.lmk106 = onnxruntime.InferenceSession(str(landmark106_path), providers=options)
        self.lmk203 = onnxruntime.InferenceSession(str(landmark203_path), providers=options)
        self.mesh = MeshLandmarker()
        self.detector = InsightFaceDetector(detector_path) if detector_path is not None else None

    def face_box(self, image: np.ndarray) -> np.ndarray:
        """x0, y0, x1, y1 of the face the crop follows (the largest one for the official detector)."""
        if self.detector is not None:
            return self.detector.box(image)
        faces = self.mesh.mesh.detect(image)
        if not faces:
            raise NoFaceError()
        return np.asarray(faces[0].box)

    def crop_landmarks(self, image: np.ndarray) -> CropLandmarks:
        blob, affine = landmark106_input(image, self.face_box(image))
        raw106 = self.lmk106.run(None, {self.lmk106.get_inputs()[0].name: blob})[0]
        lmk106 = landmark106_points(raw106, affine)
        inp, m_c2o = landmark203_input(image, lmk106)
        raw203 = self.lmk203.run(None, {self.lmk203.get_inputs()[0].name: inp})[0]
        return landmarks203_reference(landmark203_points(raw203, m_c2o))

    def landmarks478(self, image: np.ndarray) -> np.ndarray:
        return self.mesh.landmarks478(image)
