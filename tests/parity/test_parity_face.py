"""Parity of the source-face stage and the original's detector networks with golden data from the original code
(tools/parity: face_{crop,extcrop,resize,full}_256.npz, face_crop_512.npz, detect.npz), on the harness's
random-weight official checkpoints. Needs PARITY_DIR."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sadtalker.engines.sadtalker.crop import crop_face, map_to_region
from sadtalker.engines.sadtalker.source_face import SourceFaceExtractor, align_for_recon, load_recon_net, recon_input
from sadtalker.landmarks.retinaface_fan import AWingAligner, RetinaFaceAWingLandmarker, wflw98_to_ibug68
from sadtalker.weights import CheckpointLocations

pytestmark = pytest.mark.parity

FACE_CASES = [("crop", 256), ("extcrop", 256), ("resize", 256), ("full", 256), ("crop", 512)]
COEFF_TOL = 1e-4


@pytest.fixture(scope="module")
def parity_dir(parity_dir: Path) -> Path:
    """The shared golden folder, when it has the face stage's files."""
    if not (parity_dir / "golden" / "face_crop_256.npz").is_file():
        pytest.skip(f"PARITY_DIR={parity_dir} has no golden/face_crop_256.npz")
    return parity_dir


@pytest.fixture(scope="module")
def locations(parity_locations: CheckpointLocations) -> CheckpointLocations:
    return parity_locations


def golden(parity_dir: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(parity_dir / "golden" / name) as data:
        return {k: data[k] for k in data.files}


class GivenLandmarks:
    """Answers both landmark calls as the harness did: picture landmarks first, then the crop's."""

    name = "given"

    def __init__(self, on_picture: np.ndarray, on_crop: np.ndarray) -> None:
        self.on_picture, self.on_crop = on_picture, on_crop

    def __call__(self, image: np.ndarray, channels_as_given: bool = False) -> np.ndarray:
        return self.on_picture if channels_as_given else self.on_crop


@pytest.mark.parametrize("mode,size", FACE_CASES)
def test_crop_geometry_and_picture(parity_dir: Path, mode: str, size: int) -> None:
    g = golden(parity_dir, f"face_{mode}_{size}.npz")
    face = crop_face(g["in_image"], g["in_lm68_image"], mode, size)
    info = face.crop_info
    assert info.size == tuple(int(v) for v in g["out_crop_size"])
    if mode == "resize":
        assert info.box is None and info.quad is None and np.all(g["out_crop_box"] == -1)
    else:
        assert info.box == tuple(int(v) for v in g["out_crop_box"])
        np.testing.assert_allclose(info.quad, g["out_quad"], rtol=0, atol=1e-9)
    diff = np.abs(face.image.astype(int) - g["out_crop_png"]).max()
    print(f"{mode} {size}: crop picture max abs diff {diff}")
    assert diff <= 1
    mapped = map_to_region(g["in_lm68_image"], g["in_image"].shape[1::-1], face.geometry, mode.startswith("ext"), size)
    np.testing.assert_allclose(mapped, g["in_lm68_crop"], atol=1e-3)


@pytest.mark.parametrize("mode,size", FACE_CASES)
def test_alignment_and_coefficients(parity_dir: Path, locations: CheckpointLocations, mode: str, size: int) -> None:
    g = golden(parity_dir, f"face_{mode}_{size}.npz")
    aligned = align_for_recon(g["out_crop_png"], g["in_lm68_crop"])
    np.testing.assert_allclose(aligned.trans_params, g["mid_trans_params"], rtol=1e-6)
    image_diff = np.abs(aligned.image.astype(int) - g["mid_aligned224"]).max()
    np.testing.assert_allclose(aligned.landmarks, g["mid_lm224"], atol=1e-3)
    x = recon_input([aligned.image], torch.device("cpu"))
    input_diff = float(np.abs(x.numpy() - g["mid_net_input"]).max())
    with torch.inference_mode():
        full = load_recon_net(locations)(x).numpy()
    full_diff = float(np.abs(full - g["out_full_3dmm"]).max())
    print(f"{mode} {size}: aligned224 {image_diff}/255, net input {input_diff:.2e}, 257 coeffs {full_diff:.2e}")
    assert image_diff <= 1 and input_diff <= 1 / 255 + 1e-7 and full_diff < COEFF_TOL


@pytest.mark.parametrize("mode,size", FACE_CASES)
def test_stage_end_to_end_with_the_given_landmarks(parity_dir: Path, locations: CheckpointLocations, mode: str,
                                                   size: int) -> None:
    g = golden(parity_dir, f"face_{mode}_{size}.npz")
    stage = SourceFaceExtractor(load_recon_net(locations), GivenLandmarks(g["in_lm68_image"], g["in_lm68_crop"]))
    face = stage.extract(g["in_image"], mode, size)
    crop_diff = int(np.abs(face.crop.astype(int) - g["out_crop_png"]).max())
    c73 = float(np.abs(face.coeffs73 - g["out_coeff_3dmm"][0]).max())
    c257 = float(np.abs(face.coeffs257 - g["out_full_3dmm"][0]).max())
    print(f"{mode} {size}: stage crop {crop_diff}, coeff73 {c73:.2e}, coeff257 {c257:.2e}")
    assert crop_diff <= 1 and c73 < COEFF_TOL and c257 < COEFF_TOL


@pytest.fixture(scope="module")
def detectors(locations: CheckpointLocations) -> RetinaFaceAWingLandmarker:
    return RetinaFaceAWingLandmarker.from_checkpoint(locations, "cpu")


def test_retinaface_outputs(parity_dir: Path, detectors: RetinaFaceAWingLandmarker) -> None:
    g = golden(parity_dir, "detect.npz")
    loc, conf, landms, priors = detectors.detector.raw(g["in_image"])
    np.testing.assert_array_equal(priors.numpy(), g["mid_priors"])
    diffs = {name: float(np.abs(ours.numpy() - g[key]).max())
             for name, ours, key in (("loc", loc, "out_loc"), ("conf", conf, "out_conf"),
                                     ("landms", landms, "out_landms"))}
    print(f"RetinaFace raw heads max abs diff {diffs}")
    assert max(diffs.values()) < 1e-4
    dets = detectors.detector.detect(g["in_image"], float(g["in_conf_threshold"]))
    assert dets.shape == g["out_dets"].shape
    threshold = float(g["in_conf_threshold"])
    print(f"detections (threshold {threshold:.4f}) max abs diff {np.abs(dets - g['out_dets']).max()}")
    np.testing.assert_allclose(dets, g["out_dets"], atol=1e-3)


def test_retinaface_detections_at_097(parity_dir: Path, detectors: RetinaFaceAWingLandmarker) -> None:
    """Same detections and score order; boxes of exactly equal score may come in another order (numpy's sort
    of ties differs between NumPy 1.23 and 2), so rows are compared as sets."""
    g = golden(parity_dir, "detect.npz")
    dets, want = detectors.detector.detect(g["in_image"], 0.97), g["out_dets_097"]
    assert dets.shape == want.shape
    np.testing.assert_array_equal(dets[:, 4], want[:, 4])

    def by_rows(a: np.ndarray) -> np.ndarray:
        return a[np.lexsort(a.T[::-1])]

    np.testing.assert_allclose(by_rows(dets), by_rows(want), atol=1e-3)


def test_awing_landmarks(parity_dir: Path, detectors: RetinaFaceAWingLandmarker) -> None:
    g = golden(parity_dir, "detect.npz")
    crop = g["in_face_crop"]
    np.testing.assert_array_equal(AWingAligner.prepare(crop).numpy(), g["mid_awing_input"])
    heat = detectors.aligner.heatmaps(crop)
    heat_diff = float(np.abs(heat - g["out_awing_heatmaps"]).max())
    lm98 = detectors.aligner(crop)
    lm_diff = float(np.abs(lm98 - g["out_lm98"]).max())
    lm68_diff = float(np.abs(wflw98_to_ibug68(lm98) - g["out_lm68"]).max())
    print(f"AWing heatmaps {heat_diff:.2e}, 98 points {lm_diff:.2e}, 68 points {lm68_diff:.2e}")
    assert heat_diff < 1e-4 and lm_diff < 1e-3 and lm68_diff < 1e-3
