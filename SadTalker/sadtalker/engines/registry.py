"""Building engines by name, and the choice `auto` makes among the installed ones."""
from __future__ import annotations

import logging

import torch

from sadtalker.accel import AccelConfig
from sadtalker.engines.base import Engine
from sadtalker.engines.ditto.weights import DittoCheckpoints
from sadtalker.runtime.device import Precision
from sadtalker.weights import CheckpointLocations

logger = logging.getLogger(__name__)

ENGINES = ("ditto", "sadtalker", "landmark")   # in the order `auto` prefers them


def available_engines(locations: CheckpointLocations) -> list[str]:
    """Engines whose weights are installed (the landmark engine needs none)."""
    names = []
    if not DittoCheckpoints.from_locations(locations).missing_files():
        names.append("ditto")
    if not locations.missing_sadtalker_files():
        names.append("sadtalker")
    names.append("landmark")
    return names


def load_engine(name: str, locations: CheckpointLocations, device: torch.device | str = "auto",
                accel: AccelConfig | None = AccelConfig(), precision: Precision = "fp32") -> Engine:
    """Build one engine; its networks are loaded here, once, and kept."""
    if name == "landmark":
        from sadtalker.engines.landmark.engine import LandmarkEngine

        return LandmarkEngine()
    if name == "ditto":
        from sadtalker.engines.ditto.engine import DittoEngine

        return DittoEngine.from_checkpoint(DittoCheckpoints.from_locations(locations), device=device,
                                           precision=precision, accel=accel)
    if name == "sadtalker":
        from sadtalker.engines.sadtalker.pipeline import SadTalkerPipeline

        return SadTalkerPipeline.from_checkpoint(locations, device=device, accel=accel, precision=precision)
    raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")


def default_engine_name(locations: CheckpointLocations) -> str:
    """The first installed engine in `ENGINES` order; says in the log what is missing for the better ones."""
    available = available_engines(locations)
    if "ditto" not in available:
        ditto = DittoCheckpoints.from_locations(locations)
        logger.info("Ditto files not found (%s); get them with: %s",
                    ", ".join(str(p) for p in ditto.missing_files()), ditto.download_hint)
    if "sadtalker" not in available:
        logger.info("SadTalker checkpoints not found (%s); using the landmark engine. Get the weights with: %s",
                    ", ".join(str(p) for p in locations.missing_sadtalker_files()), locations.download_hint)
    return next(name for name in ENGINES if name in available)
