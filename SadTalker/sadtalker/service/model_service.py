"""The model service's core, independent of Gradio: engines loaded once, input checks, one generation call."""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sadtalker.engines.base import Device, Engine, GenerationResult, ProgressFn
from sadtalker.engines.registry import default_engine_name, load_engine
from sadtalker.errors import InvalidInputError
from sadtalker.io.audio import DEFAULT_MAX_SECONDS, check_audio, load_audio
from sadtalker.options import GenerationOptions, parse_bool
from sadtalker.weights import CheckpointLocations

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    device: Device = "auto"
    max_audio_seconds: float = DEFAULT_MAX_SECONDS
    concurrency: int = 1
    max_queue: int = 16
    results_dir: Path = Path(os.environ.get("TMPDIR", "/tmp")) / "sadtalker-results"
    results_ttl_seconds: float = 3600.0
    cpu_fast_paths: bool = True   # Winograd / FFT convolutions in the renderer on the CPU (~1 GB more memory)
    locations: CheckpointLocations = field(default_factory=CheckpointLocations)

    @classmethod
    def from_env(cls) -> "ServiceConfig":
        env = os.environ
        defaults = cls()
        return cls(
            host=env.get("SADTALKER_HOST", defaults.host),
            port=int(env.get("SADTALKER_PORT", defaults.port)),
            device=env.get("SADTALKER_DEVICE", defaults.device),  # type: ignore[arg-type]
            max_audio_seconds=float(env.get("SADTALKER_MAX_AUDIO_SECONDS", defaults.max_audio_seconds)),
            concurrency=int(env.get("SADTALKER_CONCURRENCY", defaults.concurrency)),
            max_queue=int(env.get("SADTALKER_MAX_QUEUE", defaults.max_queue)),
            results_dir=Path(env.get("SADTALKER_RESULTS", defaults.results_dir)),
            cpu_fast_paths=parse_bool("SADTALKER_CPU_FAST_PATHS", env.get("SADTALKER_CPU_FAST_PATHS", "1")),
            locations=CheckpointLocations.from_env(),
        )


class ModelService:
    """Holds the loaded engines (each built once, on first use) and runs generations."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.default_engine = default_engine_name(config.locations)
        self._engines: dict[str, Engine] = {}
        self._load_lock = threading.Lock()
        self._busy = 0
        self._busy_lock = threading.Lock()
        self.completed = 0
        self.failed = 0
        config.results_dir.mkdir(parents=True, exist_ok=True)

    @property
    def engine_note(self) -> str:
        if self.default_engine == "sadtalker":
            return "Engine: SadTalker (official checkpoints found). The landmark engine is available as a quick draft."
        missing = ", ".join(p.name for p in self.config.locations.missing_sadtalker_files())
        return (
            "Engine: landmark (no downloaded weights needed). SadTalker checkpoints not found "
            f"({missing}); get them with `{self.config.locations.download_hint}` and restart for the SadTalker engine."
        )

    def engine(self, choice: str) -> Engine:
        name = self.default_engine if choice == "auto" else choice
        if name == "sadtalker" and self.default_engine != "sadtalker":
            raise InvalidInputError(
                "the SadTalker engine is not available: its checkpoints are missing "
                f"(get them with {self.config.locations.download_hint}); use engine 'landmark' or 'auto'"
            )
        with self._load_lock:
            if name not in self._engines:
                started = time.perf_counter()
                self._engines[name] = load_engine(name, self.config.locations, self.config.device,  # type: ignore[arg-type]
                                                  cpu_fast_paths=self.config.cpu_fast_paths)
                logger.info("loaded the %s engine in %.1f s", name, time.perf_counter() - started)
            return self._engines[name]

    def warm_up(self) -> None:
        self.engine("auto")

    def generate(self, image_path: Path, audio_path: Path | None, options: GenerationOptions,
                 progress: ProgressFn | None = None) -> GenerationResult:
        """Check the inputs, then run the chosen engine. Raises TalkingHeadError subclasses with user-facing text.

        `audio_path` may be None in idle mode and when a reference video drives everything (ref_info 'all')."""
        self.check_inputs(audio_path, options)
        engine = self.engine(options.engine)
        if needs_sadtalker(options) and engine.name != "sadtalker":
            raise InvalidInputError("idle mode and reference videos need the SadTalker engine (its checkpoints are "
                                    f"missing; get them with {self.config.locations.download_hint})")
        if audio_path is not None and (options.idle_mode or (options.ref_video and options.ref_info == "all")):
            audio_path = None  # the pipeline ignores it in these modes
        self._sweep_results()
        output = self.config.results_dir / f"{uuid.uuid4().hex}.mp4"
        with self._busy_lock:
            self._busy += 1
        started = time.perf_counter()
        try:
            audio = Path(audio_path) if audio_path is not None else None
            result = engine.generate(Path(image_path), audio, options, output, progress)
        except Exception:
            self.failed += 1
            raise
        finally:
            with self._busy_lock:
                self._busy -= 1
        self.completed += 1
        logger.info("generated %s with %s: %d frames, %.2f s audio, %.1f s", output.name, result.engine,
                    result.num_frames, result.audio_seconds, time.perf_counter() - started)
        return result

    def check_inputs(self, audio_path: Path | None, options: GenerationOptions) -> None:
        """The audio (or what replaces it) and the reference videos, before any engine is chosen."""
        for what, value in (("reference video", options.ref_video), ("blink reference video",
                                                                     options.ref_eyeblink_video)):
            if value and not Path(value).is_file():
                raise InvalidInputError(f"{what} not found: {Path(value).name}")
        if options.ref_video and options.ref_info == "all":
            return  # the reference video's own motion and sound
        if options.idle_mode:
            if options.idle_seconds > self.config.max_audio_seconds:
                raise InvalidInputError(f"idle_seconds is too long ({options.idle_seconds:g} s; the limit is "
                                        f"{self.config.max_audio_seconds:g} s)")
            return
        if audio_path is None:
            raise InvalidInputError("driven_audio is required: upload a voice clip (or use idle mode)")
        check_audio(load_audio(Path(audio_path)), max_seconds=self.config.max_audio_seconds)

    def health(self) -> dict[str, Any]:
        import torch

        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return {
            "status": "ok",
            "engine": self.default_engine,
            "engines_loaded": sorted(self._engines),
            "checkpoints_loaded": "sadtalker" in self._engines,
            "device": device,
            "busy": self._busy > 0,
            "running": self._busy,
            "completed": self.completed,
            "failed": self.failed,
        }

    def _sweep_results(self) -> None:
        """Results are handed to Gradio's cache on return; ours are removed after a while."""
        cutoff = time.time() - self.config.results_ttl_seconds
        for path in self.config.results_dir.glob("*.mp4"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass


def needs_sadtalker(options: GenerationOptions) -> bool:
    """Options only the SadTalker engine implements."""
    return bool(options.idle_mode or options.ref_video or options.ref_eyeblink_video)
