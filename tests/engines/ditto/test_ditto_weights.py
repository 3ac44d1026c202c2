"""Ditto's weights loader: official layouts written by our random-weight writer, strict loading, the spectral-norm
fold, and the restricted config unpickler. No golden data needed."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sadtalker.engines.ditto.weights import (
    DITTO_FILES,
    DittoCheckpoints,
    load_ditto_state,
    load_lmdm_state,
    load_renderer_networks,
    read_cfg,
    remap_spectral_norm,
)
from sadtalker.errors import CheckpointError


def test_official_layout_loads_strictly(ditto_checkpoints: DittoCheckpoints, ditto_networks) -> None:
    nets = ditto_networks
    assert set(nets) == {"appearance_extractor", "motion_extractor", "warp_network", "decoder", "stitch_network"}
    assert all(not m.training for m in nets.values())
    decoder_file = torch.load(ditto_checkpoints.network_file("decoder"), weights_only=True)
    assert "G_middle_0.conv_0.weight_orig" in decoder_file and "G_middle_0.conv_0.weight" not in decoder_file
    stitch_file = torch.load(ditto_checkpoints.network_file("stitch_network"), weights_only=True)
    assert list(stitch_file) == ["retarget_shoulder"]


def test_missing_file_names_file_and_download_command(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        load_renderer_networks(DittoCheckpoints(root=tmp_path))
    assert "appearance_extractor.pth" in str(err.value)
    assert "bash scripts/download_models.sh --ditto" in str(err.value)


def test_missing_key_is_reported(ditto_checkpoints: DittoCheckpoints, tmp_path: Path) -> None:
    from sadtalker.engines.ditto.weights import load_network
    from sadtalker.nets.ditto.warping_network import WarpingNetwork

    broken = DittoCheckpoints(root=tmp_path)
    path = broken.network_file("warp_network")
    path.parent.mkdir(parents=True)
    state = torch.load(ditto_checkpoints.network_file("warp_network"), weights_only=True)
    del state["third.conv.weight"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_network(WarpingNetwork(), "warp_network", broken)
    message = str(err.value)
    assert "third.conv.weight" in message and "extra.weight" in message and str(path) in message
    assert "download_models.sh --ditto" in message


def test_stitch_file_with_dataparallel_prefixes(ditto_checkpoints: DittoCheckpoints, tmp_path: Path) -> None:
    state = load_ditto_state(ditto_checkpoints.network_file("stitch_network"), "retarget_shoulder")
    path = tmp_path / "stitch.pth"
    torch.save({"retarget_shoulder": {f"module.{k}": v for k, v in state.items()},
                "retarget_mouth": {"module.mlp.0.weight": torch.zeros(1)}}, path)
    again = load_ditto_state(path, "retarget_shoulder")
    assert set(again) == set(state) and all(torch.equal(again[k], state[k]) for k in state)
    with pytest.raises(CheckpointError, match="no entry 'model_state_dict'"):
        load_ditto_state(path, "model_state_dict")


def test_lmdm_state_is_the_model_state_dict_entry(tmp_path: Path) -> None:
    checkpoints = DittoCheckpoints(root=tmp_path)
    path = checkpoints.network_file("lmdm")
    path.parent.mkdir(parents=True)
    torch.save({"model_state_dict": {"final_layer.weight": torch.ones(2, 2)}}, path)
    assert list(load_lmdm_state(checkpoints)) == ["final_layer.weight"]
    assert DITTO_FILES["lmdm"].relpath == "ditto_pytorch/models/lmdm_v0.4_hubert.pth"


def test_spectral_norm_fold_equals_torch_eval() -> None:
    torch.manual_seed(0)
    conv = torch.nn.utils.spectral_norm(torch.nn.Conv2d(8, 6, 3, padding=1))
    conv.train()
    x = torch.randn(1, 8, 5, 5)
    for _ in range(5):   # power iterations move u, v away from their initial values
        conv(x)
    conv.eval()
    folded = remap_spectral_norm({f"c.{k}": v for k, v in conv.state_dict().items()})
    assert set(folded) == {"c.weight", "c.bias"}
    plain = torch.nn.Conv2d(8, 6, 3, padding=1)
    plain.load_state_dict({"weight": folded["c.weight"], "bias": folded["c.bias"]})
    with torch.no_grad():
        assert torch.equal(plain(x), conv(x))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_cfg_unpickler_accepts_plain_data_and_numpy(tmp_path: Path) -> None:
    cfg = {"base_cfg": {"decoder_cfg": {"model_path": "models/decoder.pth", "device": "cuda"}},
           "audio2motion_cfg": {"seq_frames": 80, "use_emo": True, "x": None, "t": (1, 2.5)},
           "default_kwargs": {"smo_k_d": 3, "arr": np.arange(3, dtype=np.float32), "s": np.float64(0.5)}}
    path = tmp_path / "cfg.pkl"
    path.write_bytes(pickle.dumps(cfg, protocol=4))
    got = read_cfg(path)
    assert got["audio2motion_cfg"] == cfg["audio2motion_cfg"]
    np.testing.assert_array_equal(got["default_kwargs"]["arr"], np.arange(3, dtype=np.float32))
    with pytest.raises(CheckpointError, match="not plain data"):
        read_cfg(path, allow_numpy=False)


def test_cfg_unpickler_refuses_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"base_cfg": {}, "audio2motion_cfg": {}, "default_kwargs": _Exploit()}))
    with pytest.raises(CheckpointError, match=r"posix\.system|os\.system"):
        read_cfg(path)


def test_cfg_missing_and_incomplete(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="download_models.sh --ditto"):
        read_cfg(tmp_path / "absent.pkl")
    path = tmp_path / "partial.pkl"
    path.write_bytes(pickle.dumps({"base_cfg": {}}))
    with pytest.raises(CheckpointError, match="audio2motion_cfg"):
        read_cfg(path)
