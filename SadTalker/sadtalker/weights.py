"""Where the official weight files live, and the one place that opens them.

Each file is opened once per process (safetensors memory-mapped) and every network selects its tensors by an
exact key prefix or a top-level entry, then loads them strictly. Any mismatch raises one CheckpointError that
names the file, the keys and the download command.
"""
from __future__ import annotations

import logging
import os
import pickle
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from sadtalker.errors import DOWNLOAD_HINT, CheckpointError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]

SADTALKER_FILES = {256: "SadTalker_V0.0.2_256.safetensors", 512: "SadTalker_V0.0.2_512.safetensors"}
MAPPING_CROP = "mapping_00229-model.pth.tar"  # crop, extcrop, resize
MAPPING_FULL = "mapping_00109-model.pth.tar"  # full, extfull
GFPGAN_FILE = "GFPGANv1.4.pth"
RETINAFACE_FILE = "detection_Resnet50_Final.pth"
AWING_FILE = "alignment_WFLW_4HG.pth"
PARSENET_FILE = "parsing_parsenet.pth"
LEGACY_FILES = {
    "audio2exp": "auido2exp_00300-model.pth",  # sic: the official file name
    "audio2pose": "auido2pose_00140-model.pth",
    "face_3drecon": "epoch_20.pth",
    "facevid2vid": "facevid2vid_00189-model.pth.tar",
}


@dataclass(frozen=True)
class CheckpointLocations:
    """The folders searched for weights: SadTalker's `checkpoints/` and GFPGAN's `gfpgan/weights/`."""

    checkpoint_dir: Path = REPO_ROOT / "checkpoints"
    gfpgan_dir: Path = REPO_ROOT / "gfpgan" / "weights"
    download_hint: str = DOWNLOAD_HINT

    @classmethod
    def from_env(cls) -> "CheckpointLocations":
        ckpt = Path(os.environ.get("SADTALKER_CHECKPOINTS", cls.checkpoint_dir))
        gfp = Path(os.environ.get("SADTALKER_GFPGAN_WEIGHTS", cls.gfpgan_dir))
        return cls(checkpoint_dir=ckpt, gfpgan_dir=gfp)

    def sadtalker_file(self, size: int) -> Path:
        return self.checkpoint_dir / SADTALKER_FILES[size]

    def mapping_file(self, preprocess: str) -> Path:
        name = MAPPING_FULL if preprocess in ("full", "extfull") else MAPPING_CROP
        return self.checkpoint_dir / name

    def gfpgan_file(self, name: str) -> Path:
        """GFPGAN/facexlib weights: `gfpgan/weights/` first, then `checkpoints/` (as the original does)."""
        for folder in (self.gfpgan_dir, self.checkpoint_dir):
            if (folder / name).is_file():
                return folder / name
        return self.gfpgan_dir / name

    def missing_sadtalker_files(self) -> list[Path]:
        """Files the SadTalker engine needs at 256 in every mode (the 512 file is checked when asked for)."""
        needed = [self.sadtalker_file(256), self.checkpoint_dir / MAPPING_CROP, self.checkpoint_dir / MAPPING_FULL]
        return [p for p in needed if not p.is_file()]

    def require(self, path: Path) -> Path:
        if not path.is_file():
            raise CheckpointError(
                f"checkpoint file not found: {path}. Get the official weights with: {self.download_hint}"
            )
        return path


_lock = threading.Lock()
_open_files: dict[Path, Mapping[str, object]] = {}


def open_checkpoint(path: Path, hint: str = DOWNLOAD_HINT) -> Mapping[str, object]:
    """The file's top-level mapping, read once per process and cached.

    safetensors files are memory-mapped (a flat dict of tensors); torch pickles are loaded with
    `weights_only=True` (memory-mapped where the zip format allows).
    """
    path = Path(path).resolve()
    with _lock:
        if path in _open_files:
            return _open_files[path]
        if not path.is_file():
            raise CheckpointError(f"checkpoint file not found: {path}. Get the official weights with: {hint}")
        logger.info("opening checkpoint %s", path)
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                contents: Mapping[str, object] = load_file(str(path), device="cpu")
            else:
                contents = _load_pickle(path)
        except CheckpointError:
            raise
        except Exception as exc:  # truncated or corrupt files surface as many exception types
            raise CheckpointError(
                f"checkpoint file {path} cannot be read ({type(exc).__name__}: {exc}); it may be truncated or "
                f"corrupt. Delete it and download it again with: {hint}"
            ) from exc
        if not isinstance(contents, Mapping):
            raise CheckpointError(f"checkpoint file {path} does not hold a dictionary of tensors")
        _open_files[path] = contents
        return contents


def _load_pickle(path: Path) -> Mapping[str, object]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
    except pickle.UnpicklingError:
        pass
    # Legacy (pre-zip) files cannot be memory-mapped; files holding training objects need full unpickling.
    # Both only ever come from the user's own checkpoint folder.
    logger.warning("loading %s without memory mapping / weights-only restrictions", path)
    return torch.load(path, map_location="cpu", weights_only=False)


def forget_open_checkpoints() -> None:
    """Drop the per-process cache (tests that rewrite files in place)."""
    with _lock:
        _open_files.clear()


def select(
    contents: Mapping[str, object], path: Path, *, prefix: str | None = None, entry: str | None = None,
    strip_module: bool = False,
) -> dict[str, torch.Tensor]:
    """One network's tensors: a top-level `entry` (e.g. 'params_ema') and/or keys under an exact `prefix`."""
    tensors: Mapping[str, object] = contents
    if entry is not None:
        if entry not in contents:
            raise CheckpointError(
                f"checkpoint file {path} has no entry {entry!r} (it has: {', '.join(sorted(map(str, contents))[:10])})"
            )
        tensors = contents[entry]  # type: ignore[assignment]
        if not isinstance(tensors, Mapping):
            raise CheckpointError(f"entry {entry!r} of checkpoint file {path} is not a dictionary of tensors")
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if prefix is not None:
            if not key.startswith(prefix):
                continue
            key = key[len(prefix):]
        if strip_module and key.startswith("module."):
            key = key[len("module."):]
        out[key] = value  # type: ignore[assignment]
    if not out:
        where = f"prefix {prefix!r}" if prefix else f"entry {entry!r}"
        raise CheckpointError(f"checkpoint file {path} has no tensors under {where}")
    return out


def load_state(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path, what: str,
               hint: str = DOWNLOAD_HINT) -> nn.Module:
    """Strict load with one readable error listing missing/unexpected keys and shape mismatches."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = [f"checkpoint file {path} does not match the {what} network"]
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
            if items:
                shown = ", ".join(items[:8]) + (f" ... ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{label}: {shown}")
        parts.append(f"Download the official file again with: {hint}")
        raise CheckpointError("; ".join(parts))
    module.load_state_dict(state, strict=True)
    return module


def load_network(module: nn.Module, path: Path, what: str, *, prefix: str | None = None, entry: str | None = None,
                 strip_module: bool = False, hint: str = DOWNLOAD_HINT) -> nn.Module:
    """Open `path` (cached), select the network's tensors, load strictly, and put the module in eval mode."""
    contents = open_checkpoint(path, hint)
    state = select(contents, Path(path), prefix=prefix, entry=entry, strip_module=strip_module)
    load_state(module, state, Path(path), what, hint)
    return module.eval()


# Sub-networks of SadTalker_V0.0.2_{256,512}.safetensors: key prefix there, and (legacy file, entry) otherwise.
SADTALKER_COMPONENTS: dict[str, tuple[str, str, str]] = {
    "audio2exp": ("audio2exp.", LEGACY_FILES["audio2exp"], "model"),
    "audio2pose": ("audio2pose.", LEGACY_FILES["audio2pose"], "model"),
    "face_3drecon": ("face_3drecon.", LEGACY_FILES["face_3drecon"], "net_recon"),
}


def load_sadtalker_component(module: nn.Module, locations: CheckpointLocations, component: str,
                             size: int = 256) -> nn.Module:
    """Load one sub-network from the SadTalker safetensors file (the `size` one, else the other size), or from its
    legacy per-network file when no safetensors file is present (as the original falls back)."""
    if component not in SADTALKER_COMPONENTS:
        raise CheckpointError(f"unknown SadTalker component {component!r}; known: {', '.join(SADTALKER_COMPONENTS)}")
    prefix, legacy, entry = SADTALKER_COMPONENTS[component]
    for candidate in (size, *(s for s in SADTALKER_FILES if s != size)):
        path = locations.sadtalker_file(candidate)
        if path.is_file():
            return load_network(module, path, component, prefix=prefix, hint=locations.download_hint)
    legacy_path = locations.checkpoint_dir / legacy
    if legacy_path.is_file():
        return load_network(module, legacy_path, component, entry=entry, hint=locations.download_hint)
    raise CheckpointError(
        f"checkpoint file not found: {locations.sadtalker_file(size)} (nor the legacy {legacy_path.name}) for the "
        f"{component} network. Get the official weights with: {locations.download_hint}"
    )
