"""What every engine is: the Engine protocol, its result type and the progress callback (no engine imports here)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Protocol

from sadtalker.options import GenerationOptions

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]
"""progress(fraction in 0..1, stage description)."""

Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class GenerationResult:
    video_path: Path
    engine: str
    num_frames: int
    audio_seconds: float
    width: int
    height: int
    timings: dict[str, float] = field(default_factory=dict)


class Engine(Protocol):
    name: str

    def generate(
        self,
        image_path: Path,
        audio_path: Path | None,  # None: idle mode or a reference video in 'all' mode (SadTalker engine only)
        options: GenerationOptions,
        output_path: Path,
        progress: ProgressFn | None = None,
    ) -> GenerationResult: ...


def no_progress(fraction: float, stage: str) -> None:
    """Default progress callback."""
