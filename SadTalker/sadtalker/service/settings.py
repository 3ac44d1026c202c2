"""Every setting of the model service, read once from the environment into one frozen dataclass.

The README's configuration table lists each variable; nothing else in the package reads the environment for its
own settings (the standard CC and XDG_CACHE_HOME aside). Limits shared with the web front have the same names
there (MAX_AUDIO_SECONDS, MAX_UPLOAD_MB, MAX_IMAGE_SIDE, MAX_IMAGE_PIXELS).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Mapping, TypeVar, get_args

from sadtalker.accel import AccelConfig
from sadtalker.errors import InvalidInputError
from sadtalker.io.limits import InputLimits
from sadtalker.options import parse_bool
from sadtalker.weights import CheckpointLocations

Precision = Literal["fp32", "tf32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
T = TypeVar("T")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sadtalker"


@dataclass(frozen=True)
class ServiceSettings:
    """The model service's settings (defaults: one CPU process on loopback, the repository's checkpoint folders)."""

    host: str = "127.0.0.1"
    port: int = 7860
    device: str = "auto"                 # auto, cpu, cuda, cuda:N
    precision: Precision = "fp32"        # fp32 (exact), tf32, fp16, bf16 (CUDA)
    concurrency: int = 1                 # generations at once (each holds its own activations)
    max_queue: int = 16                  # requests waiting in Gradio's queue before new ones are refused
    live_sessions: int = 8               # live-mode WebSocket sessions at once (service/live.py)
    results_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "sadtalker-results")
    results_ttl_seconds: float = 3600.0
    cpu_fast_paths: bool = True          # the renderer's CPU speed paths (sadtalker.accel; ~1 GB more memory)
    native_kernels: bool = True          # their C tile transforms (needs a C compiler)
    malloc_tuning: bool = True           # glibc malloc tunables for the CPU renderer (runtime/malloc_tuning.py)
    cache_dir: Path = field(default_factory=default_cache_dir)
    limits: InputLimits = field(default_factory=InputLimits)
    locations: CheckpointLocations = field(default_factory=CheckpointLocations)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InvalidInputError(f"SADTALKER_PRECISION must be one of {', '.join(PRECISIONS)}; "
                                    f"got {self.precision!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise InvalidInputError(f"SADTALKER_DEVICE must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        for name, value, low in (("SADTALKER_CONCURRENCY", self.concurrency, 1), ("SADTALKER_MAX_QUEUE",
                                                                                  self.max_queue, 1),
                                 ("SADTALKER_PORT", self.port, 1),
                                 ("SADTALKER_LIVE_SESSIONS", self.live_sessions, 0)):
            if value < low:
                raise InvalidInputError(f"{name} must be at least {low}; got {value}")

    @property
    def accel(self) -> AccelConfig:
        return AccelConfig(cpu_kernels=self.cpu_fast_paths, native_kernels=self.native_kernels,
                           cache_dir=self.cache_dir)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ServiceSettings":
        env = os.environ if environ is None else environ
        d = cls()

        def get(name: str, parse: Callable[[str], T], default: T) -> T:
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                return default
            try:
                return parse(raw.strip())
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"{name} has an invalid value {raw!r} ({exc})") from None

        def flag(name: str, default: bool) -> bool:
            return get(name, lambda raw: parse_bool(name, raw), default)

        return cls(
            host=get("SADTALKER_HOST", str, d.host),
            port=get("SADTALKER_PORT", int, d.port),
            device=get("SADTALKER_DEVICE", str, d.device),
            precision=get("SADTALKER_PRECISION", str, d.precision),  # type: ignore[arg-type]
            concurrency=get("SADTALKER_CONCURRENCY", int, d.concurrency),
            max_queue=get("SADTALKER_MAX_QUEUE", int, d.max_queue),
            live_sessions=get("SADTALKER_LIVE_SESSIONS", int, d.live_sessions),
            results_dir=get("SADTALKER_RESULTS", Path, d.results_dir),
            cpu_fast_paths=flag("SADTALKER_CPU_FAST_PATHS", d.cpu_fast_paths),
            native_kernels=flag("SADTALKER_NATIVE_KERNELS", d.native_kernels),
            malloc_tuning=flag("SADTALKER_MALLOC_TUNING", d.malloc_tuning),
            cache_dir=get("SADTALKER_CACHE_DIR", Path, d.cache_dir),
            limits=InputLimits.from_env(env),
            locations=CheckpointLocations(
                checkpoint_dir=get("SADTALKER_CHECKPOINTS", Path, d.locations.checkpoint_dir),
                gfpgan_dir=get("SADTALKER_GFPGAN_WEIGHTS", Path, d.locations.gfpgan_dir),
                ditto_dir=get("SADTALKER_DITTO_CHECKPOINTS", Path, d.locations.ditto_dir)),
        )
