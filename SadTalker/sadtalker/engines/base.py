"""What every engine is: the Engine protocol, its inputs and result types and the progress callback (no engine
imports here, so engines, the registry and the service never import in a circle)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from sadtalker.options import GenerationOptions

ProgressFn = Callable[[float, str], None]
"""progress(fraction in 0..1, stage description)."""


def no_progress(fraction: float, stage: str) -> None:
    """Default progress callback."""


@dataclass(frozen=True)
class GenerationInputs:
    """The request's media, decoded once and checked against the limits (`sadtalker.io.inputs.read_inputs`)."""

    image: np.ndarray                       # (H, W, 3) uint8 RGB, EXIF orientation applied
    audio: np.ndarray | None                # (N,) float32 mono 16 kHz; None in idle mode
    ref_video: Path | None = None           # reference video: pose / blinks / everything (options.ref_info)
    ref_eyeblink_video: Path | None = None  # a second reference for the blinks only
    image_name: str = "portrait"            # for messages and logs

    @property
    def audio_seconds(self) -> float:
        return 0.0 if self.audio is None else len(self.audio) / 16000


@dataclass(frozen=True)
class GenerationResult:
    """What ran and what it made; `predict` returns it (as `info()`) beside the video."""

    video_path: Path
    engine: str
    num_frames: int
    audio_seconds: float
    width: int
    height: int
    timings: dict[str, float] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        return {"engine": self.engine, "frames": self.num_frames, "audio_seconds": round(self.audio_seconds, 3),
                "width": self.width, "height": self.height,
                "timings": {k: round(v, 3) for k, v in self.timings.items()}}


class Engine(Protocol):
    """portrait + speech -> talking-head mp4 at `output_path`."""

    name: str

    def generate(self, inputs: GenerationInputs, options: GenerationOptions, output_path: Path,
                 progress: ProgressFn | None = None) -> GenerationResult: ...
