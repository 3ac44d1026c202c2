"""Parity with the original GFPGAN (GFPGANv1Clean) and facexlib ParseNet on the golden data of
shared/tools/parity (random official-layout weights, PARITY_DIR)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sadtalker.engines.sadtalker.enhance import FaceEnhancer, _to_input, _to_uint8_rgb

pytestmark = pytest.mark.parity

TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def enhancer(parity_locations) -> FaceEnhancer:
    return FaceEnhancer.from_checkpoint(parity_locations, landmarks=lambda rgb: np.zeros((0, 5, 2)), use_parse=True)


def _noise_maps(golden) -> list[torch.Tensor]:
    flat, maps, offset = torch.from_numpy(golden["noise_styleconv"]), [], 0
    for shape in golden["noise_shapes"]:
        n = int(np.prod(shape))
        maps.append(flat[offset:offset + n].view(*map(int, shape)))
        offset += n
    assert offset == flat.numel()
    return maps


def test_gfpgan_matches_original(parity_dir, enhancer):
    golden = np.load(parity_dir / "golden" / "gfpgan.npz")
    face_rgb = golden["in_face_bgr"][..., ::-1]
    x = _to_input(np.ascontiguousarray(face_rgb)[None], torch.device("cpu"))
    np.testing.assert_array_equal(x.numpy(), golden["in_tensor"])  # GFPGANer's preprocessing

    with torch.inference_mode():
        fixed = enhancer.gfpgan(x).numpy()  # stored noise (our default)
        random = enhancer.gfpgan(x, noise=_noise_maps(golden))  # GFPGANer's randomize_noise=True, same draws
    fixed_diff = np.abs(fixed - golden["out_fixed_noise"]).max()
    random_diff = np.abs(random.numpy() - golden["out_random_noise"]).max()
    print(f"GFPGAN max abs diff: fixed noise {fixed_diff:.3g}, random noise {random_diff:.3g}")
    assert fixed_diff <= TOLERANCE and random_diff <= TOLERANCE

    # the uint8 face as GFPGANer returns it (basicsr tensor2img), here in RGB
    ours = _to_uint8_rgb(random)[0].astype(int)
    assert np.abs(ours - golden["out_random_noise_bgr_uint8"][..., ::-1]).max() <= 1


def test_parsenet_matches_original(parity_dir, enhancer):
    golden = np.load(parity_dir / "golden" / "detect.npz")
    with torch.inference_mode():
        logits = enhancer.parser(torch.from_numpy(golden["in_parse_input"]))[0].numpy()
    diff = np.abs(logits - golden["out_parse_logits"]).max()
    scale = np.abs(golden["out_parse_logits"]).max()
    print(f"ParseNet max abs diff {diff:.3g} (logits up to {scale:.3g})")
    assert diff <= TOLERANCE
    assert (logits.argmax(axis=1)[0] == golden["out_parse_labels"]).mean() > 0.999


def test_alignment_and_paste_back_match_facexlib(parity_dir, enhancer, tmp_path):
    """facexlib's FaceRestoreHelper (align_warp_face, get_inverse_affine, paste_faces_to_input_image), run in the
    original's interpreter on the astronaut with the same five points and a stand-in restored face (255 - aligned),
    against our align_face/paste-back, square and parsing masks, upscale 1 and 2.

    Needs UPSTREAM_PYTHON and UPSTREAM_ROOT (as for the speed benchmark) and the harness folder (PARITY_HARNESS,
    default ../shared/tools/parity beside the repo). Bit-exact with the same OpenCV version; OpenCV 5 interpolates
    warpAffine slightly differently from the 4.x the original pins, so then up to 3 levels (rounding) differ.
    """
    python, root = os.environ.get("UPSTREAM_PYTHON"), os.environ.get("UPSTREAM_ROOT")
    repo = Path(__file__).resolve().parents[2]
    harness = Path(os.environ.get("PARITY_HARNESS", repo.parent / "shared" / "tools" / "parity"))
    if not (python and root and (harness / "upstream.py").is_file()):
        pytest.skip("UPSTREAM_PYTHON, UPSTREAM_ROOT and PARITY_HARNESS (the original's environment) not set")
    import subprocess

    import cv2

    from sadtalker.engines.sadtalker.enhance import align_face

    out_npz = tmp_path / "facexlib_paste.npz"
    subprocess.run([python, str(Path(__file__).with_name("enhancer_upstream_paste.py")), str(harness), root,
                    str(parity_dir), str(out_npz)], check=True, capture_output=True, timeout=600)
    golden = np.load(out_npz)
    same_cv2 = str(golden["cv2_version"]) == cv2.__version__
    five = golden["five"]
    from skimage import data

    rgb = data.astronaut()
    for upscale in (1, 2):
        for use_parse in (False, True):
            stage = FaceEnhancer(enhancer.gfpgan, enhancer.parser if use_parse else None, lambda im: five[None],
                                 upscale=upscale)
            stage.restore = lambda faces: 255 - faces  # the same stand-in restoration
            face_diff = np.abs(align_face(rgb, five)[0].astype(int) - golden[f"face_{upscale}_{int(use_parse)}"])
            diff = np.abs(stage.enhance([rgb])[0].astype(int) - golden[f"out_{upscale}_{int(use_parse)}"])
            print(f"upscale {upscale}, parse {use_parse}: aligned face max diff {face_diff.max()}, pasted frame max "
                  f"diff {diff.max()} ({(diff > 0).mean():.2%} of values; OpenCV {cv2.__version__} here, "
                  f"{golden['cv2_version']} upstream)")
            assert face_diff.max() <= (0 if same_cv2 else 3) and diff.max() <= (0 if same_cv2 else 3)
            assert (diff > 0).mean() < (1e-9 if same_cv2 else 0.05)
