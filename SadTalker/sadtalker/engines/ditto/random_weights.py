"""Seeded random weights for Ditto's renderer networks, written in the official file layouts.

For tests, benchmarks and device checks where the real release is not available. The values are scaled so a
render stays in the ranges trained weights give (keypoints within about +-1, pose near frontal, scale near 1,
unsaturated decoder output); nothing here tries to look like a face.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from sadtalker.engines.ditto.weights import DITTO_FILES, RENDERER_NETWORKS, DittoCheckpoints

logger = logging.getLogger(__name__)


def build_renderer_networks() -> dict[str, nn.Module]:
    """Our five renderer networks with the released configs (untrained)."""
    from sadtalker.nets.ditto.appearance_extractor import AppearanceFeatureExtractor
    from sadtalker.nets.ditto.motion_extractor import MotionExtractor
    from sadtalker.nets.ditto.spade_decoder import build_decoder
    from sadtalker.nets.ditto.stitching_network import StitchingNetwork
    from sadtalker.nets.ditto.warping_network import WarpingNetwork

    return {"appearance_extractor": AppearanceFeatureExtractor(), "motion_extractor": MotionExtractor(),
            "warp_network": WarpingNetwork(), "decoder": build_decoder(), "stitch_network": StitchingNetwork()}


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Weights N(0, 1/fan_in), 1-D weights 1 + N(0, 0.01), biases N(0, 0.01), BatchNorm statistics near (0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / max(p[0].numel(), 1) ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
    return module.eval()


def calibrate_(nets: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Shrink the motion heads and the stitching output so random keypoints and poses stay plausible."""
    with torch.no_grad():
        det = nets["motion_extractor"].detector
        for head, f in ((det.fc_kp, 0.3), (det.fc_exp, 0.03), (det.fc_t, 0.05), (det.fc_pitch, 0.5),
                        (det.fc_yaw, 0.5), (det.fc_roll, 0.5)):
            head.weight.mul_(f)
            head.bias.mul_(f)
        det.fc_scale.weight.mul_(0.01)
        det.fc_scale.bias.fill_(1.0)
        last = nets["stitch_network"].mlp[-1]
        last.weight.mul_(0.05)
        last.bias.mul_(0.05)
    return nets


def spectral_norm_state(state: dict[str, torch.Tensor], seed: int, iters: int = 30) -> dict[str, torch.Tensor]:
    """The decoder's state dict as torch's spectral_norm stores it: every SPADE-block conv weight W becomes
    `weight_orig` = W with converged singular vectors `weight_u`, `weight_v` (so loading folds W / sigma_max)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[1] in ("conv_0", "conv_1", "conv_s") and parts[2] == "weight":
            mat = value.reshape(value.shape[0], -1)
            u = torch.nn.functional.normalize(torch.randn(mat.shape[0], generator=gen), dim=0, eps=1e-12)
            for _ in range(iters):
                v = torch.nn.functional.normalize(mat.t() @ u, dim=0, eps=1e-12)
                u = torch.nn.functional.normalize(mat @ v, dim=0, eps=1e-12)
            base = key[: -len("weight")]
            out[base + "weight_orig"] = value.clone()
            out[base + "weight_u"] = u
            out[base + "weight_v"] = v
        else:
            out[key] = value.clone()
    return out


def official_payload(name: str, state: dict[str, torch.Tensor], seed: int = 0) -> object:
    """What the official file of `name` holds, given our module's state dict."""
    if name == "decoder":
        state = spectral_norm_state(state, seed)
    container = DITTO_FILES[name].container
    return {container: state} if container else state


def write_random_checkpoints(root: Path, seed: int = 0,
                             names: tuple[str, ...] = RENDERER_NETWORKS) -> DittoCheckpoints:
    """Write random-weight renderer files under `root` in the release layout; returns their locations."""
    checkpoints = DittoCheckpoints(root=Path(root))
    nets = calibrate_({k: randomize_(v, seed * 100 + i) for i, (k, v) in enumerate(build_renderer_networks().items())})
    for name in names:
        path = checkpoints.network_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(official_payload(name, nets[name].state_dict(), seed), path)
        logger.info("wrote random %s weights to %s", name, path)
    return checkpoints


# ------------------------------------------------------------------------------------- the whole release, for tests
def release_cfg() -> dict[str, object]:
    """A config pickle's contents with the keys the original's parse_cfg reads (paths relative to ditto_pytorch/,
    as it resolves them) and no `default_kwargs`: the StreamSDK defaults. Not the released file."""
    aux, dev = "aux_models/", "cuda"
    return {
        "base_cfg": {
            "insightface_det_cfg": {"model_path": aux + "det_10g.onnx", "device": dev},
            "landmark106_cfg": {"model_path": aux + "2d106det.onnx", "device": dev},
            "landmark203_cfg": {"model_path": aux + "landmark203.onnx", "device": dev},
            "landmark478_cfg": {"blaze_face_model_path": "", "face_mesh_model_path": "", "device": dev},
            "appearance_extractor_cfg": {"model_path": "models/appearance_extractor.pth", "device": dev},
            "motion_extractor_cfg": {"model_path": "models/motion_extractor.pth", "device": dev},
            "stitch_network_cfg": {"model_path": "models/stitch_network.pth", "device": dev},
            "warp_network_cfg": {"model_path": "models/warp_network.pth", "device": dev},
            "decoder_cfg": {"model_path": "models/decoder.pth", "device": dev},
            "hubert_cfg": {"model_path": aux + "hubert_streaming_fix_kv.onnx", "device": dev},
        },
        "audio2motion_cfg": {"model_path": "models/lmdm_v0.4_hubert.pth", "device": dev, "motion_feat_dim": 265,
                             "audio_feat_dim": 1103, "seq_frames": 80, "use_emo": True, "use_sc": True,
                             "use_eye_open": True, "use_eye_ball": True, "w2f_type": "hubert"},
        "default_kwargs": {},
    }


def write_release_cfg(path: Path, default_kwargs: dict[str, object] | None = None) -> Path:
    import pickle

    cfg = release_cfg()
    cfg["default_kwargs"] = dict(default_kwargs or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(cfg, f, protocol=4)
    return path


def write_random_hubert(path: Path, seed: int = 0) -> Path:
    """A stand-in for hubert_streaming_fix_kv.onnx with its interface (input `input_values` (1, 6480) float32 ->
    (20, 1024)): the first 6400 samples as 20 frames of 320, times a random (320, 1024) matrix. Needs the `onnx`
    package (requirements-dev.txt)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.RandomState(seed).randn(320, 1024).astype(np.float32) * 0.05
    nodes = [helper.make_node("Slice", ["input_values", "starts", "ends", "axes"], ["head"]),
             helper.make_node("Reshape", ["head", "shape"], ["frames"]),
             helper.make_node("MatMul", ["frames", "weight"], ["encoding_out"])]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             (("starts", [0]), ("ends", [6400]), ("axes", [1]), ("shape", [20, 320]))]
    inits.append(numpy_helper.from_array(weight, "weight"))
    graph = helper.make_graph(nodes, "hubert_stand_in",
                              [helper.make_tensor_value_info("input_values", TensorProto.FLOAT, [1, 6480])],
                              [helper.make_tensor_value_info("encoding_out", TensorProto.FLOAT, [20, 1024])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_random_release(root: Path, seed: int = 0, default_kwargs: dict[str, object] | None = None
                         ) -> DittoCheckpoints:
    """Every file the Ditto engine needs, random, in the release layout under `root` (~680 MB): the five
    renderer networks, the LMDM at its released size, the config and a HuBERT stand-in."""
    from sadtalker.engines.ditto.random_motion_weights import write_random_lmdm

    checkpoints = write_random_checkpoints(root, seed)
    write_random_lmdm(checkpoints.network_file("lmdm"), seed=seed)
    write_release_cfg(checkpoints.cfg_file, default_kwargs)
    write_random_hubert(checkpoints.hubert_file, seed)
    return checkpoints
