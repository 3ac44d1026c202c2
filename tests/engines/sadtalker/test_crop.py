"""Crop geometry of the preprocess modes (sadtalker.engines.sadtalker.crop), on synthetic landmarks: sizes, boxes, clamping and the
original's quirks (bottom edge clamped with the width, shrink of huge faces)."""
from __future__ import annotations

import numpy as np
import pytest

from sadtalker.engines.sadtalker.crop import (
    crop_face,
    crop_geometry,
    cut,
    map_to_region,
    oriented_square,
)
from sadtalker.errors import InvalidInputError
from sadtalker.options import PREPROCESS_MODES

# The standard 68-point mean shape (x, y down; x, y of the original's similarity_Lm3D_all.mat, 4 decimals).
MEAN_SHAPE = np.array([
    [-0.7315, -0.2183], [-0.712, -0.0206], [-0.6734, 0.1596], [-0.6349, 0.3221], [-0.5798, 0.4963], [-0.4815, 0.6357],
    [-0.3652, 0.7191], [-0.2165, 0.7867], [0.0027, 0.8249], [0.2224, 0.7847], [0.3708, 0.7197], [0.4865, 0.6381],
    [0.5841, 0.5003], [0.6392, 0.3271], [0.6759, 0.1633], [0.7112, -0.0179], [0.7299, -0.2178], [-0.5713, -0.4349],
    [-0.4887, -0.4984], [-0.383, -0.5197], [-0.2815, -0.5109], [-0.1898, -0.4859], [0.1878, -0.4882], [0.28, -0.5139],
    [0.382, -0.5232], [0.4894, -0.5016], [0.5721, -0.4365], [0.0018, -0.2962], [0.0022, -0.1757], [0.0033, -0.0564],
    [0.0033, 0.0462], [-0.1183, 0.138], [-0.0676, 0.1475], [0.0015, 0.1604], [0.07, 0.1474], [0.1201, 0.1374],
    [-0.431, -0.292], [-0.3673, -0.3317], [-0.2765, -0.3327], [-0.192, -0.2888], [-0.2685, -0.2671], [-0.3632, -0.2623],
    [0.1879, -0.2887], [0.2728, -0.3337], [0.3659, -0.3317], [0.4317, -0.2907], [0.3625, -0.2636], [0.2664, -0.2673],
    [-0.2522, 0.3813], [-0.1627, 0.3215], [-0.0558, 0.2827], [0.0013, 0.2947], [0.0581, 0.2828], [0.1651, 0.3212],
    [0.2485, 0.3813], [0.1597, 0.4186], [0.0832, 0.4459], [0.0017, 0.4507], [-0.0798, 0.4457], [-0.1554, 0.4187],
    [-0.227, 0.3755], [-0.0731, 0.3502], [0.0004, 0.3491], [0.074, 0.3508], [0.2321, 0.3763], [0.0727, 0.3663],
    [0.0008, 0.3694], [-0.0708, 0.3656]])


def face_at(cx: float, cy: float, width: float, angle_deg: float = 0.0) -> np.ndarray:
    """The mean shape placed at (cx, cy), `width` px from jaw to jaw, rotated, as float32 like a detector's."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (MEAN_SHAPE @ rot.T * (width / 1.46) + [cx, cy]).astype(np.float32)


def picture(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", PREPROCESS_MODES)
@pytest.mark.parametrize("size", [256, 512])
def test_each_mode_gives_a_square_crop_of_the_asked_size(mode: str, size: int) -> None:
    img = picture(480, 640)
    face = crop_face(img, face_at(320, 240, 160), mode, size)
    assert face.image.shape == (size, size, 3) and face.image.dtype == np.uint8
    if mode == "resize":
        assert face.crop_info.size == (640, 480) and face.crop_info.box is None and face.geometry is None
    else:
        w, h = face.crop_info.size
        assert 150 < w < 400 and 150 < h < 400
        left, top, right, bottom = face.crop_info.box
        assert 0 <= left < right <= 640 and 0 <= top < bottom <= 480


def test_centred_face_box_is_a_square_around_the_eyes_and_mouth() -> None:
    lm = face_at(320, 240, 160)
    g = crop_geometry(lm, (640, 480))
    quad, side = oriented_square(lm)
    assert side == pytest.approx(np.linalg.norm(quad[0] - quad[3]), rel=1e-9)
    left, top, right, bottom = g.box
    border = max(int(np.rint(side * 0.1)), 3)
    assert right - left == pytest.approx(side + 2 * border, abs=2)
    lx, ly, rx, ry = g.quad
    assert rx - lx == pytest.approx(side, abs=1) and ry - ly == pytest.approx(side, abs=1)  # nearly upright
    # The face (eyes to mouth) is inside the quad region.
    x1, y1, x2, y2 = g.region(extended=False)
    assert x1 < lm[36, 0] and lm[45, 0] < x2 and y1 < lm[19, 1] and lm[57, 1] < y2


def test_box_is_clamped_to_the_picture_and_the_quad_shifted() -> None:
    g = crop_geometry(face_at(60, 50, 160), (640, 480))
    assert g.box[0] == 0 and g.box[1] == 0
    assert g.quad[0] >= 0 and g.quad[1] >= 0


def test_bottom_edge_is_clamped_with_the_width_like_the_original() -> None:
    # A face at the bottom of a wide picture: the quad's bottom may pass the picture's height (clamped by width).
    g = crop_geometry(face_at(400, 440, 200), (800, 480))
    assert g.quad[3] > 480 - g.box[1]
    region = g.region(extended=False)
    assert region[3] <= 480  # the cut itself stays inside (numpy slicing semantics)
    assert cut(picture(480, 800), g, extended=False).shape[0] == region[3] - region[1]


def test_huge_faces_are_shrunk_first() -> None:
    lm = face_at(1500, 1500, 2600)
    g = crop_geometry(lm, (3000, 3000))
    shrink = int(np.floor(oriented_square(lm)[1] / 512 * 0.5))
    assert shrink > 1 and g.resized == (round(3000 / shrink), round(3000 / shrink))


def test_extended_modes_keep_the_whole_box_and_crop_info_matches_the_quad() -> None:
    img = picture(480, 640)
    lm = face_at(320, 240, 160, angle_deg=12)
    tight, wide = crop_face(img, lm, "crop", 256), crop_face(img, lm, "extcrop", 256)
    assert tight.crop_info == wide.crop_info
    g = tight.geometry
    assert g is not None
    x1, y1, x2, y2 = g.region(extended=False)
    assert tight.crop_info.size == (x2 - x1, y2 - y1)
    assert g.region(extended=True) == g.box


def test_landmarks_map_into_the_crop() -> None:
    img = np.zeros((480, 640, 3), np.uint8)
    lm = face_at(300, 260, 180, angle_deg=-8)
    for x, y in lm.astype(int):
        img[y, x] = 255
    for mode in ("crop", "extcrop", "resize"):
        face = crop_face(img, lm, mode, 512)
        mapped = map_to_region(lm, (640, 480), face.geometry, mode == "extcrop", 512)
        bright = [face.image[int(round(y)) - 2:int(round(y)) + 3, int(round(x)) - 2:int(round(x)) + 3].max()
                  for x, y in mapped]
        assert np.mean(np.array(bright) > 0) > 0.95, mode


def test_invalid_arguments_raise() -> None:
    with pytest.raises(InvalidInputError, match="preprocess"):
        crop_face(picture(64, 64), face_at(32, 32, 30), "square", 256)
    with pytest.raises(InvalidInputError, match="landmarks"):
        crop_face(picture(64, 64), None, "crop", 256)
    with pytest.raises(InvalidInputError, match="68"):
        crop_geometry(np.zeros((5, 2)), (64, 64))
