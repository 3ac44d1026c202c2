"""Parity of Ditto's renderer half with the original (golden data from shared/tools/ditto_parity, DITTO_PARITY_DIR):
source stage (crop geometry, eye conditions, 256 input, motion and appearance features), motion stitching, warp +
decoder, paste-back. Run with `pytest -s` to see the measured maximum differences."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.parity

FEATURE_TOL = 1e-4     # renderer features and keypoints, absolute
MOTION_TOL = 1e-4      # stitched motion
FRAME_TOL = 2e-3       # frames on a 0..1 scale
KP_KEYS = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")


def _max(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def _report(stage: str, diffs: dict[str, float]) -> None:
    print(f"\n[ditto parity] {stage}: " + ", ".join(f"{k} {v:.3g}" for k, v in diffs.items()))


@pytest.fixture(scope="module")
def golden(ditto_parity_dir: Path):
    def load(stage: str) -> dict[str, np.ndarray]:
        return dict(np.load(ditto_parity_dir / "golden" / f"{stage}.npz"))
    return load


@pytest.fixture(scope="module")
def networks(ditto_parity_dir: Path):
    """Our networks, loaded strictly from the random-weight files in the official layouts."""
    from sadtalker.engines.ditto.weights import DittoCheckpoints, load_renderer_networks

    torch.set_num_threads(max(1, torch.get_num_threads()))
    return load_renderer_networks(DittoCheckpoints(root=ditto_parity_dir / "checkpoints"))


def test_cfg_pickle_reads_as_plain_data(ditto_parity_dir: Path) -> None:
    from sadtalker.engines.ditto.weights import DittoCheckpoints, read_cfg

    cfg = read_cfg(DittoCheckpoints(root=ditto_parity_dir / "checkpoints").cfg_file)
    assert cfg["audio2motion_cfg"]["seq_frames"] == 80
    assert cfg["base_cfg"]["decoder_cfg"]["model_path"].endswith("decoder.pth")


def test_source_stage_matches_original(golden, networks) -> None:
    from sadtalker.engines.ditto.source import (
        SourceEncoder,
        crop_source,
        crop_to_input,
        eye_conditions,
        landmarks203_reference,
    )

    g = golden("source")
    diffs: dict[str, float] = {}
    # 1. crop geometry from the same 203 landmarks
    crop = crop_source(g["in_image"], landmarks203_reference(g["mid_lmk203"]))
    diffs["M_c2o"] = _max(crop.M_c2o, g["out_M_c2o"])
    diffs["crop512 (uint8)"] = _max(crop.image, g["out_img_crop512"])
    assert diffs["M_c2o"] < 1e-4 and diffs["crop512 (uint8)"] <= 1
    # 2. eye conditions from the same 478 landmarks
    eye_open, eye_ball = eye_conditions(g["in_lmk478"])
    diffs["eye_open"], diffs["eye_ball"] = _max(eye_open, g["out_eye_open"]), _max(eye_ball, g["out_eye_ball"])
    assert diffs["eye_open"] < 1e-5 and diffs["eye_ball"] < 1e-5
    # 3. 256 input
    diffs["rgb256"] = _max(crop_to_input(g["out_img_crop512"]), g["out_rgb256"])
    assert diffs["rgb256"] == 0.0
    # 4. networks on the golden input, then the whole stage end to end
    encoder = SourceEncoder(networks["motion_extractor"], networks["appearance_extractor"])
    motion, f_s = encoder.features(g["out_rgb256"])
    for k in KP_KEYS:
        diffs[k] = _max(motion[k], g[f"out_x_s_{k}"])
    diffs["f_s"] = _max(f_s, g["out_f_s"])
    info = encoder(g["in_image"], landmarks=landmarks203_reference(g["mid_lmk203"]), lmk478=g["in_lmk478"])
    diffs["stage f_s"] = _max(info.f_s, g["out_f_s"])
    diffs["stage kp"] = max(_max(info.motion[k], g[f"out_x_s_{k}"]) for k in KP_KEYS)
    diffs["sc"] = _max(info.sc, g["out_sc"])
    _report("source", diffs)
    for k in (*KP_KEYS, "f_s", "stage f_s", "stage kp", "sc"):
        assert diffs[k] < FEATURE_TOL, k


def test_official_landmark_chain_matches_original(golden) -> None:
    """Box -> 106-point crop -> 224 crop -> 203 points, with the models' outputs given (stand-ins in the golden)."""
    from sadtalker.engines.ditto.official_landmarks import (
        landmark106_input,
        landmark106_points,
        landmark203_input,
        landmark203_points,
    )

    g = golden("source")
    blob, affine = landmark106_input(g["in_image"], g["in_det"][0])
    lmk106 = landmark106_points(g["in_lmk106_raw"], affine)
    inp, m_c2o = landmark203_input(g["in_image"], lmk106)
    lmk203 = landmark203_points(g["in_lmk203_raw"], m_c2o)
    diffs = {"lmk106 input": _max(blob, g["mid_lmk106_input"]), "lmk106": _max(lmk106, g["mid_lmk106"]),
             "lmk203 input": _max(inp, g["mid_lmk203_input"]), "lmk203": _max(lmk203, g["mid_lmk203"])}
    _report("landmark chain", diffs)
    assert diffs["lmk106 input"] == 0.0 and diffs["lmk203 input"] < 1e-6
    assert diffs["lmk106"] < 1e-3 and diffs["lmk203"] < 1e-3


def test_motion_stitch_matches_original(golden, networks) -> None:
    from sadtalker.engines.ditto.stitch import MotionStitcher

    s, g = golden("source"), golden("motion_stitch")
    source = {k: s[f"out_x_s_{k}"] for k in KP_KEYS}
    driving = {k[len("in_x_d_"):]: v for k, v in g.items() if k.startswith("in_x_d_")}
    stitcher = MotionStitcher(networks["stitch_network"])
    x_s, x_d = stitcher(source, driving)
    diffs = {"x_s": _max(x_s, g["out_x_s"]), "x_d": _max(x_d, g["out_x_d"])}
    unstitched = MotionStitcher(None, stitcher.options.__class__(stitching=False))(source, driving)[1]
    diffs["x_d before stitching"] = _max(unstitched, g["mid_x_d_before_stitch"])
    _report("motion_stitch", {**diffs, "frames": len(x_d)})
    assert max(diffs.values()) < MOTION_TOL


def test_render_matches_original(golden, networks) -> None:
    from sadtalker.engines.ditto.render import FrameRenderer

    g = golden("render")
    warp, decoder = networks["warp_network"], networks["decoder"]
    f_s, x_s, x_d = (torch.from_numpy(g[k]) for k in ("in_f_s", "in_x_s", "in_x_d"))
    diffs: dict[str, float] = {}
    with torch.inference_mode():
        motion = warp.dense_motion_network(warp.compress(f_s), x_d, x_s.expand(len(x_d), -1, -1))
        diffs["dense mask"] = _max(motion.mask, g["mid_dense_mask"])
        diffs["deformation"] = _max(motion.deformation, g["mid_dense_deformation"])
        diffs["occlusion"] = _max(motion.occlusion_map, g["mid_occlusion_map"])
        f_3d = warp(f_s.expand(len(x_d), -1, -1, -1, -1), x_s.expand(len(x_d), -1, -1), x_d, motion=motion)
        diffs["f_3d"] = _max(f_3d, g["out_f_3d"])
        diffs["decoder (0..1)"] = _max(decoder(torch.from_numpy(g["out_f_3d"])), g["mid_decoder_raw"])
    frames = np.stack(list(FrameRenderer(warp, decoder).frames(f_s, x_s, x_d)))
    diffs["frames (0..1)"] = _max(frames / 255.0, g["out_render_img"] / 255.0)
    _report("render", diffs)
    for k in ("dense mask", "deformation", "occlusion", "f_3d"):
        assert diffs[k] < FEATURE_TOL, k
    assert diffs["decoder (0..1)"] < FRAME_TOL and diffs["frames (0..1)"] < FRAME_TOL


def test_paste_back_matches_original(golden) -> None:
    from sadtalker.engines.ditto.paste import PasteBack, paste_mask

    g = golden("putback")
    diffs = {"mask": _max(paste_mask(), g["mid_mask"][:, :, 0])}
    paste = PasteBack(g["in_frame_rgb"], g["in_M_c2o"])
    diffs["mask warped"] = _max(paste.mask[:, :, 0], g["mid_mask_warped"][0][:, :, 0].clip(0, 1))
    frames = np.stack([paste(img) for img in g["in_render_img"]])
    diffs["frame (uint8)"] = _max(frames, g["out_frame"])
    diffs["pixels differing"] = float((frames != g["out_frame"]).sum())
    _report("putback", diffs)
    assert diffs["mask"] == 0.0 and diffs["mask warped"] < 1e-6
    assert diffs["frame (uint8)"] <= 1
