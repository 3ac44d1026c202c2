"""Paste-back of rendered faces into the original picture (full / extfull modes)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from sadtalker.engines.sadtalker.paste import CropInfo, PasteBack, paste_region, rendered_frame_size
from sadtalker.errors import InvalidInputError

# A crop box and a quad inside it, as the face extractor reports them for the astronaut's face.
INFO = CropInfo(size=(180, 200), box=(100, 20, 400, 340), quad=(60.0, 30.0, 240.0, 230.0))


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[:, :501])  # odd width on purpose


def outside(mask_shape: tuple[int, int], region: tuple[int, int, int, int]) -> np.ndarray:
    x1, y1, x2, y2 = region
    keep = np.ones(mask_shape, bool)
    keep[y1:y2, x1:x2] = False
    return keep


def test_regions_follow_the_quad_or_the_whole_box():
    assert paste_region(INFO, extended=False) == (160, 50, 340, 250)
    assert paste_region(INFO, extended=True) == (100, 20, 400, 340)
    with pytest.raises(InvalidInputError, match="crop box"):
        paste_region(CropInfo(size=(10, 10)), extended=False)


def test_original_crop_info_tuples_are_read():
    info = CropInfo.from_tuple(((180, 200), (100, 20, 400, 340), (60.2, 30.7, 240.0, 230.0)))
    assert info.box == (100, 20, 400, 340) and info.quad == pytest.approx((60.2, 30.7, 240.0, 230.0))
    resize = CropInfo.from_tuple(((512, 384), None, None))
    assert resize.size == (512, 384) and resize.box is None and resize.quad is None


def test_face_video_size_keeps_the_crop_aspect_in_even_pixels():
    assert rendered_frame_size(256, CropInfo(size=(200, 200))) == (256, 256)
    assert rendered_frame_size(256, CropInfo(size=(501, 512))) == (256, 260)  # int(261.6) = 261 -> 260
    assert rendered_frame_size(512, CropInfo(size=(300, 150))) == (512, 256)


@pytest.mark.parametrize("extended", [False, True])
def test_pixels_outside_the_face_region_are_untouched(picture, extended):
    paste = PasteBack(picture, INFO, extended=extended)
    assert paste.size == (500, 512)  # even width for H.264 yuv420p, original height
    face = np.full((256, 256, 3), (30, 200, 90), np.uint8)
    out = paste(face)
    assert out.shape == (512, 500, 3) and out.dtype == np.uint8
    keep = outside(out.shape[:2], paste.region)
    assert np.array_equal(out[keep], picture[:, :500][keep])
    x1, y1, x2, y2 = paste.region
    inner = out[y1 + 10:y2 - 10, x1 + 10:x2 - 10].astype(int)
    assert np.abs(inner - picture[y1 + 10:y2 - 10, x1 + 10:x2 - 10].astype(int)).mean() > 20  # the face went in


def test_pasting_the_region_itself_gives_back_the_picture(picture):
    """The patch lands exactly where it was cut from (no half-pixel shift at odd sizes)."""
    info = CropInfo(size=(181, 199), box=(100, 20, 400, 340), quad=(60.0, 31.0, 241.0, 230.0))
    paste = PasteBack(picture, info, extended=False)
    x1, y1, x2, y2 = paste.region
    assert (x2 - x1, y2 - y1) == (181, 199)
    face = cv2.resize(picture[y1:y2, x1:x2], (256, 256), interpolation=cv2.INTER_AREA)
    out = paste(face)
    diff = np.abs(out.astype(int) - picture[:, :500].astype(int))[y1:y2, x1:x2]
    assert diff.mean() < 6.0  # only the resize round trip's blur


def test_no_visible_seam_when_the_face_is_brighter(picture):
    """A rendered face 50 levels brighter than the picture (with a bright spot in the middle): a plain paste
    leaves a 50-level step at the box edge, the seamless blend matches the edge and keeps the face's detail."""
    paste = PasteBack(picture, INFO, extended=False)
    x1, y1, x2, y2 = paste.region
    region = picture[y1:y2, x1:x2].astype(int)
    yy, xx = np.mgrid[0:y2 - y1, 0:x2 - x1]
    spot = 80 * np.exp(-(((yy - (y2 - y1) / 2) / 25.0) ** 2 + ((xx - (x2 - x1) / 2) / 25.0) ** 2))
    bright = np.clip(region + 50 + spot[..., None], 0, 255).astype(np.uint8)
    face = cv2.resize(bright, (256, 256), interpolation=cv2.INTER_AREA)
    out = paste(face).astype(int)
    ref = picture[:, :500].astype(int)

    def edge_step(img: np.ndarray) -> float:
        """Mean |inside - outside| across the four edges of the region, 2 pixels in and out."""
        steps = [img[y1 + 2, x1:x2] - img[y1 - 2, x1:x2], img[y2 - 3, x1:x2] - img[y2 + 1, x1:x2],
                 img[y1:y2, x1 + 2] - img[y1:y2, x1 - 2], img[y1:y2, x2 - 3] - img[y1:y2, x2 + 1]]
        return float(np.mean([np.abs(s).mean() for s in steps]))

    naive = ref.copy()
    naive[y1:y2, x1:x2] = np.clip(region + 50, 0, 255)
    assert edge_step(naive) > edge_step(ref) + 25
    assert edge_step(out) < edge_step(ref) + 4
    # the face's own detail (the spot) is in; the old picture is not simply kept
    cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
    assert (out[cy - 8:cy + 8, cx - 8:cx + 8] - ref[cy - 8:cy + 8, cx - 8:cx + 8]).mean() > 30


def test_a_region_touching_the_picture_edges_is_pasted(picture):
    info = CropInfo(size=(500, 512), box=(0, 0, 501, 512), quad=(0.0, 0.0, 501.0, 512.0))
    paste = PasteBack(picture, info, extended=True)
    assert paste.region == (0, 0, 500, 512)
    out = paste(np.zeros((256, 256, 3), np.uint8))
    assert out.shape == (512, 500, 3)


def test_bad_inputs_are_named(picture):
    with pytest.raises(InvalidInputError, match="RGB uint8"):
        PasteBack(picture.astype(np.float32), INFO, extended=False)
    tiny = CropInfo(size=(2, 2), box=(10, 10, 12, 12), quad=(0.0, 0.0, 2.0, 2.0))
    with pytest.raises(InvalidInputError, match="too small"):
        PasteBack(picture, tiny, extended=False)
