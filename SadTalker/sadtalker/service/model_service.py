"""The model service's core, independent of Gradio: engines loaded once, inputs read once, one generation call.

Errors come out in two kinds: `InvalidInputError` (the request cannot work: final) and `ServiceError` (the service
could not do it now: out of memory, an internal fault; the front may retry elsewhere). A CUDA out-of-memory
becomes an `OutOfMemoryError` naming the size, the batch and a smaller setting, after the cache is emptied.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from sadtalker.engines.base import Engine, GenerationResult, ProgressFn
from sadtalker.engines.ditto.weights import DittoCheckpoints
from sadtalker.engines.registry import ENGINES, available_engines, default_engine_name, load_engine
from sadtalker.errors import CancelledError, InvalidInputError, OutOfMemoryError, ServiceError, TalkingHeadError
from sadtalker.io.inputs import read_inputs
from sadtalker.options import GenerationOptions
from sadtalker.runtime.device import resolve_device
from sadtalker.service.settings import ServiceSettings

logger = logging.getLogger(__name__)

# Frames per renderer pass that fit, per face size: on the CPU the passes are compute-bound, so larger batches
# only cost memory; on CUDA the rule scales with the device's memory (~1.2 GB per 256 frame, ~4.8 GB per 512).
CPU_MAX_BATCH = {256: 8, 512: 4}
CUDA_BYTES_PER_FRAME = {256: 1.2e9, 512: 4.8e9}


def max_batch_size(size: int, device: torch.device) -> int:
    """The largest batch this device takes at this face size (a rule, not only the UI slider's range)."""
    if device.type != "cuda":
        return CPU_MAX_BATCH.get(size, 4)
    total = torch.cuda.get_device_properties(device).total_memory
    return int(max(1, min(32, 0.8 * total // CUDA_BYTES_PER_FRAME.get(size, 4.8e9))))


def needs_sadtalker(options: GenerationOptions, has_refs: bool) -> bool:
    """What only the SadTalker engine implements."""
    return bool(options.enhancer or has_refs or options.input_yaw or options.input_pitch or options.input_roll)


class ModelService:
    """Holds the loaded engines (each built once, on first use) and runs generations, one at a time per engine
    (`SADTALKER_CONCURRENCY` > 1 lets requests for different engines, or input reading, overlap; the health
    numbers count the ones waiting for their engine as queued, not running)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.available = available_engines(settings.locations)
        self.default_engine = default_engine_name(settings.locations)
        self._engines: dict[str, Engine] = {}
        self._engine_locks: dict[str, threading.Lock] = {}
        self._load_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.running = 0
        self.waiting = 0
        self.completed = 0
        self.failed = 0
        self.last_engine: str | None = None
        settings.results_dir.mkdir(parents=True, exist_ok=True)

    @property
    def engine_note(self) -> str:
        ditto = DittoCheckpoints.from_locations(self.settings.locations)
        others = [name for name in ENGINES if name in self.available and name != self.default_engine]
        also = f" Also available: {', '.join(others)}." if others else ""
        if self.default_engine == "ditto":
            return f"Engine: Ditto (its official files were found).{also}"
        ditto_hint = (f" Ditto files not found ({', '.join(p.name for p in ditto.missing_files()[:3])}"
                      f"{' ...' if len(ditto.missing_files()) > 3 else ''}); get them with `{ditto.download_hint}`.")
        if self.default_engine == "sadtalker":
            return ("Engine: SadTalker (official checkpoints found). The landmark engine is available as a quick "
                    "draft." + ditto_hint)
        missing = ", ".join(p.name for p in self.settings.locations.missing_sadtalker_files())
        return (
            "Engine: landmark (no downloaded weights needed). SadTalker checkpoints not found "
            f"({missing}); get them with `{self.settings.locations.download_hint}` and restart for the SadTalker "
            "engine." + ditto_hint)

    def engine(self, choice: str) -> Engine:
        name = self.default_engine if choice == "auto" else choice
        if name not in self.available:
            hint = (DittoCheckpoints.from_locations(self.settings.locations).download_hint if name == "ditto"
                    else self.settings.locations.download_hint)
            raise InvalidInputError(
                f"the {name} engine is not available: its checkpoints are missing (get them with {hint}); use "
                "engine 'landmark' or 'auto'")
        with self._load_lock:
            if name not in self._engines:
                started = time.perf_counter()
                self._engines[name] = load_engine(name, self.settings.locations, self.device,
                                                  accel=self.settings.accel, precision=self.settings.precision)
                self._engine_locks[name] = threading.Lock()
                logger.info("loaded the %s engine in %.1f s", name, time.perf_counter() - started)
            return self._engines[name]

    def install_engine(self, name: str, engine: Engine, default: bool = False) -> None:
        """Use an already built engine under `name` (tests, embedding)."""
        with self._load_lock:
            self._engines[name] = engine
            self._engine_locks[name] = threading.Lock()
            if name not in self.available:
                self.available.append(name)
            if default:
                self.default_engine = name

    def warm_up(self) -> None:
        self.engine("auto")

    def generate(self, image: Path, audio: Path | None, options: GenerationOptions,
                 ref_video: Path | None = None, progress: ProgressFn | None = None,
                 output: Path | None = None) -> GenerationResult:
        """Read and check the inputs, then run the chosen engine. Raises TalkingHeadError subclasses with
        user-facing text: InvalidInputError for the request, ServiceError for the service.

        `output`: where the video goes (default: a new file in the results folder); a path ending in `.fmp4` is
        written as fragmented MP4, playable while it grows (see `service/streaming.py`)."""
        inputs = read_inputs(image, audio, options, self.settings.limits, ref_video=ref_video)
        name = self.default_engine if options.engine == "auto" else options.engine
        if options.idle_mode and name not in ("sadtalker", "landmark"):
            raise InvalidInputError(f"idle mode is not available with the {name} engine")
        if needs_sadtalker(options, inputs.ref_video is not None) and name != "sadtalker":
            raise InvalidInputError(
                "the enhancer, reference videos and fixed head angles need the SadTalker engine"
                + ("" if "sadtalker" in self.available else
                   f" (its checkpoints are missing; get them with {self.settings.locations.download_hint})"))
        cap = max_batch_size(512 if name == "ditto" else options.size, self.device)  # Ditto renders at 512
        if options.batch_size > cap:
            logger.info("batch_size %d capped to %d for size %d on %s", options.batch_size, cap, options.size,
                        self.device)
            options = options.replace(batch_size=cap)
        engine = self.engine(name)
        self._sweep_results()
        output = output or self.settings.results_dir / f"{uuid.uuid4().hex}.mp4"
        started = time.perf_counter()
        with self._turn(name):
            try:
                result = engine.generate(inputs, options, output, progress)
            except torch.cuda.OutOfMemoryError as exc:
                self.failed += 1
                raise self._out_of_memory(options, cap) from exc
            except CancelledError:  # the caller went away; not a failure of the service
                raise
            except TalkingHeadError:
                self.failed += 1
                raise
            except Exception as exc:  # an internal fault: not the user's input
                self.failed += 1
                logger.exception("generation failed")
                raise ServiceError(f"the model service failed on this request ({type(exc).__name__}: {exc})") from exc
        self.completed += 1
        self.last_engine = result.engine
        logger.info("generated %s with %s: %d frames, %.2f s audio, %.1f s", output.name, result.engine,
                    result.num_frames, result.audio_seconds, time.perf_counter() - started)
        return result

    @contextmanager
    def _turn(self, name: str) -> Iterator[None]:
        """One generation at a time per engine; counted as waiting until its turn, then running."""
        with self._count_lock:
            self.waiting += 1
        lock = self._engine_locks[name]
        try:
            lock.acquire()
        finally:
            with self._count_lock:
                self.waiting -= 1
        with self._count_lock:
            self.running += 1
        try:
            yield
        finally:
            with self._count_lock:
                self.running -= 1
            lock.release()

    def _out_of_memory(self, options: GenerationOptions, cap: int) -> OutOfMemoryError:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        smaller = max(1, options.batch_size // 2)
        hint = (f"batch_size {smaller}" if options.batch_size > 1 else
                ("size 256" if options.size == 512 else "a shorter clip or another device"))
        logger.warning("out of memory at size %d, batch %d on %s", options.size, options.batch_size, self.device)
        return OutOfMemoryError(f"the {self.device.type} device ran out of memory at size {options.size} with "
                                f"batch_size {options.batch_size}; try {hint}")

    def health(self) -> dict[str, Any]:
        """Liveness that touches the device (a GPU in a sticky error state fails here), and the request counts."""
        probe = torch.ones(4, device=self.device)
        if float((probe * 2).sum().item()) != 8.0:
            raise ServiceError(f"the {self.device} device computed a wrong result")
        return {
            "status": "ok",
            "engine": self.default_engine,          # what `auto` runs
            "last_engine": self.last_engine,        # the engine of the last finished generation
            "engines_available": sorted(self.available),
            "engines_loaded": sorted(self._engines),
            "checkpoints_loaded": "sadtalker" in self._engines,
            "device": str(self.device),
            "precision": self.settings.precision,
            "busy": self.running > 0,
            "running": self.running,
            "queued": self.waiting,
            "completed": self.completed,
            "failed": self.failed,
        }

    def _sweep_results(self) -> None:
        """Results are handed to Gradio's cache on return; ours are removed after a while."""
        cutoff = time.time() - self.settings.results_ttl_seconds
        for path in [*self.settings.results_dir.glob("*.mp4"), *self.settings.results_dir.glob("*.fmp4")]:
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass
