"""Small C kernels for the CPU fast paths (accel/native/*.c), built once with the system C compiler, loaded with ctypes.

Why C: the Winograd tile transforms are memory-bound, and in pure PyTorch they take several passes over large
temporaries (gather, transform, transform, scatter) that cost as much as the GEMMs themselves. One fused C pass each
way halves the renderer's time on those layers. No torch headers are needed, so the build takes about a second;
the library is cached per source, flags and compiler in a cache folder (the service's SADTALKER_CACHE_DIR, default
~/.cache/sadtalker). Without a working compiler (or switched off) the pure PyTorch path runs instead: same results
up to float rounding.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SOURCES = (Path(__file__).parent / "native" / "winograd_tiles.c",)
BASE_FLAGS = ("-O3", "-std=gnu11", "-shared", "-fPIC", "-fno-math-errno", "-fopenmp")

_c_long_p = ctypes.POINTER(ctypes.c_long)
_SIGNATURES = {
    "winograd_input_tiles": [ctypes.c_void_p, _c_long_p] + [ctypes.c_long] * 8 + [ctypes.c_void_p] * 2 + [ctypes.c_int],
    "winograd_output_tiles": [ctypes.c_void_p] + [ctypes.c_long] * 7 + [ctypes.c_void_p] * 3 + [ctypes.c_int],
}


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/sadtalker, else ~/.cache/sadtalker."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sadtalker"


def compile_flags() -> tuple[str, ...]:
    """Base flags plus AVX2/FMA code when this CPU has them (as torch's own dispatch decides)."""
    simd = ("-mavx2", "-mfma") if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") else ()
    return BASE_FLAGS + simd


def build(compiler: str | None = None, folder: Path | None = None) -> Path:
    """Compile the kernels into a shared library (once per source, flags and compiler) and return its path.
    Raises OSError / subprocess.CalledProcessError when there is no working compiler."""
    compiler = compiler or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "cc"
    flags = compile_flags()
    digest = hashlib.sha256()
    for part in (compiler, *flags, *(p.read_text() for p in SOURCES)):
        digest.update(part.encode() + b"\0")
    folder = folder or default_cache_dir()
    target = folder / f"sadtalker_native_{digest.hexdigest()[:16]}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:   # built aside, then renamed: safe with parallel builds
        partial = Path(tmp) / target.name
        subprocess.run([compiler, *flags, "-o", str(partial), *map(str, SOURCES)], check=True,
                       capture_output=True, text=True, timeout=120)
        os.replace(partial, target)
    logger.info("built native kernels %s", target)
    return target


def load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    for name, args in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, None
    return lib


@functools.lru_cache(maxsize=None)
def library(folder: Path | None = None) -> ctypes.CDLL | None:
    """The loaded kernels (built into `folder` on first use), or None (said once in the log) when they cannot be
    built here."""
    try:
        return load(build(folder=folder))
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        logger.warning("native kernels unavailable (%s); the CPU fast paths use pure PyTorch transforms",
                       detail.strip().splitlines()[-1] if detail.strip() else type(exc).__name__)
        return None


@dataclass(frozen=True)
class NativeKernels:
    """Whether the fast layers use the C kernels, and where they are built; the library loads on first use."""

    enabled: bool = True
    cache_dir: Path | None = None

    def library(self) -> ctypes.CDLL | None:
        return library(self.cache_dir) if self.enabled else None


def _ptr(t: torch.Tensor | None) -> ctypes.c_void_p | None:
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def input_tiles(lib: ctypes.CDLL, x: torch.Tensor, t0: int, rows: int, tile_cols: int, taps: int,
                bt: torch.Tensor, v: torch.Tensor) -> None:
    """v (C, 36, DP * rows * tile_cols) = B^T d B of the 6x6 tiles of x (C, D, H, W) for tile rows t0 .. t0 + rows."""
    c, d, h, w = x.shape
    lib.winograd_input_tiles(_ptr(x), (ctypes.c_long * 4)(*x.stride()), c, d, h, w, t0, rows, tile_cols, taps,
                             _ptr(bt), _ptr(v), torch.get_num_threads())


def output_tiles(lib: ctypes.CDLL, mm: torch.Tensor, t0: int, rows: int, tile_cols: int, at: torch.Tensor,
                 bias: torch.Tensor | None, out: torch.Tensor) -> None:
    """out (O, D, H, W) rows of tile rows t0 .. t0 + rows = A^T m A + bias of mm (O, 36, D * rows * tile_cols)."""
    o, d, h, w = out.shape
    lib.winograd_output_tiles(_ptr(mm), o, d, h, w, t0, rows, tile_cols, _ptr(at), _ptr(bias), _ptr(out),
                              torch.get_num_threads())
