"""Source-face stage (sadtalker.engines.sadtalker.source_face) and the original's detector networks (sadtalker.landmarks.retinaface_fan), with
random-weight checkpoints written in the official layouts."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from sadtalker.engines.sadtalker.paste import CropInfo
from sadtalker.engines.sadtalker.source_face import (
    LM3D_FIVE,
    RECON_SIZE,
    SourceFace,
    SourceFaceExtractor,
    align_for_recon,
    coeffs_73,
    fit_template,
    five_points,
    load_recon_net,
    make_landmarker,
    smooth_landmarks,
    smooth_stream,
)
from sadtalker.errors import CheckpointError, ImageError, NoFaceError
from sadtalker.landmarks.retinaface_fan import (
    AWingAligner,
    RetinaFaceAWingLandmarker,
    decode_boxes,
    heatmap_points,
    nms,
    prior_boxes,
    wflw98_to_ibug68,
)
from sadtalker.nets.face_recon import FaceReconNet
from sadtalker.weights import CheckpointLocations, forget_open_checkpoints


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def extractor(official_checkpoints: CheckpointLocations) -> SourceFaceExtractor:
    return SourceFaceExtractor.from_checkpoint(official_checkpoints, device="cpu", detector="facemesh")


# 1. template fit and 224 alignment
def test_template_fit_recovers_a_known_scale_and_shift() -> None:
    scale, shift = 123.0, np.array([140.0, 96.0])
    lm5 = LM3D_FIVE[:, :2].astype(np.float64) * scale + shift  # an orthographic view of the template
    t, s = fit_template(lm5)
    assert s == pytest.approx(scale, rel=1e-6)
    np.testing.assert_allclose(t, shift, atol=1e-6)


def test_five_points_are_eye_centres_nose_and_mouth_corners() -> None:
    lm = np.arange(136, dtype=np.float32).reshape(68, 2)
    p = five_points(lm)
    np.testing.assert_allclose(p[0], (lm[36] + lm[39]) / 2)
    np.testing.assert_allclose(p[1], (lm[42] + lm[45]) / 2)
    np.testing.assert_allclose(p[2:], lm[[30, 48, 54]])


def test_alignment_puts_the_face_at_the_template_scale(astronaut: np.ndarray) -> None:
    from sadtalker.landmarks.mesh68 import FaceMeshLandmarker

    lm = FaceMeshLandmarker()(astronaut)
    aligned = align_for_recon(astronaut, lm)
    assert aligned.image.shape == (RECON_SIZE, RECON_SIZE, 3) and aligned.image.dtype == np.uint8
    w0, h0, s, tx, ty = aligned.trans_params
    assert (w0, h0) == (512, 512) and 1.0 < s < 3.0
    # In the 224 crop (y up), the five points sit near the template's (102 px per unit; the fit is an affine
    # camera on a 3D template, so the 2D positions match only roughly), eyes 63 px apart as in the template.
    points = five_points(aligned.landmarks)
    expected = LM3D_FIVE[:, :2] * 102 + RECON_SIZE / 2
    assert np.abs(points - expected).max() < 16
    assert np.linalg.norm(points[1] - points[0]) == pytest.approx(0.621 * 102, rel=0.12)
    assert aligned.image.std() > 20  # a face, not padding


def test_coeffs_73_layout() -> None:
    full = np.arange(257, dtype=np.float32)[None]
    tp = np.array([[512, 512, 1.5, 100, 120]], np.float32)
    c = coeffs_73(full, tp)[0]
    np.testing.assert_array_equal(c[:64], np.arange(80, 144))
    np.testing.assert_array_equal(c[64:67], [224, 225, 226])
    np.testing.assert_array_equal(c[67:70], [254, 255, 256])
    np.testing.assert_array_equal(c[70:], [1.5, 100, 120])


# 2. the stage on the astronaut with the official-layout checkpoint
@pytest.mark.parametrize("mode,size", [("crop", 256), ("extcrop", 256), ("resize", 256), ("full", 256),
                                       ("extfull", 512)])
def test_extract_each_mode(extractor: SourceFaceExtractor, astronaut: np.ndarray, mode: str, size: int) -> None:
    face = extractor.extract(astronaut, mode, size)
    assert isinstance(face, SourceFace) and isinstance(face.crop_info, CropInfo)
    assert face.crop.shape == (size, size, 3) and face.crop.dtype == np.uint8
    assert face.coeffs73.shape == (73,) and face.coeffs73.dtype == np.float32
    assert face.coeffs257.shape == (257,) and np.all(np.isfinite(face.coeffs257))
    np.testing.assert_array_equal(face.coeffs73, coeffs_73(face.coeffs257[None], face.aligned.trans_params)[0])
    if mode == "resize":
        assert face.crop_info.size == (512, 512) and face.crop_info.box is None
    else:
        w, h = face.crop_info.size
        assert 150 < w < 260 and 150 < h < 260  # the ~105-px face plus the FFHQ margin
        left, top, right, bottom = face.crop_info.box
        assert left < face.landmarks[36, 0] and face.landmarks[45, 0] < right and top <= face.landmarks[19, 1]
    # landmarks found again on the crop agree with the picture's landmarks mapped into it
    assert face.landmarks_crop.shape == (68, 2)


def test_coefficients_match_a_direct_network_call(extractor: SourceFaceExtractor, astronaut: np.ndarray) -> None:
    face = extractor.extract(astronaut, "crop", 256)
    x = torch.from_numpy(face.aligned.image.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.inference_mode():
        direct = extractor.recon(x)[0].numpy()
    np.testing.assert_allclose(face.coeffs257, direct, atol=1e-5)


def test_no_face_and_bad_files_raise(extractor: SourceFaceExtractor, no_face_path: Path, tmp_path: Path) -> None:
    with pytest.raises(NoFaceError, match="no face"):
        extractor.extract_path(no_face_path, "crop", 256)
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(ImageError, match="could not read"):
        extractor.extract_path(corrupt, "crop", 256)
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    with pytest.raises(ImageError):
        extractor.extract_path(text, "crop", 256)
    with pytest.raises(ImageError, match="RGB uint8"):
        extractor.extract(np.zeros((64, 64), np.float32), "crop", 256)


def test_face_too_small_raises(official_checkpoints: CheckpointLocations, astronaut: np.ndarray) -> None:
    strict = SourceFaceExtractor.from_checkpoint(official_checkpoints, detector="facemesh", min_face_px=300)
    with pytest.raises(NoFaceError, match="too small"):
        strict.extract(astronaut, "crop", 256)


# 3. reference videos
def test_extract_video_gives_one_row_per_frame(extractor: SourceFaceExtractor, astronaut: np.ndarray,
                                               caplog: pytest.LogCaptureFixture) -> None:
    blank = np.full_like(astronaut, 128)
    frames = [blank, astronaut, np.roll(astronaut, 4, axis=1), blank, np.roll(astronaut, -4, axis=0)]
    with caplog.at_level(logging.INFO, logger="sadtalker.engines.sadtalker.source_face"):
        coeffs = extractor.extract_video(iter(frames), "crop")
    assert coeffs.shape == (5, 73) and coeffs.dtype == np.float32 and np.all(np.isfinite(coeffs))
    assert "no face in the first 1 frames" in caplog.text
    with pytest.raises(NoFaceError):
        extractor.extract_video(iter([blank, blank]), "crop")


@pytest.mark.parametrize("radius", [0, 1, 2, 3])
@pytest.mark.parametrize("length", [1, 2, 5, 9])
def test_streamed_smoothing_equals_the_whole_track(radius: int, length: int) -> None:
    track = np.random.default_rng(length).normal(size=(length, 68, 2)).astype(np.float32)
    streamed = [lm for _, lm in smooth_stream(((i, lm) for i, lm in enumerate(track)), radius)]
    np.testing.assert_allclose(np.stack(streamed), smooth_landmarks(track, radius), atol=1e-5)
    if radius and length > 2:
        assert np.abs(np.stack(streamed) - track).max() > 0


# 4. checkpoints
def test_legacy_epoch_20_file_loads(tmp_path: Path) -> None:
    net = FaceReconNet()
    torch.save({"net_recon": net.state_dict(), "epoch": 20}, tmp_path / "epoch_20.pth")
    loaded = load_recon_net(CheckpointLocations(checkpoint_dir=tmp_path, gfpgan_dir=tmp_path))
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_missing_or_wrong_checkpoint_raises(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_recon_net(CheckpointLocations(checkpoint_dir=tmp_path, gfpgan_dir=tmp_path))
    torch.save({"net_recon": {"backbone.conv1.weight": torch.zeros(1)}}, tmp_path / "epoch_20.pth")
    forget_open_checkpoints()
    with pytest.raises(CheckpointError, match="missing keys"):
        load_recon_net(CheckpointLocations(checkpoint_dir=tmp_path, gfpgan_dir=tmp_path))


# 5. the original's detector networks
def test_original_detectors_load_from_the_official_files(official_gfpgan_weights: CheckpointLocations) -> None:
    landmarker = make_landmarker(official_gfpgan_weights, "auto", torch.device("cpu"), 40)
    assert isinstance(landmarker, RetinaFaceAWingLandmarker)
    img = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    loc, conf, landms, priors = landmarker.detector.raw(img)
    count = sum((-(-96 // s)) * (-(-128 // s)) * 2 for s in (8, 16, 32))
    assert loc.shape == (1, count, 4) and conf.shape == (1, count, 2) and landms.shape == (1, count, 10)
    assert priors.shape == (count, 4)
    torch.testing.assert_close(conf.sum(-1), torch.ones(1, count))
    heat = landmarker.aligner.heatmaps(img[:60, :50])
    assert heat.shape == (1, 99, 64, 64) and np.all(np.isfinite(heat))
    lm98 = landmarker.aligner(img[:60, :50])
    assert lm98.shape == (98, 2) and lm98[:, 0].max() <= 50 + 1 and lm98[:, 1].max() <= 60 + 1


def test_prior_boxes_and_decoding() -> None:
    priors = prior_boxes(64, 32)
    assert priors.shape == ((8 * 4 + 4 * 2 + 2 * 1) * 2, 4)
    np.testing.assert_allclose(priors[0].numpy(), [4 / 32, 4 / 64, 16 / 32, 16 / 64])
    np.testing.assert_allclose(priors[1].numpy(), [4 / 32, 4 / 64, 32 / 32, 32 / 64])
    boxes = decode_boxes(torch.zeros(2, 4), priors[:2])
    np.testing.assert_allclose(boxes[0].numpy(), [4 / 32 - 8 / 32, 4 / 64 - 8 / 64, 4 / 32 + 8 / 32, 4 / 64 + 8 / 64],
                               atol=1e-7)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.9, 0.95, 0.5, 0.8], np.float32)
    assert nms(boxes, scores, 0.4) == [1, 2]
    assert nms(boxes, scores, 0.95) == [1, 0, 3, 2]  # by score


def test_heatmap_points_quarter_pixel_rule() -> None:
    heat = np.zeros((1, 2, 64, 64), np.float32)
    heat[0, 0, 10, 20] = 1.0
    heat[0, 0, 10, 21] = 0.5   # right neighbour larger -> +0.25 in x
    heat[0, 0, 9, 20] = 0.3    # upper neighbour larger -> -0.25 in y
    heat[0, 1, 30, 40] = 1.0
    pts = heatmap_points(heat)
    np.testing.assert_allclose(pts[0, 0], [20 + 0.25 + 0.5, 10 - 0.25 + 0.5])
    np.testing.assert_allclose(pts[0, 1], [40.5, 30.5])
    heat[0, 1, 63, 63] = 2.0   # the original would index past the end here; we clamp
    assert np.all(np.isfinite(heatmap_points(heat)))


def test_98_to_68_table() -> None:
    lm98 = np.stack([np.arange(98), np.arange(98) * 10], axis=1).astype(np.float64)
    lm68 = wflw98_to_ibug68(lm98)
    assert lm68.dtype == np.float32
    np.testing.assert_array_equal(lm68[:17, 0], np.arange(0, 33, 2))
    np.testing.assert_array_equal(lm68[[30, 36, 39, 42, 45, 48, 54], 0], [54, 60, 64, 68, 72, 76, 82])
    assert lm68[18, 0] == (34 + 41) / 2 and lm68[26, 0] == 46


def test_awing_input_is_resized_bgr_over_255() -> None:
    crop = np.zeros((40, 30, 3), np.uint8)
    crop[..., 0] = 255  # red
    x = AWingAligner.prepare(crop)
    assert x.shape == (1, 3, 256, 256)
    assert float(x[0, 2].mean()) == 1.0 and float(x[0, 0].mean()) == 0.0


def test_reference_video_file_round_trip(extractor: SourceFaceExtractor, astronaut: np.ndarray,
                                         tmp_path: Path) -> None:
    """An mp4 written and decoded by sadtalker.io.video (ffmpeg), as the pipeline reads reference videos."""
    from sadtalker.io.video import VideoWriter, iter_video_frames

    path = tmp_path / "ref.mp4"
    small = astronaut[::2, ::2]
    with VideoWriter(path, 256, 256) as writer:
        for shift in range(4):
            writer.write(np.ascontiguousarray(np.roll(small, shift * 2, axis=1)))
    coeffs = extractor.extract_video(iter_video_frames(path, 10), "crop")
    assert coeffs.shape == (4, 73) and np.all(np.isfinite(coeffs))
    # The crop box is fixed by the first frame, so a face moving right shows as a changing alignment shift.
    assert np.ptp(coeffs[:, 71]) > 0.5


def test_precision_reaches_the_3dmm_regressor(official_checkpoints: CheckpointLocations,
                                              astronaut: np.ndarray) -> None:
    """The service's precision setting runs the reconstruction net under autocast (bf16 here, on the CPU); the
    coefficients stay float32 and close to the exact ones."""
    exact = SourceFaceExtractor.from_checkpoint(official_checkpoints, detector="facemesh")
    reduced = SourceFaceExtractor.from_checkpoint(official_checkpoints, detector="facemesh", precision="bf16")
    assert exact.precision == "fp32" and reduced.precision == "bf16"
    seen: list[torch.dtype] = []
    conv = next(m for m in reduced.recon.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    a = exact.extract(astronaut, "crop").coeffs73
    b = reduced.extract(astronaut, "crop").coeffs73
    assert seen == [torch.bfloat16]
    assert b.dtype == np.float32 and np.isfinite(b).all() and a.shape == b.shape
