"""Parity of the face renderer with the original SadTalker (golden data from shared/tools/parity, PARITY_DIR)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.parity

KP_TOL = 1e-4
FRAME_TOL = 2e-3


def _max(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


@pytest.mark.parametrize("stage,mode,size,face", [
    ("render_crop_256", "crop", 256, "face_crop_256"),
    ("render_full_256", "full", 256, "face_full_256"),
    ("render_crop_512", "crop", 512, "face_crop_512"),
])
def test_renderer_matches_original(parity_dir: Path, parity_locations, stage: str, mode: str, size: int, face: str,
                                   record_property) -> None:
    from sadtalker.engines.sadtalker.render import FaceRenderer, renderer_coefficients, source_tensor

    g = dict(np.load(parity_dir / "golden" / f"{stage}.npz"))
    face_npz = np.load(parity_dir / "golden" / f"{face}.npz")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    renderer = FaceRenderer.from_checkpoint(parity_locations, size=size, device="cpu")

    # Inputs: the source picture and the coefficient windows, built by our code from the same raw inputs.
    image = source_tensor(face_npz["out_crop_png"], size)
    assert _max(image[0], g["in_source_image"][0]) < 1e-6
    target, source = renderer_coefficients(g["in_coeffs"], face_npz["out_coeff_3dmm"][0], mode)
    assert _max(source, g["in_source_semantics"][0, :, 0]) == 0.0
    n = len(g["in_coeffs"])
    golden_windows = g["in_target_semantics"].reshape((-1,) + g["in_target_semantics"].shape[2:])[:n]
    from sadtalker.engines.sadtalker.render import coefficient_windows
    assert _max(coefficient_windows(target, 0, n), golden_windows) == 0.0

    state = renderer.prepare_source(image, source, mode)
    diffs = {"kp_canonical": _max(state.kp_canonical[0], g["out_kp_canonical"][0]),
             "kp_source": _max(state.kp_source[0], g["out_kp_source"][0])}
    for k in ("yaw", "pitch", "roll", "t", "exp"):
        diffs[f"he_source_{k}"] = _max(getattr(state.source_motion, k)[0], g[f"mid_he_source_{k}"][0])

    frames, kps, heads, masks, deforms, occl = [], [], {k: [] for k in ("yaw", "pitch", "roll", "t", "exp")}, [], [], []
    for batch in renderer.render_batches(state, target, mode, batch_size=2):
        frames.append(batch.frames.numpy())
        kps.append(batch.kp_driving.numpy())
        for k in heads:
            heads[k].append(getattr(batch.head_motion, k).numpy())
        masks.append(batch.motion.mask.numpy())
        deforms.append(batch.motion.deformation.numpy())
        occl.append(batch.motion.occlusion_map.numpy())
    frames_np = np.concatenate(frames)
    assert frames_np.shape == g["out_frames"].shape
    diffs["kp_driving"] = _max(np.concatenate(kps), g["out_kp_driving"])
    for k in heads:
        diffs[f"he_driving_{k}"] = _max(np.concatenate(heads[k]), g[f"mid_he_driving_{k}"])
    per_frame = [_max(frames_np[i], g["out_frames"][i]) for i in range(n)]
    diffs["frames"] = max(per_frame)
    if "mid_mask" in g:
        diffs["mask"] = _max(np.concatenate(masks), g["mid_mask"])
        diffs["deformation"] = _max(np.concatenate(deforms), g["mid_deformation"])
        diffs["occlusion_map"] = _max(np.concatenate(occl), g["mid_occlusion_map"])
    for k, v in diffs.items():
        record_property(k, v)
    print(f"\n{stage} max abs differences: " + ", ".join(f"{k}={v:.3g}" for k, v in diffs.items()))
    print(f"{stage} per-frame max abs: " + ", ".join(f"{v:.3g}" for v in per_frame))
    for key in ("kp_canonical", "kp_source", "kp_driving"):
        assert diffs[key] < KP_TOL, (key, diffs[key])
    assert diffs["frames"] < FRAME_TOL
