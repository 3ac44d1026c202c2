"""The LMDM network: the official layout, shapes, rotary embedding, strict loading."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ditto_motion_factory import TINY, tiny_lmdm, write_tiny_lmdm

from sadtalker.errors import CheckpointError
from sadtalker.engines.ditto.weights import load_lmdm
from sadtalker.nets.ditto.lmdm import LMDM, LMDMConfig, RotaryEmbedding
from sadtalker.weights import forget_open_checkpoints

LAYOUT = Path(__file__).parents[2] / "data" / "ditto_lmdm_layout.json"


@pytest.fixture(autouse=True)
def _fresh_checkpoint_cache():
    forget_open_checkpoints()
    yield
    forget_open_checkpoints()


def test_default_config_is_the_released_layout():
    official = json.loads(LAYOUT.read_text())["keys"]
    ours = {k: list(v.shape) for k, v in LMDM(LMDMConfig()).state_dict().items()}
    assert ours == official  # 249 tensors, rotary freqs under every layer's name


def test_shapes_and_finite():
    model = tiny_lmdm()
    x, frame = torch.randn(2, 80, 265), torch.randn(2, 265)
    with torch.inference_mode():
        tokens, hidden = model.encode_condition(torch.randn(2, 80, 1103))
        assert tokens.shape == (2, 80, TINY.latent_dim) and hidden.shape == (2, TINY.latent_dim)
        out = model(x, frame, tokens, hidden, torch.tensor([999, 0]))
        null_tokens, null_hidden = model.null_condition(2)
        unc = model(x, frame, null_tokens, null_hidden, torch.tensor([999, 0]))
    assert out.shape == unc.shape == (2, 80, 265)
    assert torch.isfinite(out).all() and not torch.equal(out, unc)


def test_rotary_is_a_relative_rotation():
    rotary = RotaryEmbedding(16)
    q, k = torch.randn(1, 1, 16), torch.randn(1, 1, 16)
    q5, k3 = rotary(q.expand(1, 6, 16))[0, 5], rotary(k.expand(1, 6, 16))[0, 3]
    q2, k0 = rotary(q.expand(1, 6, 16))[0, 2], rotary(k.expand(1, 6, 16))[0, 0]
    assert torch.allclose(q5 @ k3, q2 @ k0, atol=1e-5)  # depends on the offset only
    x = torch.randn(1, 6, 16)
    assert torch.allclose(rotary(x).norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.equal(rotary(x)[0, 0], x[0, 0])  # position 0 is not rotated


def test_load_roundtrip(tmp_path):
    path = write_tiny_lmdm(tmp_path / "lmdm.pth", seed=3)
    model = load_lmdm(path, TINY)
    assert not model.training
    for (k, a), b in zip(tiny_lmdm(3).state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k


def test_load_extra_entries_are_ignored(tmp_path):
    state = tiny_lmdm().state_dict()
    torch.save({"model_state_dict": state, "optimizer_state_dict": {}, "epoch": 7}, tmp_path / "lmdm.pth")
    load_lmdm(tmp_path / "lmdm.pth", TINY)


@pytest.mark.parametrize("damage", ["plain_state_dict", "missing_key", "extra_key", "wrong_shape", "other_config"])
def test_load_errors_name_the_file_and_download(tmp_path, damage):
    state = tiny_lmdm().state_dict()
    config = TINY
    if damage == "missing_key":
        del state["final_layer.bias"]
    elif damage == "extra_key":
        state["seqTransDecoder.stack.9.norm1.weight"] = torch.ones(TINY.latent_dim)
    elif damage == "wrong_shape":
        state["final_layer.weight"] = torch.zeros(264, TINY.latent_dim)
    elif damage == "other_config":
        config = LMDMConfig(latent_dim=32, ff_size=64, num_layers=3, num_heads=4)
    path = tmp_path / "lmdm.pth"
    torch.save(state if damage == "plain_state_dict" else {"model_state_dict": state}, path)
    with pytest.raises(CheckpointError) as err:
        load_lmdm(path, config)
    message = str(err.value)
    assert str(path.resolve()) in message or str(path) in message
    if damage == "plain_state_dict":
        assert "model_state_dict" in message
    else:
        assert "download_models.sh --ditto" in message


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*download_models.sh --ditto"):
        load_lmdm(tmp_path / "nope.pth", TINY)


def test_half_precision_keeps_rotary_float32():
    model = tiny_lmdm().cast_weights(torch.bfloat16)
    assert model.rotary.freqs.dtype == torch.float32
    assert model.final_layer.weight.dtype == torch.bfloat16
    tokens, hidden = model.encode_condition(torch.randn(1, 80, 1103, dtype=torch.bfloat16))
    out = model(torch.randn(1, 80, 265, dtype=torch.bfloat16), torch.randn(1, 265, dtype=torch.bfloat16), tokens,
                hidden, torch.tensor([500]))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
