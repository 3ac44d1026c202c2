"""Stage 3 of SadTalker: the face renderer (the original's AnimateFromCoeff / make_animation).

Per frame, the mapping network turns a 27-frame window of coefficients into head pose and keypoint deltas, the
canonical keypoints of the source are posed with them, and the generator warps the source's appearance volume
from the source's keypoints to the frame's. Frames come out as a stream, so memory does not grow with the clip.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Literal, NamedTuple, Sequence

import numpy as np
import torch

from sadtalker.accel import AccelConfig, accelerate
from sadtalker.engines.sadtalker.keypoints import transform_keypoints
from sadtalker.errors import InvalidInputError
from sadtalker.nets.dense_motion import DenseMotion
from sadtalker.nets.generator import Appearance, OcclusionAwareSPADEGenerator
from sadtalker.nets.keypoint_detector import KPDetector
from sadtalker.nets.mapping import HeadMotion, MappingConfig, MappingNet
from sadtalker.options import Preprocess
from sadtalker.weights import CheckpointLocations, load

logger = logging.getLogger(__name__)

SEMANTIC_RADIUS = 13  # the mapping network reads frames t-13 .. t+13
NUM_EXP = 64          # expression coefficients; then 3 angles, 3 translations, (full modes) 3 crop parameters

FrameProgress = Callable[[int, int], None]
"""progress(frames done, total frames)."""

Precision = Literal["fp32", "fp16", "bf16"]
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def source_tensor(crop: np.ndarray, size: int) -> torch.Tensor:
    """Face crop (H, W, 3) uint8 RGB -> (1, 3, size, size) float32 in 0..1, resized as the original does
    (skimage `img_as_float32` + `transform.resize`, bilinear with anti-aliasing)."""
    from skimage import img_as_float32, transform

    if crop.ndim != 3 or crop.shape[2] != 3:
        raise InvalidInputError(f"the face crop must be an RGB image of shape (H, W, 3); got {crop.shape}")
    image = transform.resize(img_as_float32(crop), (size, size, 3))
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))[None]


def renderer_coefficients(coeffs: np.ndarray, source_coeffs: np.ndarray, preprocess: str,
                          expression_scale: float = 1.0, still_mode: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The mapping network's inputs, as the original's get_facerender_data builds them.

    Args:
        coeffs: (T, 70) per-frame expression (64) and pose (6) coefficients from the motion stage.
        source_coeffs: (73,) the source face's coefficients (exp 64, angles 3, translation 3, crop parameters 3).
    Returns:
        target (T, C) and source (C,) with C = 70 for crop modes, 73 for full modes.
    """
    coeffs = np.asarray(coeffs, dtype=np.float32)
    source_coeffs = np.asarray(source_coeffs, dtype=np.float32).reshape(-1)
    if coeffs.ndim != 2 or coeffs.shape[1] < 70 or coeffs.shape[0] < 1:
        raise InvalidInputError(f"coefficients must have shape (T, 70); got {coeffs.shape}")
    if source_coeffs.shape[0] < 73:
        raise InvalidInputError(f"source coefficients must have 73 values; got {source_coeffs.shape[0]}")
    width = 73 if Preprocess(preprocess).full else 70
    source = source_coeffs[:width].copy()
    target = coeffs[:, :70].copy()
    target[:, :NUM_EXP] *= np.float32(expression_scale)
    if width == 73:
        target = np.concatenate([target, np.repeat(source[None, 70:], len(target), axis=0)], axis=1)
    if still_mode:
        target[:, NUM_EXP:] = source[NUM_EXP:]
    return target, source


def coefficient_windows(target: np.ndarray, start: int, stop: int, radius: int = SEMANTIC_RADIUS) -> np.ndarray:
    """(stop - start, C, 2 radius + 1): for each frame t the rows t-radius .. t+radius, clamped to the clip."""
    frames = np.arange(start, stop)[:, None] + np.arange(-radius, radius + 1)[None, :]
    index = np.clip(frames, 0, len(target) - 1)
    return np.ascontiguousarray(target[index].transpose(0, 2, 1))


def camera_degrees(values: Sequence[float], num_frames: int) -> np.ndarray:
    """A fixed head angle per frame from the user's list (the original's gen_camera_pose).

    One value holds still; several values are visited in order at a constant angular speed over the clip.
    """
    values = [float(v) for v in values]
    if not values:
        raise InvalidInputError("a head-angle sequence needs at least one value")
    if len(values) == 1 or num_frames < 2:
        return np.full(num_frames, values[0], dtype=np.float32)
    total = sum(abs(b - a) for a, b in zip(values, values[1:]))
    if total == 0:
        return np.full(num_frames, values[0], dtype=np.float32)
    per_frame = total / (num_frames - 1)
    path: list[float] = []
    for a, b in zip(values, values[1:]):
        if a != b:
            path.extend(np.arange(a, b, per_frame if b > a else -per_frame).tolist())
    path = path[:num_frames] or [values[0]]
    path += [path[-1]] * (num_frames - len(path))
    return np.asarray(path, dtype=np.float32)


@dataclass(frozen=True)
class HeadAngles:
    """Optional per-frame head angles in degrees (T,) that replace the predicted ones."""

    yaw: np.ndarray | None = None
    pitch: np.ndarray | None = None
    roll: np.ndarray | None = None

    @classmethod
    def from_lists(cls, num_frames: int, yaw: Sequence[float] | None = None, pitch: Sequence[float] | None = None,
                   roll: Sequence[float] | None = None) -> "HeadAngles":
        def seq(v: Sequence[float] | None) -> np.ndarray | None:
            return None if not v else camera_degrees(v, num_frames)

        return cls(seq(yaw), seq(pitch), seq(roll))


class SourceState(NamedTuple):
    """Everything about the source face that every frame reuses."""

    appearance: Appearance
    kp_canonical: torch.Tensor   # (1, K, 3)
    kp_source: torch.Tensor      # (1, K, 3)
    source_motion: HeadMotion


class RenderedBatch(NamedTuple):
    start: int                   # index of the first frame in the batch
    frames: torch.Tensor         # (n, 3, S, S) float in 0..1
    kp_driving: torch.Tensor     # (n, K, 3)
    head_motion: HeadMotion      # raw mapping outputs
    motion: DenseMotion


class FaceRenderer:
    """The renderer's networks, loaded once: keypoint detector and generator for one size, and the mapping
    network of each preprocess family (crop-like and full-like), loaded on first use."""

    def __init__(self, kp_detector: KPDetector, generator: OcclusionAwareSPADEGenerator, size: int,
                 device: torch.device, locations: CheckpointLocations | None = None,
                 mappings: dict[str, MappingNet] | None = None, precision: Precision = "fp32",
                 compile: bool = False, accel: AccelConfig | None = AccelConfig()) -> None:
        if precision not in ("fp32", *AUTOCAST_DTYPES):
            raise InvalidInputError(f"precision must be fp32, fp16 or bf16; got {precision!r}")
        kp_detector, generator = kp_detector.to(device).eval(), generator.to(device).eval()
        if accel is not None:  # the speed paths, swapped in once (the keypoint detector: memory savings only)
            generator = accelerate(generator, accel)
            kp_detector = accelerate(kp_detector, replace(accel, cpu_kernels=False))
        self.kp_detector = kp_detector
        self.generator = generator
        self.accel = accel
        self.size = size
        self.device = device
        self.locations = locations
        self.precision = precision
        self._mappings: dict[str, MappingNet] = {k: v.to(device).eval() for k, v in (mappings or {}).items()}
        self._lock = threading.Lock()
        # The per-frame network call; optionally compiled (pays off on CUDA for long clips, minutes to build on CPU).
        self._render = torch.compile(self.generator.render, dynamic=False) if compile else self.generator.render

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the generator's per-frame pass (fp16/bf16 where asked; a no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES[self.precision])

    @classmethod
    def from_checkpoint(cls, locations: CheckpointLocations, size: int = 256,
                        device: torch.device | str = "cpu", precision: Precision = "fp32",
                        compile: bool = False, accel: AccelConfig | None = AccelConfig()) -> "FaceRenderer":
        """Load the keypoint detector and generator from SadTalker_V0.0.2_{size}.safetensors.

        `precision` fp16/bf16 runs the generator's per-frame pass under autocast (meant for CUDA; keypoints stay
        fp32); `compile` wraps it in torch.compile; `accel` swaps in the speed paths after loading (see
        `sadtalker.accel.AccelConfig`; None: the plain networks).
        """
        if size not in (256, 512):
            raise InvalidInputError(f"size must be 256 or 512; got {size!r}")
        # Normal tensors even when loaded lazily inside a request's inference mode: the speed paths keep their
        # transformed weights keyed on the weights' version counters, which inference tensors do not have.
        with torch.inference_mode(False):
            kp = load(KPDetector(), "kp_extractor", locations, size)
            gen = load(OcclusionAwareSPADEGenerator(), "generator", locations, size)
        logger.info("face renderer %d loaded from %s", size, locations.sadtalker_file(size).name)
        return cls(kp, gen, size, torch.device(device), locations, precision=precision, compile=compile,
                   accel=accel)

    def mapping(self, preprocess: str) -> MappingNet:
        """The mapping network for this preprocess mode (mapping_00109 for full/extfull, else mapping_00229)."""
        family = Preprocess(preprocess).family
        with self._lock:
            if family not in self._mappings:
                if self.locations is None:
                    raise InvalidInputError(f"no mapping network for the {family} modes was given")
                net = MappingNet(MappingConfig(coeff_nc=73 if family == "full" else 70))
                load(net, f"mapping_{family}", self.locations)
                self._mappings[family] = net.to(self.device).eval()
            return self._mappings[family]

    @torch.inference_mode()
    def prepare_source(self, image: torch.Tensor, source: np.ndarray, preprocess: str) -> SourceState:
        """image (1, 3, S, S) in 0..1, source (C,) coefficients -> the reusable source state."""
        image = image.to(self.device, torch.float32)
        kp_canonical = self.kp_detector(image)                                   # (1, K, 3)
        window = torch.from_numpy(np.repeat(source[:, None], 2 * SEMANTIC_RADIUS + 1, axis=1))[None]
        source_motion = self.mapping(preprocess)(window.to(self.device))         # (1, ...)
        kp_source = transform_keypoints(kp_canonical, source_motion)
        appearance = self.generator.extract_appearance(image)
        return SourceState(appearance, kp_canonical, kp_source, source_motion)

    @torch.inference_mode()
    def render_batches(self, state: SourceState, target: np.ndarray, preprocess: str, batch_size: int = 2,
                       angles: HeadAngles = HeadAngles(), progress: FrameProgress | None = None,
                       ) -> Iterator[RenderedBatch]:
        """Render all frames of `target` (T, C), `batch_size` consecutive frames per forward pass."""
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be at least 1; got {batch_size}")
        mapping = self.mapping(preprocess)
        total = len(target)
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            n = stop - start
            windows = torch.from_numpy(coefficient_windows(target, start, stop)).to(self.device)   # (n, C, 27)
            head = mapping(windows)
            kp_driving = transform_keypoints(
                state.kp_canonical.expand(n, -1, -1), head,
                *(None if a is None else torch.from_numpy(np.asarray(a[start:stop], dtype=np.float32)).to(self.device)
                  for a in (angles.yaw, angles.pitch, angles.roll)))
            with self.autocast():
                out = self._render(state.appearance, state.kp_source.expand(n, -1, -1), kp_driving)
            if progress is not None:
                progress(stop, total)
            yield RenderedBatch(start, out.image.float(), kp_driving, head, out.motion)

    def render(self, crop: np.ndarray, coeffs: np.ndarray, source_coeffs: np.ndarray, preprocess: str = "crop",
               batch_size: int = 2, still_mode: bool = False, expression_scale: float = 1.0,
               angles: HeadAngles = HeadAngles(), progress: FrameProgress | None = None) -> Iterator[np.ndarray]:
        """Face crop + per-frame coefficients (T, 70) -> T frames (size, size, 3) uint8 RGB, in order."""
        target, source = renderer_coefficients(coeffs, source_coeffs, preprocess, expression_scale, still_mode)
        state = self.prepare_source(source_tensor(crop, self.size), source, preprocess)
        for batch in self.render_batches(state, target, preprocess, batch_size, angles, progress):
            frames = batch.frames.permute(0, 2, 3, 1).float().cpu().numpy()       # (n, S, S, 3)
            for frame in frames:
                yield to_uint8(frame)


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """0..1 float -> uint8 with rounding (skimage's img_as_ubyte, without its precision-loss warning)."""
    return np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)
