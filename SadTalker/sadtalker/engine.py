"""The engine interface the service calls, and the choice between the SadTalker engine and the landmark engine."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Protocol

from .checkpoints import CheckpointLocations
from .errors import CheckpointError
from .options import GenerationOptions

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


def load_engine(name: Literal["sadtalker", "landmark"], locations: CheckpointLocations, device: Device = "auto",
                cpu_fast_paths: bool = True) -> Engine:
    """Build one engine; its networks are loaded here, once, and kept."""
    if name == "landmark":
        from .landmark.engine import LandmarkEngine

        return LandmarkEngine()
    from .pipeline import SadTalkerPipeline

    return SadTalkerPipeline.from_checkpoint(locations, device=device, cpu_fast_paths=cpu_fast_paths)


def default_engine_name(locations: CheckpointLocations) -> Literal["sadtalker", "landmark"]:
    """SadTalker when its checkpoints are present (and its implementation is available), else the landmark engine."""
    missing = locations.missing_sadtalker_files()
    if missing:
        logger.info(
            "SadTalker checkpoints not found (%s); using the landmark engine. Get the weights with: %s",
            ", ".join(str(p) for p in missing),
            locations.download_hint,
        )
        return "landmark"
    try:
        from . import pipeline  # noqa: F401
    except ImportError as exc:  # the SadTalker engine is not part of this build yet
        raise CheckpointError(f"SadTalker checkpoints are present but the SadTalker engine cannot be loaded: {exc}") from exc
    return "sadtalker"
