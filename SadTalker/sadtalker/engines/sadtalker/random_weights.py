"""Checkpoint files in the official layouts (exact keys, shapes, dtypes) with seeded random weights: what the tests,
the benchmarks and the GPU check run on where the official weights cannot be downloaded (compute does not depend
on the values).

The layout is `checkpoint_layout.json` beside this module, a copy of shared/reference/checkpoint_layout.json
(produced from the original modules), so these files are independent of our own module definitions.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

LAYOUT_PATH = Path(__file__).with_name("checkpoint_layout.json")


@lru_cache(maxsize=1)
def official_layout() -> dict:
    return json.loads(LAYOUT_PATH.read_text())


def file_spec(name: str) -> dict:
    files = official_layout()["files"]
    spec = files[name]
    if "same_layout_as" in spec:
        spec = {**files[spec["same_layout_as"]], **{k: v for k, v in spec.items() if k != "same_layout_as"}}
    return spec


def group_shapes(name: str, group: str) -> dict[str, tuple[list[int], str]]:
    """{full key: (shape, dtype)} of one group (a safetensors prefix group or a pickle entry)."""
    return {k: (v[0], v[1]) for k, v in file_spec(name)["groups"][group]["tensors"].items()}


def random_tensors(shapes: dict[str, tuple[list[int], str]], seed: int, scale: float = 0.05) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, (shape, dtype) in shapes.items():
        if dtype == "int64":
            out[key] = torch.zeros(shape, dtype=torch.int64)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith("running_mean"):
            out[key] = torch.randn(shape, generator=gen) * 0.1
        else:
            out[key] = torch.randn(shape, generator=gen) * scale
    return out


def write_official_file(name: str, folder: Path, seed: int = 0) -> Path:
    """Write one official file (e.g. 'SadTalker_V0.0.2_256.safetensors') into `folder`."""
    spec = file_spec(name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if name.endswith(".safetensors"):
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        for i, group in enumerate(spec["groups"]):
            tensors.update(random_tensors(group_shapes(name, group), seed + i))
        save_file(tensors, str(path))
        return path
    groups = spec["groups"]
    if list(groups) == [""]:  # a bare state dict
        torch.save(random_tensors(group_shapes(name, ""), seed), path)
        return path
    payload: dict[str, object] = {}
    for i, group in enumerate(groups):
        payload[group] = random_tensors(group_shapes(name, group), seed + i)
    for key, meaning in (spec.get("top_level_keys") or {}).items():
        if key not in payload and str(meaning).startswith("int"):
            payload[key] = 1
    torch.save(payload, path)
    return path


def write_checkpoints(checkpoint_dir: Path, gfpgan_dir: Path | None = None, sizes: tuple[int, ...] = (256, 512),
                      seed: int = 0) -> None:
    """Every file an engine run needs (missing ones only): SadTalker's for `sizes`, both mappings, and with
    `gfpgan_dir` the enhancer's and the original detectors' files."""
    from sadtalker.weights import (
        AWING_FILE,
        GFPGAN_FILE,
        MAPPING_CROP,
        MAPPING_FULL,
        PARSENET_FILE,
        RETINAFACE_FILE,
        SADTALKER_FILES,
    )

    wanted = [(checkpoint_dir, SADTALKER_FILES[s]) for s in sizes] + [(checkpoint_dir, MAPPING_CROP),
                                                                      (checkpoint_dir, MAPPING_FULL)]
    if gfpgan_dir is not None:
        wanted += [(gfpgan_dir, n) for n in (GFPGAN_FILE, RETINAFACE_FILE, AWING_FILE, PARSENET_FILE)]
    for i, (folder, name) in enumerate(wanted):
        if not (folder / name).is_file():
            write_official_file(name, folder, seed=seed + 10 * i)
