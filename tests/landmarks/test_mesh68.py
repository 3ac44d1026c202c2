"""Default landmarks: BlazeFace + face mesh (tflite) reduced to 68 points, on skimage's astronaut."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from sadtalker.errors import NoFaceError
from sadtalker.landmarks.mesh68 import MESH_TO_68, FaceMeshLandmarker, mesh_to_68

# Hand-marked on the 512x512 astronaut (image pixels, from a 7x zoom with a 5-px grid): 68-point index -> (x, y).
HAND_MARKED = {
    36: (193.6, 100.7),  # image-left eye, outer corner
    39: (210.7, 102.9),  # image-left eye, inner corner
    42: (235.0, 103.6),  # image-right eye, inner corner
    45: (257.9, 102.0),  # image-right eye, outer corner
    30: (225.0, 127.9),  # nose tip
    48: (202.9, 139.3),  # mouth corner, image left
    54: (244.3, 140.0),  # mouth corner, image right
}


@pytest.fixture(scope="module")
def landmarker() -> FaceMeshLandmarker:
    return FaceMeshLandmarker()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def test_mapping_table_is_68_distinct_mesh_vertices() -> None:
    assert len(MESH_TO_68) == 68 and len(set(MESH_TO_68)) == 68
    assert all(0 <= i < 468 for i in MESH_TO_68)
    mesh = np.arange(468 * 3, dtype=np.float64).reshape(468, 3)
    out = mesh_to_68(mesh)
    assert out.shape == (68, 2) and out.dtype == np.float32
    assert out[30, 0] == MESH_TO_68[30] * 3


def test_astronaut_landmarks_fall_on_the_hand_marked_points(landmarker: FaceMeshLandmarker,
                                                             astronaut: np.ndarray) -> None:
    lm = landmarker(astronaut)
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    inter_ocular = np.linalg.norm(np.subtract(HAND_MARKED[45], HAND_MARKED[36]))  # ~64 px
    errors = {i: float(np.linalg.norm(lm[i] - p)) for i, p in HAND_MARKED.items()}
    assert max(errors.values()) < 0.1 * inter_ocular, errors
    assert np.mean(list(errors.values())) < 0.06 * inter_ocular, errors
    # Anatomical order: eyes above the nose tip above the mouth; jaw below the mouth; left/right not swapped.
    assert lm[36:48, 1].max() < lm[30, 1] < lm[48:68, 1].min() < lm[8, 1]
    assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0] and lm[48, 0] < lm[54, 0] and lm[0, 0] < lm[16, 0]
    # Eyebrows above the eyes.
    assert lm[17:27, 1].mean() < lm[36:48, 1].mean()


def test_landmarks_follow_a_moved_and_scaled_face(landmarker: FaceMeshLandmarker, astronaut: np.ndarray) -> None:
    canvas = np.full((640, 640, 3), 200, np.uint8)
    small = cv2.resize(astronaut, (384, 384), interpolation=cv2.INTER_AREA)
    canvas[200:584, 150:534] = small
    lm = landmarker(canvas)
    expected = {i: (np.array(p) * 0.75 + [150, 200]) for i, p in HAND_MARKED.items()}
    assert max(np.linalg.norm(lm[i] - p) for i, p in expected.items()) < 6


def test_no_face_raises(landmarker: FaceMeshLandmarker) -> None:
    with pytest.raises(NoFaceError, match="no face"):
        landmarker(np.full((256, 256, 3), (40, 120, 200), np.uint8))


def test_several_faces_pick_the_largest_and_log(landmarker: FaceMeshLandmarker, astronaut: np.ndarray,
                                                caplog: pytest.LogCaptureFixture) -> None:
    canvas = np.full((512, 900, 3), 230, np.uint8)
    canvas[:, :512] = astronaut
    canvas[300:428, 650:778] = cv2.resize(astronaut[60:220, 140:300], (128, 128), interpolation=cv2.INTER_AREA)
    with caplog.at_level(logging.WARNING, logger="sadtalker.landmarks.mesh68"):
        lm = landmarker(canvas)
    assert "faces found" in caplog.text and "largest" in caplog.text
    assert lm[30, 0] < 512  # the big face on the left


def test_too_small_face_raises(astronaut: np.ndarray) -> None:
    strict = FaceMeshLandmarker(min_face_px=200)
    with pytest.raises(NoFaceError, match="too small"):
        strict(astronaut)
