"""Where the official weight files live, and the one place that opens them.

Each file is opened once per process (safetensors memory-mapped) and every network selects its tensors by an
exact key prefix or a top-level entry, then loads them strictly. Any mismatch raises one CheckpointError that
names the file, the keys and the download command.
"""
from __future__ import annotations

import logging
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
    """The folders searched for weights: SadTalker's `checkpoints/`, GFPGAN's `gfpgan/weights/` and Ditto's release
    folder `checkpoints/ditto/` (the service's SADTALKER_CHECKPOINTS, SADTALKER_GFPGAN_WEIGHTS and
    SADTALKER_DITTO_CHECKPOINTS, read in sadtalker.service.settings)."""

    checkpoint_dir: Path = REPO_ROOT / "checkpoints"
    gfpgan_dir: Path = REPO_ROOT / "gfpgan" / "weights"
    ditto_dir: Path = REPO_ROOT / "checkpoints" / "ditto"
    download_hint: str = DOWNLOAD_HINT

    def sadtalker_file(self, size: int) -> Path:
        return self.checkpoint_dir / SADTALKER_FILES[size]

    def mapping_file(self, preprocess: str) -> Path:
        from sadtalker.options import Preprocess

        name = MAPPING_FULL if Preprocess(preprocess).full else MAPPING_CROP
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


@dataclass(frozen=True)
class Source:
    """Where one network's tensors are in one official file: an exact key `prefix`, and/or a top-level `entry`.
    `{size}` / `{other}` in the file name stand for the requested face size and the other one."""

    file: str
    prefix: str | None = None
    entry: str | None = None
    folder: str = "checkpoints"     # "checkpoints" (SadTalker's) or "gfpgan" (GFPGAN's, then checkpoints/)
    strip_module: bool = False      # keys saved from a DataParallel wrapper ("module.")


ST = "SadTalker_V0.0.2_{size}.safetensors"
ST_OTHER = "SadTalker_V0.0.2_{other}.safetensors"

# Every network the engines load: (name for messages, sources in order of preference; the first present file
# holding the prefix or entry is used, as the original falls back from the safetensors files to the legacy ones).
NETWORKS: dict[str, tuple[str, tuple[Source, ...]]] = {
    "kp_extractor": ("keypoint detector (kp_extractor)", (Source(ST, prefix="kp_extractor."),)),
    "generator": ("face generator", (Source(ST, prefix="generator."),)),
    "mapping_crop": ("mapping network (crop modes)", (Source(MAPPING_CROP, entry="mapping"),)),
    "mapping_full": ("mapping network (full modes)", (Source(MAPPING_FULL, entry="mapping"),)),
    "audio2exp": ("audio2exp", (Source(ST, prefix="audio2exp."), Source(ST_OTHER, prefix="audio2exp."),
                                Source(LEGACY_FILES["audio2exp"], entry="model"))),
    "audio2pose": ("audio2pose", (Source(ST, prefix="audio2pose."), Source(ST_OTHER, prefix="audio2pose."),
                                  Source(LEGACY_FILES["audio2pose"], entry="model"))),
    "face_3drecon": ("face reconstruction (face_3drecon)", (
        Source(ST, prefix="face_3drecon."), Source(ST_OTHER, prefix="face_3drecon."),
        Source(LEGACY_FILES["face_3drecon"], entry="net_recon"))),
    "gfpgan": ("GFPGAN", (Source(GFPGAN_FILE, entry="params_ema", folder="gfpgan"),   # as GFPGANer reads it
                          Source(GFPGAN_FILE, entry="params", folder="gfpgan"))),
    "parsenet": ("ParseNet", (Source(PARSENET_FILE, folder="gfpgan"),)),
    "retinaface": ("RetinaFace", (Source(RETINAFACE_FILE, folder="gfpgan", strip_module=True),)),
    "awing": ("AWing FAN", (Source(AWING_FILE, entry="state_dict", folder="gfpgan"),)),
}


def source_path(source: Source, locations: CheckpointLocations, size: int = 256) -> Path:
    other = next((s for s in SADTALKER_FILES if s != size), size)
    name = source.file.format(size=size, other=other)
    return locations.gfpgan_file(name) if source.folder == "gfpgan" else locations.checkpoint_dir / name


def load(module: nn.Module, network: str, locations: CheckpointLocations, size: int = 256) -> nn.Module:
    """Load `network` (a key of NETWORKS) into `module` from the first of its sources present, strictly, and put
    the module in eval mode. Raises one CheckpointError naming the file (and the fallbacks tried) and the command."""
    what, sources = NETWORKS[network]
    tried: list[Path] = []
    for source in sources:
        path = source_path(source, locations, size)
        if not path.is_file():
            if path not in tried:
                tried.append(path)
            continue
        contents = open_checkpoint(path, locations.download_hint)
        if source.entry is not None and source.entry not in contents and source is not sources[-1]:
            continue  # the same file under another entry, next
        return load_network(module, path, what, prefix=source.prefix, entry=source.entry,
                            strip_module=source.strip_module, hint=locations.download_hint)
    others = f" (nor {', '.join(p.name for p in tried[1:])})" if len(tried) > 1 else ""
    raise CheckpointError(f"checkpoint file not found: {tried[0]}{others} for the {what} network. Get the official "
                          f"weights with: {locations.download_hint}")
