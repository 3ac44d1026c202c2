import pytest
import torch

from sadtalker.engines.sadtalker.random_weights import file_spec
from sadtalker.errors import CheckpointError
from sadtalker.weights import CheckpointLocations, forget_open_checkpoints, load_network, open_checkpoint


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)


def test_missing_file_names_file_and_download_command(tmp_path):
    locations = CheckpointLocations(checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"SadTalker_V0.0.2_256.safetensors.*bash scripts/download_models.sh"):
        locations.require(locations.sadtalker_file(256))
    assert locations.missing_sadtalker_files()


def test_strict_load_lists_missing_unexpected_and_shapes(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save({"model": {"fc.weight": torch.zeros(2, 4), "extra": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError) as err:
        load_network(Tiny(), path, "tiny", entry="model")
    text = str(err.value)
    assert "missing keys: fc.bias" in text and "unexpected keys: extra" in text and "fc.weight: file (2, 4)" in text
    assert str(path.resolve()) in text and "download_models.sh" in text


def test_truncated_file_gives_clear_error(tmp_path):
    forget_open_checkpoints()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        open_checkpoint(path)


def test_prefix_selection_and_single_open(official_checkpoints):
    path = official_checkpoints.sadtalker_file(256)
    first = open_checkpoint(path)
    assert open_checkpoint(path) is first  # opened once per process
    keys = [k for k in first if k.startswith("audio2exp.")]
    assert len(keys) == file_spec(path.name)["groups"]["audio2exp"]["tensor_count"]
