"""Where Ditto's official files live, and the one place that opens them.

The release (`ditto_pytorch/models/*.pth`, `ditto_cfg/v0.4_hubert_cfg_pytorch.pkl`) is read unchanged: each .pth is
opened once with `weights_only=True`, its state dict taken from the container entry the original loader reads, and
loaded strictly. Any mismatch raises one CheckpointError naming the file, the keys and the download command. The
config pickle is read by a restricted unpickler that builds plain data only.
"""
from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from sadtalker.errors import CheckpointError
from sadtalker.weights import REPO_ROOT, CheckpointLocations, load_state

if TYPE_CHECKING:
    from sadtalker.nets.ditto.lmdm import LMDM, LMDMConfig

logger = logging.getLogger(__name__)

DITTO_DOWNLOAD_HINT = "bash scripts/download_models.sh --ditto"

NetworkName = Literal["appearance_extractor", "motion_extractor", "warp_network", "decoder", "stitch_network", "lmdm"]


@dataclass(frozen=True)
class DittoFile:
    """One official weight file: its path under the checkpoint folder and the entry holding the state dict."""

    relpath: str
    container: str | None    # None: the file is the state dict itself
    what: str                # the network, in words (for messages)


DITTO_FILES: dict[str, DittoFile] = {
    "appearance_extractor": DittoFile("ditto_pytorch/models/appearance_extractor.pth", None,
                                      "appearance feature extractor"),
    "motion_extractor": DittoFile("ditto_pytorch/models/motion_extractor.pth", None, "motion extractor"),
    "warp_network": DittoFile("ditto_pytorch/models/warp_network.pth", None, "warping network"),
    "decoder": DittoFile("ditto_pytorch/models/decoder.pth", None, "SPADE decoder"),
    # LivePortrait's stitching file also holds 'retarget_mouth' / 'retarget_eye'; Ditto reads only this entry.
    "stitch_network": DittoFile("ditto_pytorch/models/stitch_network.pth", "retarget_shoulder", "stitching network"),
    "lmdm": DittoFile("ditto_pytorch/models/lmdm_v0.4_hubert.pth", "model_state_dict", "LMDM motion diffusion model"),
}
CFG_FILE = "ditto_cfg/v0.4_hubert_cfg_pytorch.pkl"
HUBERT_FILE = "ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx"
# Optional: the original's face detector and landmark models (we default to our own face mesh).
AUX_FILES = {
    "det_10g": "ditto_pytorch/aux_models/det_10g.onnx",
    "landmark106": "ditto_pytorch/aux_models/2d106det.onnx",
    "landmark203": "ditto_pytorch/aux_models/landmark203.onnx",
}
RENDERER_NETWORKS = ("appearance_extractor", "motion_extractor", "warp_network", "decoder", "stitch_network")


@dataclass(frozen=True)
class DittoCheckpoints:
    """The checkpoint folder in the official release layout (`<root>/ditto_pytorch/...`, `<root>/ditto_cfg/...`);
    the service's SADTALKER_DITTO_CHECKPOINTS (`CheckpointLocations.ditto_dir`)."""

    root: Path = REPO_ROOT / "checkpoints" / "ditto"
    download_hint: str = DITTO_DOWNLOAD_HINT

    @classmethod
    def from_locations(cls, locations: CheckpointLocations) -> DittoCheckpoints:
        return cls(root=Path(locations.ditto_dir))

    def network_file(self, name: str) -> Path:
        if name not in DITTO_FILES:
            raise CheckpointError(f"unknown Ditto network {name!r}; known: {', '.join(DITTO_FILES)}")
        return self.root / DITTO_FILES[name].relpath

    @property
    def cfg_file(self) -> Path:
        return self.root / CFG_FILE

    @property
    def hubert_file(self) -> Path:
        return self.root / HUBERT_FILE

    def aux_file(self, name: str) -> Path:
        return self.root / AUX_FILES[name]

    def missing(self, names: tuple[str, ...] = RENDERER_NETWORKS) -> list[Path]:
        return [p for p in (self.network_file(n) for n in names) if not p.is_file()]

    def required_files(self) -> list[Path]:
        """Everything the engine needs: the six networks, the config and the HuBERT model (the InsightFace /
        LivePortrait landmark models are optional)."""
        return [*(self.network_file(n) for n in DITTO_FILES), self.cfg_file, self.hubert_file]

    def missing_files(self) -> list[Path]:
        return [p for p in self.required_files() if not p.is_file()]

    def require_all(self) -> None:
        """One CheckpointError naming every missing file and the download command."""
        missing = self.missing_files()
        if missing:
            raise CheckpointError(f"Ditto checkpoint file(s) not found: {', '.join(map(str, missing))}. Get the "
                                  f"official files with: {self.download_hint}")

    def require(self, path: Path) -> Path:
        if not Path(path).is_file():
            raise CheckpointError(f"Ditto checkpoint file not found: {path}. Get the official weights with: "
                                  f"{self.download_hint}")
        return Path(path)


def load_ditto_state(path: Path, container_key: str | None = None, *,
                     hint: str = DITTO_DOWNLOAD_HINT) -> dict[str, torch.Tensor]:
    """The state dict of one official .pth file: the whole file, or its `container_key` entry; DataParallel
    'module.' prefixes removed (as the original's stitching loader does). Key checks happen at the strict load.

    Raises CheckpointError when the file is missing, unreadable, or lacks the entry.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Ditto checkpoint file not found: {path}. Get the official weights with: {hint}")
    logger.info("opening %s", path)
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"checkpoint file {path} holds objects other than tensors and plain containers "
                              f"({exc}); it is not an official Ditto file. Download it again with: {hint}") from exc
    except Exception as exc:  # truncated or corrupt files surface as many exception types
        raise CheckpointError(f"checkpoint file {path} cannot be read ({type(exc).__name__}: {exc}); it may be "
                              f"truncated or corrupt. Delete it and download it again with: {hint}") from exc
    if not isinstance(contents, Mapping):
        raise CheckpointError(f"checkpoint file {path} does not hold a dictionary")
    if container_key is not None:
        if container_key not in contents:
            raise CheckpointError(f"checkpoint file {path} has no entry {container_key!r} (it has: "
                                  f"{', '.join(sorted(map(str, contents))[:10])}). Download it again with: {hint}")
        contents = contents[container_key]
        if not isinstance(contents, Mapping):
            raise CheckpointError(f"entry {container_key!r} of checkpoint file {path} is not a state dict")
    state: dict[str, torch.Tensor] = {}
    for key, value in contents.items():
        if not torch.is_tensor(value):
            raise CheckpointError(f"checkpoint file {path}: entry {key!r} is not a tensor")
        state[key.removeprefix("module.")] = value
    return state


def remap_spectral_norm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold torch spectral-norm parametrizations (`<name>_orig`, `<name>_u`, `<name>_v`) into plain weights, as
    `torch.nn.utils.spectral_norm` computes them in eval mode: W / (u . (W_mat v)), W_mat = W reshaped (out, -1)."""
    out = {k: v for k, v in state.items() if not k.endswith(("weight_orig", "weight_u", "weight_v"))}
    for key in state:
        if not key.endswith(".weight_orig"):
            continue
        base = key[: -len("_orig")]
        u, v = state.get(base + "_u"), state.get(base + "_v")
        if u is None or v is None:   # left as is: the strict load reports the keys
            out[key] = state[key]
            continue
        weight = state[key]
        sigma = torch.dot(u, torch.mv(weight.reshape(weight.shape[0], -1), v))
        out[base] = weight / sigma
    return out


def load_network(module: nn.Module, name: str, checkpoints: DittoCheckpoints,
                 remap: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None) -> nn.Module:
    """Open the official file of `name`, select its state dict, optionally remap it, load strictly, eval mode."""
    spec = DITTO_FILES[name]
    path = checkpoints.network_file(name)
    state = load_ditto_state(path, spec.container, hint=checkpoints.download_hint)
    if remap is not None:
        state = remap(state)
    load_state(module, state, path, spec.what, checkpoints.download_hint)
    return module.eval()


def load_renderer_networks(checkpoints: DittoCheckpoints) -> dict[str, nn.Module]:
    """The five LivePortrait networks of Ditto, built with the released configs and loaded strictly (CPU, fp32)."""
    from sadtalker.nets.ditto.appearance_extractor import AppearanceFeatureExtractor
    from sadtalker.nets.ditto.motion_extractor import MotionExtractor
    from sadtalker.nets.ditto.spade_decoder import build_decoder
    from sadtalker.nets.ditto.stitching_network import StitchingNetwork
    from sadtalker.nets.ditto.warping_network import WarpingNetwork

    missing = checkpoints.missing()
    if missing:
        raise CheckpointError(f"Ditto checkpoint file(s) not found: {', '.join(map(str, missing))}. Get the "
                              f"official weights with: {checkpoints.download_hint}")
    return {
        "appearance_extractor": load_network(AppearanceFeatureExtractor(), "appearance_extractor", checkpoints),
        "motion_extractor": load_network(MotionExtractor(), "motion_extractor", checkpoints),
        "warp_network": load_network(WarpingNetwork(), "warp_network", checkpoints),
        "decoder": load_network(build_decoder(), "decoder", checkpoints, remap=remap_spectral_norm),
        "stitch_network": load_network(StitchingNetwork(), "stitch_network", checkpoints),
    }


def load_lmdm_state(checkpoints: DittoCheckpoints) -> dict[str, torch.Tensor]:
    """The LMDM MotionDecoder state dict (entry 'model_state_dict'; other entries are ignored)."""
    return load_ditto_state(checkpoints.network_file("lmdm"), DITTO_FILES["lmdm"].container,
                            hint=checkpoints.download_hint)


def load_lmdm(path: Path, config: LMDMConfig | None = None, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32, hint: str = DITTO_DOWNLOAD_HINT) -> LMDM:
    """The LMDM of an official file (`lmdm_v0.4_hubert.pth`), built with `config` (the release's sizes by default),
    loaded strictly (CheckpointError on any mismatch), eval mode on `device`; fp16/bf16 weights only make sense on
    CUDA (the sampling arithmetic stays float32)."""
    from sadtalker.nets.ditto.lmdm import LMDM, LMDMConfig

    path = Path(path)
    model = LMDM(config or LMDMConfig())
    load_state(model, load_ditto_state(path, DITTO_FILES["lmdm"].container, hint=hint), path,
               DITTO_FILES["lmdm"].what, hint)
    logger.info("loaded LMDM from %s", path)
    return model.eval().to(device).cast_weights(dtype)


# ------------------------------------------------------------------------------------------------ config pickle
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class _PlainDataUnpickler(pickle.Unpickler):
    """Builds dict, list, tuple, str, bytes, int, float, bool, None (pickle opcodes, no imports) and, if allowed,
    numpy arrays and scalars of non-object dtype; refuses every other global."""

    def __init__(self, file: io.BufferedIOBase, allow_numpy: bool) -> None:
        super().__init__(file)
        self.allow_numpy = allow_numpy

    def find_class(self, module: str, name: str) -> Any:
        if self.allow_numpy and (module, name) in _NUMPY_GLOBALS:
            import importlib

            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a config file")


def read_cfg(path: Path, *, allow_numpy: bool = True, hint: str = DITTO_DOWNLOAD_HINT) -> dict[str, Any]:
    """The config pickle (`v0.4_hubert_cfg_pytorch.pkl`) as plain data: a dict with `base_cfg`,
    `audio2motion_cfg` and `default_kwargs` (what the original's parse_cfg reads).

    Only plain containers and numbers are built (numpy arrays/scalars too with `allow_numpy`, since the released
    file's contents are not known here); anything else raises CheckpointError, so a tampered file cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Ditto config file not found: {path}. Get the official files with: {hint}")
    try:
        with open(path, "rb") as f:
            cfg = _PlainDataUnpickler(f, allow_numpy).load()
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"config file {path} is not plain data ({exc}); refusing to load it. Download the "
                              f"official file again with: {hint}") from exc
    except Exception as exc:
        raise CheckpointError(f"config file {path} cannot be read ({type(exc).__name__}: {exc}). Download it again "
                              f"with: {hint}") from exc
    if not isinstance(cfg, dict):
        raise CheckpointError(f"config file {path} holds a {type(cfg).__name__}, not a dict")
    missing = [k for k in ("base_cfg", "audio2motion_cfg", "default_kwargs") if k not in cfg]
    if missing:
        raise CheckpointError(f"config file {path} lacks {', '.join(missing)}. Download it again with: {hint}")
    return cfg
