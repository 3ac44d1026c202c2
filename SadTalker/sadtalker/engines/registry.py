"""Building engines by name, and the choice `auto` makes among the installed ones."""
from __future__ import annotations

import logging
from typing import Literal

from sadtalker.engines.base import Device, Engine
from sadtalker.weights import CheckpointLocations

logger = logging.getLogger(__name__)


def load_engine(name: Literal["sadtalker", "landmark"], locations: CheckpointLocations, device: Device = "auto",
                cpu_fast_paths: bool = True) -> Engine:
    """Build one engine; its networks are loaded here, once, and kept."""
    if name == "landmark":
        from sadtalker.engines.landmark.engine import LandmarkEngine

        return LandmarkEngine()
    from sadtalker.engines.sadtalker.pipeline import SadTalkerPipeline

    return SadTalkerPipeline.from_checkpoint(locations, device=device, cpu_fast_paths=cpu_fast_paths)


def default_engine_name(locations: CheckpointLocations) -> Literal["sadtalker", "landmark"]:
    """SadTalker when its checkpoints are present, else the landmark engine."""
    missing = locations.missing_sadtalker_files()
    if missing:
        logger.info(
            "SadTalker checkpoints not found (%s); using the landmark engine. Get the weights with: %s",
            ", ".join(str(p) for p in missing),
            locations.download_hint,
        )
        return "landmark"
    return "sadtalker"
