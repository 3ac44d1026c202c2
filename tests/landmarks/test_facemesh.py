"""Face detection and the 468-point face mesh (sadtalker.landmarks.facemesh) on the astronaut portrait."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from sadtalker.errors import NoFaceError
from sadtalker.landmarks import facemesh as fm


@pytest.fixture(scope="module")
def mesh() -> fm.FaceMesh:
    return fm.shared_face_mesh()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def test_anchor_counts_match_the_models(mesh: fm.FaceMesh) -> None:
    assert mesh.detector.short_anchors.shape == (896, 2)
    assert mesh.detector.full_anchors.shape == (2304, 2)
    assert mesh.detector.short_anchors.min() > 0 and mesh.detector.short_anchors.max() < 1


def test_detects_the_astronaut_face(mesh: fm.FaceMesh, astronaut: np.ndarray) -> None:
    faces = mesh.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.8
    x0, y0, x1, y1 = face.box
    # Eileen Collins' face is around (180..270, 80..175) in the 512x512 picture
    assert 150 < x0 < 200 and 240 < x1 < 300 and 50 < y0 < 110 and 150 < y1 < 200
    right_eye, left_eye = face.keypoints[0], face.keypoints[1]
    assert right_eye[0] < left_eye[0]  # the person's right eye is on the image's left


def test_landmarks_lie_on_the_face(mesh: fm.FaceMesh, astronaut: np.ndarray) -> None:
    points = fm.largest_face_landmarks(astronaut)
    assert points.shape == (468, 3) and points.dtype == np.float32
    xy = points[:, :2]
    box = mesh.detect(astronaut)[0].box
    nose = xy[fm.NOSE_TIP]
    assert box[0] < nose[0] < box[2] and box[1] < nose[1] < box[3]
    # anatomy: eyes above the nose tip, nose tip above the mouth, mouth above the chin
    eyes_y = xy[[fm.RIGHT_EYE_OUTER, fm.LEFT_EYE_OUTER]].mean(0)[1]
    mouth_y = xy[[13, 14]].mean(0)[1]
    assert eyes_y < nose[1] < mouth_y < xy[fm.CHIN][1]
    assert xy[fm.RIGHT_EYE_OUTER][0] < xy[fm.LEFT_EYE_OUTER][0]
    # the astronaut smiles with her lips apart: a visible gap between the inner lips
    gap = np.linalg.norm(xy[14] - xy[13]) / np.linalg.norm(xy[fm.CHIN] - xy[fm.FOREHEAD])
    assert 0.01 < gap < 0.15


def test_small_face_in_a_large_picture(mesh: fm.FaceMesh, astronaut: np.ndarray) -> None:
    """A face that fills little of the picture (found by the full-range model) gets the same landmarks."""
    reference = fm.largest_face_landmarks(astronaut)[:, :2]
    canvas = np.full((1400, 1400, 3), 200, np.uint8)
    canvas[700:1212, 100:612] = astronaut
    detector = mesh.detector
    assert detector._run(detector.short, detector.short_anchors, canvas) == []  # too small for the short range
    points = mesh.landmarks(canvas)[:, :2]
    shifted = reference + np.array([100, 700])
    face_h = np.linalg.norm(reference[fm.CHIN] - reference[fm.FOREHEAD])
    assert np.median(np.linalg.norm(points - shifted, axis=1)) < 0.04 * face_h


def test_grey_and_rgba_inputs(mesh: fm.FaceMesh, astronaut: np.ndarray) -> None:
    grey = np.asarray(Image.fromarray(astronaut).convert("L"))
    rgba = np.asarray(Image.fromarray(astronaut).convert("RGBA"))
    reference = fm.largest_face_landmarks(astronaut)[:, :2]
    for image in (grey, rgba):
        points = mesh.landmarks(image)[:, :2]
        assert np.median(np.linalg.norm(points - reference, axis=1)) < 3.0


@pytest.mark.parametrize("picture", ["plain", "chelsea"])
def test_no_face_raises(mesh: fm.FaceMesh, picture: str) -> None:
    """A plain colour has no detection at all; the cat gets a weak detection that the landmark model's face score
    rejects."""
    image = np.full((256, 256, 3), (40, 120, 200), np.uint8) if picture == "plain" else data.chelsea()
    if picture == "plain":
        assert mesh.detect(image) == []
    with pytest.raises(NoFaceError, match="no face"):
        fm.largest_face_landmarks(image)
