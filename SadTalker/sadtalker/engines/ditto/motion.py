"""Audio features -> driving motion for every frame (the original's Audio2Motion + StreamSDK._audio2motion_offline).

The LMDM makes 80-frame clips every 70 frames; each clip starts from the last settled frame of the previous
one, its first 10 frames are cross-faded into the sequence, and head pose / translation / scale (not expression)
are smoothed over 3 frames, once per clip and again over the whole cut sequence.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sadtalker.engines.ditto.conditions import DEFAULT_EMOTION, ConditionBuilder, Emotion, SourceConditions
from sadtalker.engines.ditto.sampler import DDIMSampler, draw_initial_noise, draw_step_noise
from sadtalker.errors import InvalidInputError
from sadtalker.engines.ditto.weights import load_lmdm
from sadtalker.nets.ditto.lmdm import LMDM, LMDMConfig

logger = logging.getLogger(__name__)

# The 265 motion values per frame: (key, size). `scale` is stored minus 1.
MOTION_LAYOUT = (("scale", 1), ("pitch", 66), ("yaw", 66), ("roll", 66), ("t", 3), ("exp", 63))
MOTION_DIM = sum(size for _, size in MOTION_LAYOUT)  # 265
SMOOTHED_DIMS = 202  # scale, pitch, yaw, roll, t: expression is never smoothed


@dataclass(frozen=True)
class MotionOptions:
    """Sampling and clip options (the original's StreamSDK.setup defaults)."""

    steps: int = 50  # DDIM steps per clip
    emotion: Emotion = DEFAULT_EMOTION
    overlap: int = 10  # frames shared by consecutive clips (overlap_v2)
    smooth_window: int = 3  # smo_k_d
    batch_guidance: bool | None = None  # see DDIMSampler: batched on CUDA only


def motion_vector(info: Mapping[str, np.ndarray]) -> np.ndarray:
    """LivePortrait motion dict (scale, pitch/yaw/roll bins, t, exp; `kp` ignored) -> (265,) float32."""
    parts = []
    for key, size in MOTION_LAYOUT:
        value = np.asarray(info[key], dtype=np.float32).reshape(-1)
        if value.size != size:
            raise InvalidInputError(f"source motion {key!r} must hold {size} values, got {value.size}")
        parts.append(value - 1 if key == "scale" else value)
    return np.concatenate(parts)


@dataclass(frozen=True)
class DrivingMotion:
    """Per-frame driving motion, frames first: scale (N, 1), pitch/yaw/roll (N, 66) bins, t (N, 3), exp (N, 63)."""

    scale: np.ndarray
    pitch: np.ndarray
    yaw: np.ndarray
    roll: np.ndarray
    t: np.ndarray
    exp: np.ndarray

    @classmethod
    def from_rows(cls, rows: np.ndarray) -> DrivingMotion:
        """(N, 265) motion rows -> fields (scale + 1 restored)."""
        fields, start = {}, 0
        for key, size in MOTION_LAYOUT:
            value = rows[:, start : start + size]
            fields[key] = value + 1 if key == "scale" else value.copy()
            start += size
        return cls(**fields)

    def __len__(self) -> int:
        return len(self.scale)

    def frame(self, i: int) -> dict[str, np.ndarray]:
        """Frame i as the original's per-frame dict of (1, size) arrays."""
        return {key: getattr(self, key)[i : i + 1] for key, _ in MOTION_LAYOUT}


def smooth(seq: torch.Tensor, start: int, end: int, window: int = 3) -> None:
    """In place: rows start..end-1 of seq (L, 265), dims :202, become the centred mean over `window` rows of the
    values before this call (window clipped at the ends of seq)."""
    if window <= 1 or end <= start:
        return
    half, n = window // 2, seq.shape[0]
    lo, hi = max(0, start - half), min(n, end + half)
    before = seq[lo:hi, :SMOOTHED_DIMS].clone()  # (hi-lo, 202): the values all windows read
    rows = torch.arange(start, end)
    first, stop = (rows - half).clamp(min=0), (rows + half + 1).clamp(max=n)  # window [first, stop) per row
    total = before[first - lo]
    for offset in range(1, 2 * half + 1):  # summed left to right, as numpy's mean over that axis
        j = first + offset
        total = torch.where((j < stop)[:, None], total + before[j.clamp(max=hi - 1) - lo], total)
    seq[start:end, :SMOOTHED_DIMS] = total / (stop - first).to(seq.dtype)[:, None]


class MotionSequence:
    """Clips fused into one sequence in a preallocated buffer (capacity 80 + 70 per further clip)."""

    def __init__(self, num_clips: int, seq_frames: int = 80, overlap: int = 10, smooth_window: int = 3) -> None:
        if not 0 < overlap < seq_frames:
            raise InvalidInputError(f"clip overlap must be in 1..{seq_frames - 1}, got {overlap}")
        self.seq_frames, self.overlap, self.smooth_window = seq_frames, overlap, smooth_window
        self.valid = seq_frames - overlap  # new frames per clip
        self.alpha = torch.arange(overlap, dtype=torch.float32)[:, None] / overlap  # (overlap, 1) cross-fade
        self.buffer = torch.zeros(seq_frames + self.valid * (num_clips - 1), MOTION_DIM)
        self.length = 0

    @property
    def rows(self) -> torch.Tensor:
        return self.buffer[: self.length]

    def add(self, clip: torch.Tensor) -> None:
        """clip (seq_frames, 265): fuse it in, then smooth the joined range."""
        start, end = self.fuse(clip)
        smooth(self.rows, start, end, self.smooth_window)

    def fuse(self, clip: torch.Tensor) -> tuple[int, int]:
        """The first clip is taken whole; a later one is cross-faded over the last `overlap` rows (alpha =
        0, 0.1, ... 0.9 for the new clip) and its remaining rows appended. Returns the row range to smooth."""
        if self.length == 0:
            self.buffer[: self.seq_frames] = clip
            self.length = self.seq_frames
            return 0, self.length
        end = self.length
        tail = self.buffer[end - self.overlap : end]
        tail.copy_(tail * (1 - self.alpha) + clip[: self.overlap] * self.alpha)
        self.buffer[end : end + self.valid] = clip[self.overlap :]
        self.length = end + self.valid
        return end - self.overlap, end + 1

    def condition_frame(self) -> torch.Tensor:
        """(1, 265) the frame the next clip continues from: the last one no later clip will fade."""
        return self.buffer[self.length - self.overlap - 1][None].clone()

    def finish(self, num_frames: int) -> torch.Tensor:
        """(num_frames, 265): cut to the audio's length and smoothed once more as a whole."""
        out = self.buffer[:num_frames].clone()
        smooth(out, 0, num_frames, self.smooth_window)
        return out


Progress = Callable[[float, str], None]


class AudioToMotion:
    """The LMDM and its sampling loop; load once, call `generate` per request."""

    def __init__(self, lmdm: LMDM) -> None:
        self.lmdm = lmdm.eval()

    @classmethod
    def from_checkpoint(cls, path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                        config: LMDMConfig = LMDMConfig()) -> AudioToMotion:
        """`path`: lmdm_v0.4_hubert.pth. fp16/bf16 only make sense on CUDA (sampling itself stays float32)."""
        if dtype != torch.float32 and torch.device(device).type != "cuda":
            raise InvalidInputError(f"{dtype} is only supported on CUDA; use float32 on {device}")
        return cls(load_lmdm(path, config, device, dtype))

    @property
    def config(self) -> LMDMConfig:
        return self.lmdm.config

    def num_clips(self, num_frames: int, overlap: int = 10) -> int:
        """Clips start every seq_frames - overlap (70) frames while frames remain."""
        if not 0 < overlap < self.config.seq_frames:
            raise InvalidInputError(f"clip overlap must be in 1..{self.config.seq_frames - 1}, got {overlap}")
        return math.ceil(num_frames / (self.config.seq_frames - overlap))

    def draw_noise(self, num_frames: int, steps: int, generator: torch.Generator | None,
                   overlap: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """(step noise (steps-1, 1, 80, 265), x_T (clips, 1, 80, 265)) in the original's order of draws."""
        shape = (1, self.config.seq_frames, self.config.motion_dim)
        step_noise = draw_step_noise(steps, shape, generator)
        x_T = torch.stack([draw_initial_noise(shape, generator) for _ in range(self.num_clips(num_frames, overlap))])
        return step_noise, x_T

    @torch.inference_mode()
    def generate(self, audio_features: np.ndarray, source_motion: Mapping[str, np.ndarray],
                 source: SourceConditions, options: MotionOptions = MotionOptions(), *,
                 generator: torch.Generator | None = None, step_noise: torch.Tensor | None = None,
                 x_T: torch.Tensor | None = None, progress: Progress | None = None) -> DrivingMotion:
        """Driving motion for every audio frame.

        Args:
            audio_features: (N, 1024) HuBERT features (audio_features.hubert_features).
            source_motion: the source's motion dict (scale, pitch, yaw, roll, t, exp).
            source: eye state and keypoints of the source.
            generator: CPU generator for the noise (a seed reproduces a video); ignored where noise is given.
            step_noise, x_T: explicit noise as draw_noise returns it (parity tests).
        Returns:
            DrivingMotion with N frames.
        """
        num_frames = len(audio_features)
        if num_frames == 0:
            raise InvalidInputError("no audio frames to animate")
        seq_frames = self.config.seq_frames
        sampler = DDIMSampler(self.lmdm, options.steps, batch_guidance=options.batch_guidance)
        num_clips = self.num_clips(num_frames, options.overlap)
        if step_noise is None or x_T is None:
            drawn_steps, drawn_x = self.draw_noise(num_frames, options.steps, generator, options.overlap)
            step_noise = drawn_steps if step_noise is None else step_noise
            x_T = drawn_x if x_T is None else x_T
        if len(x_T) < num_clips:
            raise InvalidInputError(f"{len(x_T)} initial noises given for {num_clips} clips")
        conditions = ConditionBuilder(source, options.emotion)
        sequence = MotionSequence(num_clips, seq_frames, options.overlap, options.smooth_window)
        cond_frame = torch.from_numpy(motion_vector(source_motion))[None]  # (1, 265)
        for k in range(num_clips):
            start = k * sequence.valid
            rows = conditions(audio_features[start : start + seq_frames], start)  # (<=80, 1103)
            if len(rows) < seq_frames:  # last clip: repeat its last row
                rows = np.concatenate([rows, np.repeat(rows[-1:], seq_frames - len(rows), axis=0)])
            clip = sampler.sample(cond_frame, torch.from_numpy(rows)[None], x_T[k], step_noise)  # (1, 80, 265)
            sequence.add(clip[0].float().cpu())
            cond_frame = sequence.condition_frame()
            logger.debug("motion clip %d/%d done", k + 1, num_clips)
            if progress is not None:
                progress((k + 1) / num_clips, "motion")
        return DrivingMotion.from_rows(sequence.finish(num_frames).numpy())
